"""Training: k-fold cross-validated runs (loop, losses, optimisers, schedules, plots), their settings, and
the leaderboard of run folders.
"""

from competition.train.distributed import check_gpus
from competition.train.hooks import EpochHook, FoldHook
from competition.train.leaderboard import describe_settings, format_table, leaderboard_rows, write_leaderboard_csv
from competition.train.loop import NonFiniteLoss, OutOfMemory, train_run
from competition.train.losses import MixedLoss
from competition.train.plots import palette
from competition.train.settings import new_run_settings, resume_settings

__all__ = [
    "check_gpus",
    "describe_settings",
    "format_table",
    "leaderboard_rows",
    "write_leaderboard_csv",
    "EpochHook",
    "FoldHook",
    "NonFiniteLoss",
    "OutOfMemory",
    "train_run",
    "MixedLoss",
    "palette",
    "new_run_settings",
    "resume_settings",
]
