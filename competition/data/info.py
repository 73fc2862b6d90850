"""`data-info`: a dataset root validated file by file, its class table with pixel and image shares, its folds."""

from __future__ import annotations

from typing import Any

import numpy as np

from competition.core.log import Log
from competition.data.coco import decode_image_files
from competition.data.folds import make_folds
from competition.data.root import SPLITS, DataRoot


def describe_dataset(data: DataRoot, cfg: dict[str, Any], log: Log) -> None:
    """Log every split's image and annotation counts, each class's pixel share and image count, the folds."""
    for split in (s for s in SPLITS if data.has(s)):
        coco = data.coco(split)
        decode_image_files(data.root, coco)
        n_ann = sum(len(a) for a in coco.annotations.values())
        log(f"{split + '.json':<15} {len(coco.images):>6} images {n_ann:>7} annotations (files decoded)")
    classes = data.classes(cfg["classes"], cfg["ignore_index"])
    store = data.masks("train_all", classes, cfg["overlap"], log=log)
    counts = np.zeros(256, dtype=np.int64)
    present = np.zeros(256, dtype=np.int64)
    for image_id in data.coco("train_all").image_ids:
        c = np.bincount(store[image_id].ravel(), minlength=256)
        counts += c
        present += c > 0
    total = counts.sum()
    log(f"{'value':>5}  {'class':<24} {'pixels':>8} {'images':>7}")
    for value, name in enumerate(classes.names):
        log(f"{value:>5}  {name:<24} {counts[value] / total:>8.2%} {present[value]:>7}")
    if counts[classes.ignore_index]:
        log(f"{classes.ignore_index:>5}  {'(ignored)':<24} {counts[classes.ignore_index] / total:>8.2%}")
    folds = make_folds(data, cfg["split"], cfg["folds"], cfg["seed"])
    sizes = ", ".join(str(len(v)) for v in folds.val_ids)
    log(f"folds: {folds.k} ({folds.method}; validation sizes {sizes}){f' -> {folds.path}' if folds.path else ''}")
