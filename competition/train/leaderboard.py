"""The CV leaderboard (`leaderboard`): every finished run in the runs folder ranked by CV mIoU (mean +- std
over folds). Not to be confused with the competition's leaderboard, whose scores `lb` records (LB,
submit.lb_scores).

Plain runs, search trials and ensembles are all run folders (run.json + results.json), so they rank together;
a row's `kind` says which it is. Rows whose submissions were scored (`lb`) carry their LB scores, and every row
the CV-LB summary (competition.train.cvlb).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from competition.core.config import short
from competition.core.fileio import atomic_path, read_json
from competition.core.runs import list_runs, read_config, read_run
from competition.submit import SUBMISSIONS
from competition.train.cvlb import add_lb_scores, format_cv_lb
from models import get_spec

KEY_SETTINGS = ("epochs", "image_size", "batch_size", "optimizer", "lr", "loss")
FAMILY_SETTINGS = {"smp": ("encoder",), "fcn": ("norm", "dropout")}


def leaderboard_rows(runs_dir: Path, submissions: Path = SUBMISSIONS, pruned: bool = False) -> list[dict[str, Any]]:
    """One row per complete run, best first, with its recorded leaderboard scores; with `pruned`, the pruned
    search trials too, below every complete run (their CV mIoU is partial: `pruned_after_fold`)."""
    rows = []
    for run_dir in list_runs(runs_dir):
        info = read_run(run_dir)
        wanted = ("complete", "pruned") if pruned else ("complete",)
        if info.get("status") not in wanted or "miou" not in info:
            continue
        cfg = read_config(run_dir, missing_ok=True)  # an ensemble's folder has none
        trial = info.get("trial")
        rows.append(
            {
                "run": info["id"],
                "model": info["model"],
                "kind": info.get("kind", "trial" if trial else "run"),
                "miou": info["miou"],
                "miou_std": info.get("miou_std", 0.0),
                "folds": len(info.get("folds", [])),
                "metric": info.get("metric", "image"),
                "miou_image": info.get("miou_image"),
                "miou_dataset": info.get("miou_dataset"),
                "background_only": bool(info.get("background_only", False)),
                "init": str(info.get("init", "")).split(":")[0],  # random | imagenet | file | ...
                "study": f"{trial['study']}#{trial['number']}" if trial else "",
                "settings": _settings(info, cfg),
                "date": info.get("finished", info.get("created", "")),
                "dir": info.get("dir", str(run_dir)),
                "pruned_after_fold": (info.get("pruned") or {}).get("after_fold"),
                "pruned_of": (info.get("pruned") or {}).get("of"),
                "post_miou": _post_score(run_dir),
            }
        )
    rows = sorted(rows, key=lambda r: (r["pruned_after_fold"] is not None, -r["miou"]))
    _, unmatched = add_lb_scores(rows, runs_dir, submissions)
    for row in rows:
        row["lb_unmatched"] = unmatched  # scored CSVs that no run made (e.g. a hard vote), for the table's footer
    return rows


def _post_score(run_dir: Path) -> float | None:
    """The held-out out-of-fold mIoU after the run's fitted post-processing (`--post auto` wrote
    postprocess.json), or None."""
    path = Path(run_dir) / "postprocess.json"
    try:
        after = read_json(path).get("report", {}).get("after") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return float(after) if isinstance(after, (int, float)) else None


def _settings(info: dict[str, Any], cfg: dict[str, Any]) -> str:
    """A run's key settings, or an ensemble's members and weights."""
    if info.get("kind") == "ensemble":
        return ", ".join(f"{m}*{w:.2f}" for m, w in zip(info["members"], info["weights"], strict=True))
    init = str(info.get("init", "")).split(":")[0]
    return describe_settings(cfg) + (f", init={init}" if init else "")


def describe_settings(cfg: dict[str, Any]) -> str:
    """The settings that tell runs apart, short: `epochs=30, image_size=256, ..., lr=0.0003`."""
    if not cfg.get("model"):
        return ""
    keys = KEY_SETTINGS + FAMILY_SETTINGS.get(get_spec(cfg["model"]).family, ())
    return ", ".join(f"{k}={short(cfg[k])}" for k in keys if cfg.get(k) is not None)


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no finished runs yet: ./run.sh train MODEL or ./run.sh search MODEL"
    scored = any(r.get("lb_public") is not None for r in rows)
    private = any(r.get("lb_private") is not None for r in rows)
    post = any(r.get("post_miou") is not None for r in rows)
    head = f"{'#':>3} {'CV mIoU':>16} " + (f"{'post':>6} " if post else "") + (f"{'LB':>6} " if scored else "")
    head += f"{'private':>7} " if private else ""
    head += f"{'metric':<7} {'image':>6} {'dataset':>7} {'folds':>5}  {'kind':<8} "
    lines = [head + f"{'model':<14} {'run':<34} {'date':<19}  settings"]
    for i, r in enumerate(rows, 1):
        score = f"{r['miou']:.4f} ± {r['miou_std']:.4f}"
        lb = (_cell(r.get("post_miou")) + " " if post else "") + (_cell(r.get("lb_public")) + " " if scored else "")
        lb += _cell(r.get("lb_private"), 7) + " " if private else ""
        name = r["run"] + (f" ({r['study']})" if r["study"] else "")
        flag = "[predicts background only] " if r.get("background_only") else ""
        if r.get("pruned_after_fold") is not None:
            flag = f"[pruned after {r['pruned_after_fold']} of {r.get('pruned_of') or '?'} folds: partial CV] " + flag
        lines.append(
            f"{i:>3} {score:>16} {lb}{r['metric']:<7} {_cell(r.get('miou_image'))} {_cell(r.get('miou_dataset'), 7)} "
            f"{r['folds']:>5}  {r['kind']:<8} {r['model']:<14} {name:<34} {r['date']:<19}  {flag}{r['settings']}"
        )
    if "cv_lb" in rows[0]:
        lines += format_cv_lb(rows[0]["cv_lb"], rows[0].get("lb_unmatched", []))
    return "\n".join(lines)


def _cell(value: float | None, width: int = 6) -> str:
    return f"{value:>{width}.4f}" if isinstance(value, float) else f"{'':>{width}}"


def write_leaderboard_csv(rows: list[dict[str, Any]], path: Path) -> None:
    flat = [{k: v for k, v in r.items() if k not in ("lb_submissions", "lb_unmatched", "cv_lb")} for r in rows]
    with atomic_path(path) as tmp:
        pd.DataFrame(flat).to_csv(tmp, index=False)
