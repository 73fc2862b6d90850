"""Training: k-fold cross-validated runs (loop, losses, optimisers, schedules, plots), their settings, and
the leaderboard of run folders.
"""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".distributed": ("check_gpus",),
        ".hooks": ("EpochHook", "FoldHook"),
        ".leaderboard": ("describe_settings", "format_table", "leaderboard_rows", "write_leaderboard_csv"),
        ".loop": ("NonFiniteLoss", "OutOfMemory", "train_run"),
        ".losses": ("MixedLoss",),
        ".plots": ("palette",),
        ".settings": ("new_run_settings", "resume_settings"),
    },
)
