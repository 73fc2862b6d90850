"""TensorBoard event files in the run folder (`tracker=tensorboard`, the default; `tensorboard --logdir runs`):
per fold (`<run>/fold_<i>/`) every epoch's losses, validation scores and learning rate, and at the fold's end the
kept checkpoint's prediction overlays; per run (`<run>/`) each fold's score and the CV mean.

Written with torch.utils.tensorboard (the pinned `tensorboard` package). Steps are epochs (fold scalars) and
fold indices (run scalars), so a resumed fold continues its curves where it stopped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from competition.core.log import Log
from competition.train.trackers.base import Tracker

SCALARS = {  # metrics.csv column -> TensorBoard tag (the other trackers log the same tags)
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "miou_image": "miou/image",
    "miou_dataset": "miou/dataset",
    "pixel_accuracy": "pixel_accuracy",
    "lr": "lr",
    "seconds": "seconds_per_epoch",
}


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """A metrics.csv row's values by tag (the columns it has; NaN, an epoch not validated, left out)."""
    values = {tag: row.get(column) for column, tag in SCALARS.items()}
    return {tag: float(v) for tag, v in values.items() if v is not None and math.isfinite(float(v))}


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when a run trains

    return SummaryWriter(log_dir=str(folder))


class TensorBoard(Tracker):
    """One event file per fold (opened at its first epoch, closed when the fold is done) and one for the run."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, info: dict[str, Any], log: Log):
        self.run_dir = Path(run_dir)
        self.writers: dict[int, Any] = {}

    def _fold(self, fold: int):
        if fold not in self.writers:
            self.writers[fold] = _writer(self.run_dir / f"fold_{fold}")
        return self.writers[fold]

    def epoch(self, fold: int, row: dict[str, Any]) -> None:
        writer = self._fold(fold)
        for tag, value in scalars(row).items():
            writer.add_scalar(tag, value, int(row["epoch"]))
        writer.flush()

    def images(self, fold: int, paths: list[Path], step: int) -> None:
        writer = self._fold(fold)
        for path in paths:
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("RGB"))
            writer.add_image(f"predictions/{Path(path).stem}", pixels, int(step), dataformats="HWC")
        writer.flush()

    def fold_done(self, fold: int, result: dict[str, Any]) -> None:
        if fold in self.writers:
            self.writers.pop(fold).close()

    def finish(self, results: list[dict[str, Any]], mean: float, std: float) -> None:
        self._close()
        writer = _writer(self.run_dir)
        try:
            for r in results:
                writer.add_scalar("cv/fold_miou", float(r["miou"]), int(r["fold"]))
            writer.add_scalar("cv/mean_miou", float(mean), 0)
        finally:
            writer.close()

    def end(self, status: str) -> None:
        self._close()

    def _close(self) -> None:
        for fold in list(self.writers):
            self.writers.pop(fold).close()
