"""Seeing the runs: `dashboard` (optuna-dashboard on the study storage, on 127.0.0.1) and `report` (one
self-contained HTML file of a runs folder: leaderboard with CV beside LB, learning curves, per-class IoU,
confusion matrices, worst validation images, studies, CV-vs-LB scatter).
"""

from competition.report.build import write_report
from competition.report.dashboard import serve_dashboard

__all__ = ["write_report", "serve_dashboard"]
