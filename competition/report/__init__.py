"""Seeing the runs: `report`, one self-contained HTML file of a runs folder (leaderboard with CV beside LB,
learning curves, per-class IoU, confusion matrices, worst validation images, studies, CV-vs-LB scatter).
"""

from competition.report.build import write_report

__all__ = ["write_report"]
