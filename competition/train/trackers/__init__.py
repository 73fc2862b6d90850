"""Where a training run's numbers and pictures go besides its folder: the setting `tracker` lists the backends,
`tensorboard` (the default), `mlflow`, `wandb`, several joined by commas (`tensorboard,wandb`), or `none`.

TRACKERS is the one table of them (name -> backend class, see base.Tracker). A new backend is one module here
with its Tracker subclass, its name in core.names.NAMES["tracker"], and one row below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from competition.core.log import Log
from competition.core.names import NAMES, Table, tracker_names
from competition.train.trackers.base import Tracker, TrackerError, Trackers
from competition.train.trackers.mlflow import MlflowRun
from competition.train.trackers.tensorboard import TensorBoard
from competition.train.trackers.wandb import WandbRun

TRACKERS: Table[type[Tracker]] = Table(
    "tracker",
    NAMES["tracker"],
    {
        "tensorboard": TensorBoard,  # event files in the run folder (torch.utils.tensorboard)
        "mlflow": MlflowRun,  # MLFLOW_TRACKING_URI, else <runs>/mlflow.db (optional package mlflow-skinny)
        "wandb": WandbRun,  # Weights & Biases; WANDB_MODE=offline works without an account (optional: wandb)
        "none": Tracker,  # nothing
    },
)


def check_trackers(cfg: dict[str, Any]) -> None:
    """Every chosen backend's optional package is there: a one-line UserError before any work otherwise."""
    for name in tracker_names(cfg.get("tracker", "tensorboard")):
        TRACKERS[name].require(f"tracker={cfg['tracker']}")


def open_trackers(cfg: dict[str, Any], run_dir: Path, info: dict[str, Any], log: Log) -> Trackers:
    """The run's chosen backends, opened (TrackerError when one cannot be: the ones opened before end FAILED)."""
    opened: list[Tracker] = []
    try:
        for name in tracker_names(cfg.get("tracker", "tensorboard")):
            opened.append(TRACKERS[name](cfg, Path(run_dir), info, log))
    except BaseException:
        Trackers(opened).end("FAILED")
        raise
    return Trackers(opened)


__all__ = ["TRACKERS", "Tracker", "TrackerError", "Trackers", "check_trackers", "open_trackers"]
