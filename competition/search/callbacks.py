"""What a worker does after each trial: report progress, keep out-of-fold probabilities (and, when asked,
checkpoints) of the best trials only, stop at the epoch budget, requeue trials of dead processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from competition.core.log import Log
from competition.core.progress import Steps
from competition.core.progress import eta as format_eta
from competition.core.runs import run_name, update_run
from competition.search.orphans import fail_orphaned_trials
from competition.search.trials import PRUNED, best_full, epochs_trained, ranked


def progress_callback(
    steps: Steps, log: Log, budget: int | None = None, spent_before: int = 0
) -> Callable[[optuna.Study, Any], None]:
    """After each of this process's trials: `trial n complete: value; k/N done, ETA; best so far`. Under an epoch
    budget the search ends at the budget, not at the --trials cap, so then progress and ETA count epochs (all
    workers' epochs since this search started, at the rate seen so far)."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        steps.tick()
        done, total = steps.done, steps.total
        if budget:
            spent = epochs_spent(study) - spent_before
            rate = spent / max(time.time() - steps.start, 1e-9)
            left = max(budget - spent, 0)
            done_text = f"{min(spent, budget)}/{budget} epochs"
            eta = f", ETA {format_eta(left / rate)}" if left and rate > 0 and done < total else ""
        else:
            done_text = f"{min(done, total)}/{total} done"
            eta = f", ETA {steps.eta()}" if done < total else ""
        top = best_full(study)
        best = f"best {top.value:.4f} (trial {top.number})" if top else "no complete trial yet"
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        state = trial.state.name.lower()
        if PRUNED in trial.user_attrs:
            state, value = f"pruned after {trial.user_attrs[PRUNED]['after_fold']} folds", f"{value} (partial)"
        log(f"trial {trial.number} {state}: {value}; {done_text}{eta}; {best}")

    return callback


def _outside_best(study: optuna.Study, keep: int, runs_dir: Path) -> Iterator[tuple[int, Path]]:
    """(number, run folder) of the study's complete trials outside the best `keep` (pruned ones rank below every
    fully trained one). A trial once outside stays outside: later trials can only push it further down."""
    for old in ranked(study.get_trials(deepcopy=False))[keep:]:
        yield old.number, runs_dir / run_name(old.user_attrs["run"], f"study {study.study_name} trial {old.number}")


def keep_oof_callback(keep: int, runs_dir: Path, log: Log) -> Callable[[optuna.Study, Any], None]:
    """After each trial, delete the out-of-fold probabilities of complete trials outside the best `keep`.

    They are the big files of a run (images x classes x 256 x 256 uint8: about 0.5 GB for 480 images and 17
    classes, 2.4 GB for the full competition); only ensembling with fitted weights reads them. Checkpoints stay
    (unless --keep-checkpoints), so every complete trial can still be predicted.
    """
    return _keep_best(keep, runs_dir, log, "fold_*/oof.*", "oof_removed", "out-of-fold probabilities")


def keep_checkpoints_callback(keep: int, runs_dir: Path, log: Log) -> Callable[[optuna.Study, Any], None]:
    """After each trial, delete the fold checkpoints of complete trials outside the best `keep` (--keep-checkpoints):
    a VGG16 FCN's are ~135 MB per fold, so 100 trials x 5 folds would fill 67 GB. Their scores, curves and
    (when predicted) test probabilities stay; `predict` of such a trial says why it cannot."""
    return _keep_best(keep, runs_dir, log, "fold_*/best.pt", "checkpoints_removed", "checkpoints")


def _keep_best(
    keep: int, runs_dir: Path, log: Log, pattern: str, field: str, what: str
) -> Callable[[optuna.Study, Any], None]:
    """Delete the files `pattern` of the run folders of complete trials outside the best `keep`; run.json's
    `field` says why."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        for number, run_dir in _outside_best(study, keep, runs_dir):
            files = list(run_dir.glob(pattern))
            if not files:
                continue
            for path in files:
                path.unlink(missing_ok=True)
            update_run(run_dir, **{field: f"not among the best {keep} trials of study {study.study_name}"})
            log(f"trial {number}: not among the best {keep}; its {what} were deleted")

    return callback


def budget_callback(budget: int, spent_before: int, log: Log) -> Callable[[optuna.Study, Any], None]:
    """Stop starting trials once this search has trained `budget` epochs (pruned trials count what they ran)."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        spent = epochs_spent(study) - spent_before
        if spent >= budget:
            log(f"epoch budget reached: {spent} of {budget} epochs trained; no new trials")
            study.stop()

    return callback


def orphans_callback(log: Log) -> Callable[[optuna.Study, Any], None]:
    """After each trial (before the next is started): fail and requeue the trials of dead processes."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        fail_orphaned_trials(study, log)

    return callback


def epochs_spent(study: optuna.Study) -> int:
    """Training epochs all trials used: the search's cost."""
    return sum(epochs_trained(t) for t in study.get_trials(deepcopy=False))
