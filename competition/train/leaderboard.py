"""The leaderboard: every finished run in the runs folder ranked by CV mIoU (mean +- std over folds).

Plain runs, search trials and ensembles are all run folders (run.json + results.json), so they rank together;
a row's `kind` says which it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from competition.core.config import short
from competition.core.fileio import atomic_path, read_json
from competition.core.runs import list_runs, read_run
from models import get_spec

KEY_SETTINGS = ("epochs", "image_size", "batch_size", "optimizer", "lr", "loss")
FAMILY_SETTINGS = {"smp": ("encoder",), "fcn": ("norm", "dropout")}


def leaderboard_rows(runs_dir: Path) -> list[dict[str, Any]]:
    """One row per complete run, best first."""
    rows = []
    for run_dir in list_runs(runs_dir):
        info = read_run(run_dir)
        if info.get("status") != "complete" or "miou" not in info:
            continue
        config = run_dir / "config.json"
        cfg = read_json(config) if config.exists() else {}
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
                "dir": info["dir"],
            }
        )
    return sorted(rows, key=lambda r: r["miou"], reverse=True)


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
    head = f"{'#':>3} {'CV mIoU':>16} {'metric':<7} {'image':>6} {'dataset':>7} {'folds':>5}  {'kind':<8} "
    lines = [head + f"{'model':<14} {'run':<34} {'date':<19}  settings"]
    for i, r in enumerate(rows, 1):
        score = f"{r['miou']:.4f} ± {r['miou_std']:.4f}"
        name = r["run"] + (f" ({r['study']})" if r["study"] else "")
        flag = "[predicts background only] " if r.get("background_only") else ""
        lines.append(
            f"{i:>3} {score:>16} {r['metric']:<7} {_cell(r.get('miou_image'))} {_cell(r.get('miou_dataset'), 7)} "
            f"{r['folds']:>5}  {r['kind']:<8} {r['model']:<14} {name:<34} {r['date']:<19}  {flag}{r['settings']}"
        )
    return "\n".join(lines)


def _cell(value: float | None, width: int = 6) -> str:
    return f"{value:>{width}.4f}" if isinstance(value, float) else f"{'':>{width}}"


def write_leaderboard_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
