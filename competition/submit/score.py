"""Scoring a submission CSV against ground-truth annotations, by the competition's rules.

The ground truth is rendered like training masks (same class table, overlap policy, mask cache), resized to
256 x 256 with OpenCV's INTER_NEAREST rule, and compared with the CSV's masks by competition.submit.metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError
from competition.core.geometry import SUBMISSION_SIZE, resize_nearest
from competition.data import ClassTable, DataRoot, build_class_table, load_coco, mask_store
from competition.submit.check import read_submission
from competition.submit.metric import MeanIoU, Scores


def score_submission(
    csv: Path, gt: Path, data: str | None, cfg: dict[str, Any], log=print, block: int = 64
) -> tuple[Scores, ClassTable]:
    """Per-image mIoU, dataset mIoU, per-class IoU and pixel accuracy of `csv` against `gt`.

    Rows are expected in test.json order when `data` is given, else in the ground truth's image order; the
    class table comes from the dataset's categories when given, else from the ground truth's.
    """
    truth = load_coco(gt)
    root = DataRoot(Path(data), check_images=False) if data else None
    categories = root.categories if root else truth.categories
    classes = build_class_table(categories, cfg["classes"], cfg["ignore_index"])
    images = root.coco("test").images if root else truth.images
    by_name = {im.file_name: im for im in truth.images}
    missing = [im.file_name for im in images if im.file_name not in by_name]
    if missing:
        raise UserError(f"{gt}: no ground truth for test image {missing[0]} ({len(missing)} missing)")
    predictions = read_submission(csv, [im.file_name for im in images], classes.num_classes)
    masks = mask_store(truth, classes, cfg["overlap"], log=log)
    metric = MeanIoU(classes.num_classes, classes.ignore_index)
    for start in range(0, len(images), block):
        chunk = images[start : start + block]
        target = np.stack([resize_nearest(masks[by_name[im.file_name].id], SUBMISSION_SIZE) for im in chunk])
        pred = predictions[start : start + len(chunk)]
        metric.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target.astype(np.int64)))
    return metric.compute(), classes
