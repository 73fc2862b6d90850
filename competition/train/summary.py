"""The end of a run: results.json, metrics.csv, per_class_iou.csv, plots, the trackers' end (the CV scores), the
summary table, and a warning when the kept checkpoints predict (almost) only background.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.core.fileio import write_csv, write_json
from competition.core.log import Log
from competition.core.runs import fold_dir
from competition.data import ClassTable
from competition.train.plots import learning_curves, per_class_bars
from competition.train.trackers import Tracker

# A kept checkpoint that predicts less foreground than this share of the true foreground has not learned yet.
BACKGROUND_ONLY = 0.05


def summarize_run(
    run_dir: Path,
    cfg: dict[str, Any],
    classes: ClassTable,
    results: list[dict[str, Any]],
    log: Log,
    trackers: Tracker | None = None,
) -> dict[str, Any]:
    """results.json, metrics.csv, per_class_iou.csv, plots and the summary table of a finished run; the
    trackers' finish (after the files, which a tracker may upload)."""
    scores = [r["miou"] for r in results]
    per_class = pd.DataFrame(
        [[math.nan if v is None else v for v in r["per_class"]] for r in results],
        columns=list(classes.names),
        index=[f"fold_{r['fold']}" for r in results],
    )
    per_class.loc["mean"] = per_class.mean(skipna=True)
    write_csv(per_class.T.reset_index(names="class"), run_dir / "per_class_iou.csv")
    history = pd.concat([pd.read_csv(fold_dir(run_dir, r["fold"]) / "metrics.csv") for r in results], ignore_index=True)
    write_csv(history, run_dir / "metrics.csv")
    ratios = [r.get("foreground_ratio") for r in results]
    ratios = [x for x in ratios if x is not None and not math.isnan(x)]
    background_only = bool(ratios) and float(np.mean(ratios)) < BACKGROUND_ONLY
    summary = {
        "run": run_dir.name,
        "model": cfg["model"],
        "metric": cfg["metric"],
        "miou": float(np.mean(scores)),
        "miou_std": float(np.std(scores)),
        "miou_image": float(np.mean([r["miou_image"] for r in results])),
        "miou_dataset": float(np.mean([r["miou_dataset"] for r in results])),
        "background_only": background_only,
        "init": results[0].get("init", "") if results else "",
        "folds": results,
        "dir": str(run_dir),
    }
    write_json(run_dir / "results.json", summary)
    learning_curves(history, run_dir / "learning_curves.png")
    per_class_bars(list(classes.names), per_class.loc["mean"].tolist(), run_dir / "per_class_iou.png")
    if trackers is not None:
        trackers.finish(results, summary["miou"], summary["miou_std"])

    log("")
    log(f"{'fold':>4} {'best epoch':>10} {'mIoU(image)':>11} {'mIoU(dataset)':>13} {'pixel acc':>9}")
    for r in results:
        log(
            f"{r['fold']:>4} {r['best_epoch']:>10} {r['miou_image']:>11.4f} {r['miou_dataset']:>13.4f} "
            f"{r['pixel_accuracy']:>9.4f}"
        )
    log(f"CV mIoU ({cfg['metric']}): {summary['miou']:.4f} ± {summary['miou_std']:.4f} over {len(results)} folds")
    if background_only:
        log(
            f"warning: the kept checkpoints predict (almost) only background (foreground predicted on "
            f"{np.mean(ratios):.1%} of the true foreground's area): not learned yet; try more epochs, another lr, "
            "norm=batch (FCN) or pretrained weights"
        )
    log(f"run folder: {run_dir}")
    return summary
