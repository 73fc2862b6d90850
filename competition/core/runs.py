"""Run folders: `runs/<id>/` holds everything one training run made.

```
runs/<id>/config.json        resolved settings (defaults < model < file < --set < flags); read with read_config
          run.json           id, model, status (running | complete | pruned | failed), dates, trial, classes
          results.json       per-fold and mean +- std CV scores (written when the run is complete)
          metrics.csv        every epoch of every fold
          per_class_iou.csv  per-class IoU per fold and mean
          *.png              learning curves, per-class IoU bars
          events.out.tfevents.*  tracker=tensorboard: the folds' scores and CV mean (fold_<i>/: epochs, overlays)
          fold_<i>/best.pt   best checkpoint of the fold (state dict; loaded with weights_only=True)
          fold_<i>/last.pt   resume state of an unfinished fold (removed when the fold is done)
          fold_<i>/result.json, metrics.csv, oof.npy (uint8 [n, C, 256, 256]) + oof.json, overlay_*.png
          test/probs.npy     test probabilities of `predict` (uint8) + probs.json
          .lock              held (flock) while a process trains in the folder
runs/mlflow.db, mlartifacts/     the MLflow store of tracker=mlflow (train/trackers/mlflow.py)
runs/wandb/                      W&B's run files of tracker=wandb unless WANDB_DIR (train/trackers/wandb.py)
```

A run is referred to by its id, a unique id prefix, its folder, `trial:STUDY:NUMBER` or `best:STUDY` (the best
complete trial). Trial references are resolved from the run folders themselves (each trial's run.json records
its study and number), so predict and ensemble work wherever the run folders are, without the study database.
"""

from __future__ import annotations

import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from competition.core.config import validate
from competition.core.errors import UserError
from competition.core.fileio import read_json, write_json
from competition.core.names import plain_name, tracker_names


def new_run_id(model: str) -> str:
    return f"{model}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_name(name: str, source: str) -> str:
    """A run folder name read from a study, a manifest or the user: one plain folder name, so the folder it
    names stays inside the runs folder; UserError otherwise."""
    return plain_name(name, f"{source}: run folder", UserError)


def fold_dir(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / f"fold_{fold}"


def read_config(run_dir: Path, missing_ok: bool = False) -> dict[str, Any]:
    """A run's saved settings (config.json), checked and upgraded: keys newer than the run take their defaults
    and older spellings their current form (config.validate; the text `tracker: mlflow` of a run saved before
    tracker lists meant MLflow beside TensorBoard: `tensorboard,mlflow`). The one way every stage reads a run's
    settings; a damaged file is one UserError naming it, and so is a missing one unless `missing_ok` (then {})."""
    path = Path(run_dir) / "config.json"
    if missing_ok and not path.exists():
        return {}
    if not path.is_file():
        raise UserError(f"{path}: missing; the run folder has no saved settings (train it again)")
    try:
        cfg = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a readable settings file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping of settings, got {type(cfg).__name__}")
    if cfg.get("tracker") == "mlflow":  # saved as text before tracker was a list: MLflow came with TensorBoard
        cfg["tracker"] = "tensorboard,mlflow"
    try:
        return validate(cfg, str(path))
    except UserError as e:
        raise UserError(str(e)) from None  # a damaged run file is bad input (exit 1), not a usage error


def write_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    """Save a run's resolved settings as its config.json (atomically); the tracker setting as a JSON list, which
    tells it from the text `mlflow` of older runs (read_config)."""
    if "tracker" in cfg:
        cfg = {**cfg, "tracker": list(tracker_names(cfg["tracker"]))}
    write_json(Path(run_dir) / "config.json", cfg)


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json merged with results.json (when complete)."""
    run_dir = Path(run_dir)
    info = _record(run_dir / "run.json")
    if (run_dir / "results.json").exists():
        info.update(_record(run_dir / "results.json"))
    info["dir"] = str(run_dir)
    return info


def _record(path: Path) -> dict[str, Any]:
    """A run file the harness wrote (run.json, results.json); missing or damaged: one UserError naming it."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; this is not a complete run folder (train it again)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: damaged run file ({str(e).splitlines()[0][:120]}); train the run again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: damaged run file (not a JSON object); train the run again")
    return data


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
    """A run folder from an id (or unique id prefix), a path, or a trial reference."""
    if ref.startswith(("trial:", "best:")):
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


def resolve_trial_ref(runs_dir: Path, ref: str) -> Path:
    """The run folder of `trial:STUDY:NUMBER` or `best:STUDY`."""
    kind, _, rest = ref.partition(":")
    study, _, number = rest.partition(":")
    if not study or (kind == "trial") != bool(number):
        raise UserError(f"run reference {ref!r}: expected trial:STUDY:NUMBER or best:STUDY")
    trials = [(read_run(p), p) for p in list_runs(runs_dir)]
    trials = [(info, p) for info, p in trials if (info.get("trial") or {}).get("study") == study]
    if not trials:
        raise UserError(f"{runs_dir}: no trials of study {study!r} (see ./run.sh leaderboard)")
    if kind == "trial":
        for info, path in trials:
            if str(info["trial"]["number"]) == number:
                return path
        raise UserError(f"{runs_dir}: study {study!r} has no trial {number}")
    complete = [(info, p) for info, p in trials if info.get("status") == "complete" and "miou" in info]
    if not complete:
        raise UserError(f"{runs_dir}: study {study!r} has no complete trial yet")
    return max(complete, key=lambda x: x[0]["miou"])[1]


def remove_heavy_files(run_dir: Path) -> None:
    """Drop checkpoints and probabilities of a run nobody will use (a pruned trial)."""
    for fold in Path(run_dir).glob("fold_*"):
        for name in ("best.pt", "last.pt", "oof.npy"):
            (fold / name).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / "test", ignore_errors=True)


def now() -> str:
    """The local time, to the second, as run.json and sidecars record it."""
    return datetime.now().isoformat(timespec="seconds")
