"""Scoring a submission CSV against ground-truth annotations, by the competition's rules.

The ground truth is rendered like training masks (same class table, overlap policy, mask cache), resized to
256 x 256 with OpenCV's INTER_NEAREST rule, and compared with the CSV's masks by competition.submit.metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError
from competition.core.geometry import SUBMISSION_SIZE, resize_nearest
from competition.data import ClassTable, CocoFile, DataRoot, ImageInfo, build_class_table, load_coco, mask_store
from competition.submit.check import read_submission
from competition.submit.metric import MeanIoU, Scores


def check_truth(truth: CocoFile, images: Sequence[ImageInfo], categories: Sequence[dict], test: Path | None) -> None:
    """The ground truth fits what is scored, before anything is scored: a record for every test image, of the
    same size as test.json says, and only categories of the dataset (same id, same name)."""
    gt = truth.path
    by_name = {im.file_name: im for im in truth.images}
    missing = [im.file_name for im in images if im.file_name not in by_name]
    if missing:
        raise UserError(f"{gt}: no ground truth for test image {missing[0]} ({len(missing)} missing)")
    if test is not None:
        for im in images:
            other = by_name[im.file_name]
            if (other.width, other.height) != (im.width, im.height):
                raise UserError(
                    f"{gt}: image {im.file_name} is {other.width}x{other.height} here but {im.width}x{im.height} "
                    f"in {test}: the ground truth is of other images"
                )
    names = {c["id"]: c["name"] for c in categories}
    for c in truth.categories:
        if c["id"] in names and names[c["id"]] != c["name"]:
            raise UserError(f"{gt}: category id {c['id']} is {c['name']!r} here but {names[c['id']]!r} in the dataset")
    for im in truth.images:
        for ann in truth.annotations.get(im.id, ()):
            if ann["category_id"] not in names:
                raise UserError(
                    f"{gt}: annotation id {ann.get('id')} (image {im.file_name}): category id {ann['category_id']} "
                    "is not a category of the dataset"
                )


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
    check_truth(truth, images, categories, Path(data) / "test.json" if data else None)
    predictions = read_submission(csv, [im.file_name for im in images], classes.num_classes)
    masks = mask_store(truth, classes, cfg["overlap"], log=log)
    metric = MeanIoU(classes.num_classes, classes.ignore_index)
    for start in range(0, len(images), block):
        chunk = images[start : start + block]
        target = np.stack([resize_nearest(masks[by_name[im.file_name].id], SUBMISSION_SIZE) for im in chunk])
        pred = predictions[start : start + len(chunk)]
        metric.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target.astype(np.int64)))
    return metric.compute(), classes
