"""Pseudo-labelled sets: test images with labels a trained run predicted, for training (`--set pseudo=NAME`).

```
runs/pseudo/<NAME>/labels.npy   uint8 [n_images, 256, 256]: the run's argmax class values; pixels whose top
                                probability is below the threshold are ignore_index
                   pseudo.json  images (file names in the dataset root, test.json order), their ids and sizes,
                                classes, threshold, the run that made it, the share of pixels kept
```

A pseudo set joins the *training* part of every fold, never validation: its images come from test.json, and
an image that is also in train_all.json (by file name) is refused, so no validation image or pixel can leak in.
Labels are stored at 256 x 256 and resized (nearest) to each image's size when read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from competition.core.errors import UserError
from competition.core.runs import run_name
from competition.data.coco import CocoFile, ImageInfo


def pseudo_dir(runs_dir: Path, name: str) -> Path:
    """runs/pseudo/NAME; a NAME that would leave that folder (`../x`, `/abs`) is a UserError."""
    return Path(runs_dir) / "pseudo" / run_name(name, "setting pseudo")


class PseudoLabels:
    """A pseudo set read back: `store[image_id] -> uint8 mask at the image's own size` (memory-mapped)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        manifest = self.folder / "pseudo.json"
        if not manifest.is_file():
            raise UserError(f"{self.folder}: no pseudo-labelled set here (make one: ./run.sh pseudo-label RUN)")
        self.meta: dict[str, Any] = json.loads(manifest.read_text())
        self.images = [ImageInfo(i, f, h, w) for i, f, h, w in self.meta["images"]]
        self._row = {im.id: row for row, im in enumerate(self.images)}
        self._labels: np.ndarray | None = None

    def __getitem__(self, image_id: int) -> np.ndarray:
        if self._labels is None:
            self._labels = np.load(self.folder / "labels.npy", mmap_mode="r")
        image = self.images[self._row[image_id]]
        return resize_to(np.asarray(self._labels[self._row[image_id]]), image.height, image.width)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_labels": None}

    def check(self, classes: list[str], train_all: CocoFile) -> None:
        """The set fits a run: same classes, and none of its images is a training/validation image."""
        if list(self.meta["classes"]) != list(classes):
            raise UserError(f"{self.folder}: labels of classes {self.meta['classes']}, the run has {list(classes)}")
        known = {im.file_name for im in train_all.images}
        leaked = [im.file_name for im in self.images if im.file_name in known]
        if leaked:
            raise UserError(
                f"{self.folder}: {len(leaked)} images are also in {train_all.path.name} (e.g. {leaked[0]}); "
                "a pseudo set must hold test images only"
            )


def resize_to(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A label map resized to height x width by the nearest rule (each output pixel reads one input pixel)."""
    rows = (np.arange(height) * mask.shape[0]) // height
    cols = (np.arange(width) * mask.shape[1]) // width
    return mask[rows][:, cols]
