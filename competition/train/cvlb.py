"""CV beside LB: the leaderboard rows get the recorded leaderboard scores of their submissions (`lb`), and once
three or more rows are scored, how well CV ranks what LB ranks (Kendall's tau-b) and the mean CV - LB gap.

A run with several scored submissions (with and without TTA, say) shows its best public score; every record is
kept in the row's `lb_submissions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from competition.submit import SUBMISSIONS, scored_runs

MIN_PAIRS = 3  # fewer scored runs say nothing about a correlation


def add_lb_scores(
    rows: list[dict[str, Any]], runs_dir: Path, submissions: Path = SUBMISSIONS
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Put each row's leaderboard scores in it (`lb_public`, `lb_private`, `lb_gap`, `lb_submissions`); return
    the CV-LB summary and the scored submissions that match no run."""
    by_run, unmatched = scored_runs(runs_dir, submissions)
    for row in rows:
        records = sorted(by_run.get(row["run"], []), key=lambda r: r["public"], reverse=True)
        best = records[0] if records else None
        row["lb_public"] = best["public"] if best else None
        row["lb_private"] = best.get("private") if best else None
        row["lb_gap"] = row["miou"] - best["public"] if best else None
        row["lb_submissions"] = records
    summary = cv_lb_summary(rows)
    for row in rows:
        row["cv_lb"] = summary
    return summary, unmatched


def cv_lb_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """n scored rows; Kendall tau-b of CV vs public LB and the mean CV - LB gap (None below MIN_PAIRS)."""
    pairs = [(r["miou"], r["lb_public"]) for r in rows if r.get("lb_public") is not None]
    private = [(r["miou"], r["lb_private"]) for r in rows if r.get("lb_private") is not None]
    out: dict[str, Any] = {"n": len(pairs), "kendall_tau": None, "mean_gap": None}
    if len(pairs) >= MIN_PAIRS:
        cv, lb = np.array(pairs).T
        out["kendall_tau"] = kendall_tau(cv, lb)
        out["mean_gap"] = float(np.mean(cv - lb))
    out["n_private"] = len(private)
    out["kendall_tau_private"] = kendall_tau(*np.array(private).T) if len(private) >= MIN_PAIRS else None
    return out


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float | None:
    """Kendall's tau-b (ties counted as in scipy.stats.kendalltau); None when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant_minus_discordant = float(np.sum(dx * dy))
    untied_x, untied_y = float(np.sum(dx != 0)), float(np.sum(dy != 0))
    if untied_x == 0 or untied_y == 0:
        return None
    return concordant_minus_discordant / float(np.sqrt(untied_x * untied_y))


def format_cv_lb(summary: dict[str, Any], unmatched: list[dict[str, Any]]) -> list[str]:
    """The lines under the leaderboard table about CV vs LB."""
    lines = []
    n = summary["n"]
    if n >= MIN_PAIRS:
        tau = summary["kendall_tau"]
        gap = summary["mean_gap"]
        lines.append(
            f"CV vs LB over {n} scored runs: Kendall tau {'n/a' if tau is None else f'{tau:+.3f}'}, "
            f"mean CV - LB gap {gap:+.4f} ({'CV optimistic' if gap > 0 else 'CV pessimistic'})"
        )
        if summary.get("kendall_tau_private") is not None:
            tau = summary["kendall_tau_private"]
            lines.append(f"CV vs private LB over {summary['n_private']} scored runs: Kendall tau {tau:+.3f}")
    elif n:
        lines.append(f"CV vs LB: {n} scored run(s); the rank correlation needs {MIN_PAIRS} (./run.sh lb CSV SCORE)")
    for record in unmatched:
        lines.append(f"LB {record['public']:.4f} for {record['csv']}: made by no run in this folder")
    return lines
