"""A trial's standing in its study. A pruned trial ends COMPLETE with an honest partial value (so the sampler
learns from it) and the user attribute `pruned` ({"after_fold", "epochs", "reason"}); older studies' pruned
trials are in state PRUNED. Rankings put every fully trained trial above every pruned one, whatever the values.
"""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

PRUNED = "pruned"  # the user attribute of a pruned trial


def is_pruned(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.PRUNED or PRUNED in trial.user_attrs


def is_full(trial: FrozenTrial) -> bool:
    """Complete and trained on every fold: a trial that may be ranked, predicted and compared with."""
    return trial.state == TrialState.COMPLETE and PRUNED not in trial.user_attrs and trial.value is not None


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trials with a value, best first: the fully trained ones, then the pruned ones by their partial value."""
    valued = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(valued, key=lambda t: (not is_full(t), -t.value))


def best_full(study: optuna.Study) -> FrozenTrial | None:
    """The best fully trained trial (not Optuna's best_trial, which a pruned trial's partial value may lead)."""
    full = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_full(t)]
    return max(full, key=lambda t: t.value) if full else None


def count(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """complete (fully trained), pruned, failed."""
    trials = list(trials)
    return {
        "complete": sum(1 for t in trials if is_full(t)),
        "pruned": sum(1 for t in trials if is_pruned(t)),
        "failed": sum(1 for t in trials if t.state == TrialState.FAIL),
    }


def epochs_trained(trial: FrozenTrial) -> int:
    """Training epochs a trial ran (its `epochs` attribute; older trials reported one step per epoch)."""
    return int(trial.user_attrs.get("epochs", len(trial.intermediate_values)))
