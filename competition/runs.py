"""Run folders: `runs/<id>/` holds everything one training run made.

```
runs/<id>/config.json        resolved settings (defaults < model < file < --set < flags)
          run.json           id, model, status (running | complete | pruned | failed), dates, trial, classes
          results.json       per-fold and mean +- std CV scores (written when the run is complete)
          metrics.csv        every epoch of every fold
          per_class_iou.csv  per-class IoU per fold and mean
          *.png              learning curves, per-class IoU bars
          fold_<i>/best.pt   best checkpoint of the fold (state dict; loaded with weights_only=True)
          fold_<i>/last.pt   resume state of an unfinished fold (removed when the fold is done)
          fold_<i>/result.json, metrics.csv, oof.npy (float16 [n, C, 256, 256]) + oof.json, overlay_*.png
          test/probs.npy     test probabilities of `predict` (float16) + probs.json
```
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from competition.errors import UserError
from competition.fileio import read_json, write_json


def new_run_id(model: str) -> str:
    return f"{model}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def fold_dir(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / f"fold_{fold}"


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json merged with results.json (when complete)."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    if (run_dir / "results.json").exists():
        info.update(read_json(run_dir / "results.json"))
    info["dir"] = str(run_dir)
    return info


def update_run(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into run.json (atomic)."""
    path = Path(run_dir) / "run.json"
    info = read_json(path) if path.exists() else {}
    info.update(fields)
    write_json(path, info)
    return info


def list_runs(runs_dir: Path) -> list[Path]:
    """Run folders under runs_dir (those with a run.json), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted((p.parent for p in runs_dir.glob("*/run.json")), key=lambda p: p.stat().st_mtime)


def find_run(runs_dir: Path, ref: str) -> Path:
    """A run folder from an id (or unique id prefix) or a path; trial references are resolved by search."""
    if ref.startswith(("trial:", "best:")):
        from competition.study_refs import resolve_trial_ref

        return resolve_trial_ref(runs_dir, ref)
    path = Path(ref)
    if (path / "run.json").exists():
        return path
    runs_dir = Path(runs_dir)
    if (runs_dir / ref / "run.json").exists():
        return runs_dir / ref
    matches = [p for p in list_runs(runs_dir) if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"{runs_dir}: no run '{ref}' (see ./run.sh leaderboard)")
    raise UserError(f"{runs_dir}: '{ref}' matches {len(matches)} runs: {', '.join(p.name for p in matches[:5])}")
