"""What a run's out-of-fold probabilities say beyond its score: the confusion matrix over every validation pixel
(at 256 x 256, as scored) and the validation images it does worst on (per-image mIoU), with their masks.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from competition.core.geometry import resize_nearest
from competition.core.runs import read_config
from competition.data import ClassTable, DataRoot, ImageInfo
from competition.ensemble import Member, read_oof
from competition.predict import argmax, run_classes
from competition.submit import iou_from_confusion, per_image_confusion

BLOCK = 16  # images per streamed block


@dataclass
class Worst:
    """One validation image and how the run did on it."""

    image: ImageInfo
    miou: float
    truth: np.ndarray  # [256, 256] class values (ignore_index where ignored)
    pred: np.ndarray  # [256, 256]


@dataclass
class OofAnalysis:
    classes: ClassTable
    root: DataRoot
    confusion: np.ndarray  # [C, C] int64, rows = truth, columns = prediction
    images: int
    worst: list[Worst] = field(default_factory=list)  # worst first


def analyse_oof(run_dir: Path, worst: int = 6) -> OofAnalysis:
    """Stream a run's out-of-fold probabilities against the true masks (UserError when either is missing)."""
    cfg = read_config(run_dir)
    member = Member(Path(run_dir), cfg)
    oof = read_oof(member)
    root = DataRoot(Path(cfg["data"]), check_images=False)
    classes = run_classes(member.dir, cfg, root)
    masks = root.masks("train_all", classes, cfg["overlap"], log=lambda _: None)
    images = [im for im in root.coco("train_all").images if im.file_name in oof.where]
    n = classes.num_classes
    confusion = torch.zeros(n, n, dtype=torch.int64)
    kept: list[tuple[float, int, Worst]] = []  # a max-heap on mIoU (negated) of the `worst` lowest
    for start in range(0, len(images), BLOCK):
        chunk = images[start : start + BLOCK]
        pred = torch.from_numpy(argmax(oof.block([im.file_name for im in chunk]), 1).astype(np.int64))
        truth = torch.from_numpy(np.stack([resize_nearest(masks[im.id]) for im in chunk]).astype(np.int64))
        per_image = per_image_confusion(pred, truth, n, classes.ignore_index)
        confusion += per_image.sum(0)
        ious = iou_from_confusion(per_image)
        scored = ~torch.isnan(ious).all(1)
        miou = torch.where(scored, torch.nan_to_num(ious, nan=0).sum(1) / (~torch.isnan(ious)).sum(1).clamp(min=1), 2)
        for i, im in enumerate(chunk):
            value = float(miou[i])
            if value > 1:  # no scored pixel at all
                continue
            item = (-value, start + i, Worst(im, value, truth[i].numpy(), pred[i].numpy().astype(np.uint8)))
            if len(kept) < worst:
                heapq.heappush(kept, item)
            elif value < -kept[0][0]:
                heapq.heapreplace(kept, item)
    ordered = [w for _, _, w in sorted(kept, key=lambda x: (-x[0], x[1]))]
    return OofAnalysis(classes, root, confusion.numpy(), len(images), ordered)
