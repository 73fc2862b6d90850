"""The end of a search: the top-trials table, best_params.json, trials.csv and plots in the study folder,
and the `search --json` result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from competition.core.config import short
from competition.core.fileio import atomic_path, read_json, write_json
from competition.core.log import Log
from competition.core.runs import run_name
from competition.search.callbacks import epochs_spent
from competition.search.plots import save_study_plots
from competition.search.space import trial_params
from competition.search.storage import safe_url
from competition.search.trials import PRUNED, best_full, count, epochs_trained, ranked

# what a trial's run folder holds that weighs: name -> file patterns
HEAVY = {
    "checkpoints": ("fold_*/best.pt", "fold_*/last.pt"),
    "oof": ("fold_*/oof.npy",),
    "test_probs": ("test/probs.npy",),
}


def study_disk(study: optuna.Study, runs_dir: Path) -> dict[str, int]:
    """Bytes the run folders of the study's trials hold in checkpoints, out-of-fold and test probabilities."""
    total = dict.fromkeys(HEAVY, 0)
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get("run")
        folder = Path(runs_dir) / run_name(name, f"study {study.study_name} trial {t.number}") if name else None
        if folder is None or not folder.is_dir():
            continue
        for kind, patterns in HEAVY.items():
            total[kind] += sum(p.stat().st_size for pattern in patterns for p in folder.glob(pattern))
    return total


def summarize_study(
    study: optuna.Study, url: str, out_dir: Path, log: Log, top: int = 10, runs_dir: Path | None = None
) -> dict[str, Any]:
    """Top-trials table, best_params.json, trials.csv and plots in the study folder; the disk its trials' run
    folders take (when `runs_dir` is given); the --json result."""
    trials = study.get_trials(deepcopy=False)
    counts = count(trials)
    order = ranked(trials)  # fully trained trials first, then pruned ones by their partial value
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "trials.csv") as tmp:
        study.trials_dataframe().to_csv(tmp, index=False)
    best = None
    b = best_full(study)
    if b is not None:
        best = {"miou": b.value, "params": trial_params(b), "run": b.user_attrs.get("run"), "number": b.number}
        write_json(out_dir / "best_params.json", best)
    save_study_plots(study, out_dir, log)

    log("")
    log(f"{'trial':>5} {'CV mIoU':>8}  {'trained':<16} {'run':<28} params")
    for t in order[:top]:
        params = ", ".join(f"{k}={short(v)}" for k, v in trial_params(t).items())
        log(f"{t.number:>5} {t.value:>8.4f}  {_trained(t):<16} {t.user_attrs.get('run', ''):<28} {params}")
    log(
        f"study {study.study_name}: {len(trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed; {epochs_spent(study)} epochs trained); folder {out_dir}"
    )
    disk = study_disk(study, runs_dir) if runs_dir is not None else None
    if disk is not None:
        gb = {kind: size / 1e9 for kind, size in disk.items()}
        log(f"disk: the trials' run folders hold {sum(gb.values()):.2f} GB: checkpoints {gb['checkpoints']:.2f} GB, "
            f"out-of-fold {gb['oof']:.2f} GB, test probabilities {gb['test_probs']:.2f} GB "
            "(--keep-checkpoints K and --keep-oof K bound them)")  # fmt: skip
    if best:
        log(f"best: trial {best['number']} CV mIoU {best['miou']:.4f} -> ./run.sh predict best:{study.study_name}")
        if runs_dir is not None and best["run"] and _background_only(Path(runs_dir) / best["run"]):
            best["background_only"] = True
            log(
                f"warning: trial {best['number']} predicts (almost) only background: under the per-image mIoU that "
                "can beat models that have not learned yet; train longer (--epochs) or rank by --set metric=dataset"
            )
    return {
        "study": study.study_name,
        "storage": safe_url(url),
        "trials": len(trials),
        **counts,
        "trials_table": [_row(t) for t in order],
        "epochs": epochs_spent(study),
        "best": best,
        "dir": str(out_dir),
        **({"disk_bytes": disk} if disk is not None else {}),
    }


def _background_only(run_dir: Path) -> bool:
    try:
        return bool(read_json(run_dir / "results.json").get("background_only"))
    except (OSError, ValueError, AttributeError):
        return False


def _trained(trial: FrozenTrial) -> str:
    """`all folds`, or `pruned after fold k` (its value is then partial)."""
    pruned = trial.user_attrs.get(PRUNED)
    return f"pruned, {pruned['after_fold']} folds" if pruned else "all folds"


def _row(trial: FrozenTrial) -> dict[str, Any]:
    """A trial of the `search --json` result, best first; `pruned_after_fold` is None for a fully trained one."""
    pruned = trial.user_attrs.get(PRUNED)
    return {
        "number": trial.number,
        "value": trial.value,
        "pruned_after_fold": pruned["after_fold"] if pruned else None,
        "epochs": epochs_trained(trial),
        "run": trial.user_attrs.get("run"),
        "params": trial_params(trial),
    }
