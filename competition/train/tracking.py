"""TensorBoard event files in every run folder (`tensorboard --logdir runs`): per fold (`<run>/fold_<i>/`) every
epoch's losses, validation scores and learning rate, and at the end the kept checkpoint's prediction overlays;
per run (`<run>/`) each fold's score and the CV mean.

Written with torch.utils.tensorboard (the pinned `tensorboard` package). Steps are epochs (fold scalars) and
fold indices (run scalars), so a resumed fold continues its curves where it stopped. With tracker=mlflow the
same scalars and images also go to the run's MLflow run (train/mlflow_run.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from competition.train.mlflow_run import MlflowRun

SCALARS = {  # metrics.csv column -> TensorBoard tag
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "miou_image": "miou/image",
    "miou_dataset": "miou/dataset",
    "pixel_accuracy": "pixel_accuracy",
    "lr": "lr",
    "seconds": "seconds_per_epoch",
}


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when a run trains

    return SummaryWriter(log_dir=str(folder))


class FoldTracker:
    """One fold's event file (and MLflow metrics); `epoch` after each epoch, `predictions` once the fold is done."""

    def __init__(self, out: Path, fold: int, mlflow: MlflowRun | None = None):
        self.out = Path(out)
        self.fold = fold
        self.mlflow = mlflow
        self.writer = _writer(self.out)

    def epoch(self, row: dict[str, Any]) -> None:
        values = {tag: float(row[column]) for column, tag in SCALARS.items() if row.get(column) is not None}
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, int(row["epoch"]))
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.metrics({f"fold_{self.fold}/{tag}": v for tag, v in values.items()}, int(row["epoch"]))

    def predictions(self, best_epoch: int) -> None:
        """The fold's overlay PNGs (image | truth | prediction of the kept checkpoint) as images."""
        for path in sorted(self.out.glob("overlay_*.png"), key=lambda p: int(p.stem.split("_")[1])):
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("RGB"))
            self.writer.add_image(f"predictions/{path.stem}", pixels, best_epoch, dataformats="HWC")
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.artifacts(sorted(self.out.glob("overlay_*.png")), f"fold_{self.fold}")

    def close(self) -> None:
        self.writer.close()


def track_run(
    run_dir: Path, results: list[dict[str, Any]], mean: float, std: float, mlflow: MlflowRun | None = None
) -> None:
    """The run's event file: each fold's kept score (step = fold) and the CV mean; the MLflow run's end."""
    writer = _writer(Path(run_dir))
    try:
        for r in results:
            writer.add_scalar("cv/fold_miou", float(r["miou"]), int(r["fold"]))
        writer.add_scalar("cv/mean_miou", float(mean), 0)
    finally:
        writer.close()
    if mlflow is not None:
        mlflow.finish(results, mean, std)
