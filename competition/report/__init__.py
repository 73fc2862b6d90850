"""Seeing the runs: `dashboard` (optuna-dashboard on the study storage, on 127.0.0.1) and `report` (one
self-contained HTML file of a runs folder: leaderboard with CV beside LB, learning curves, per-class IoU,
confusion matrices, worst validation images, studies, CV-vs-LB scatter).
"""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".build": ("write_report",),
        ".dashboard": ("serve_dashboard",),
    },
)
