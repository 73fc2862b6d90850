"""Trials whose process died: found by their owner's OS lock (competition.core.locks), failed, and queued
for one retry that resumes the same run folder.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from competition.core.locks import claim_if_dead
from competition.core.log import Log

MAX_RETRY = 1  # a trial whose owner died is retried once
# attributes of the failed trial that are not the retry's: its process, its fate, the epochs it spent (the retry
# counts its own) and what it reported (the retry reports every fold again, finished ones included)
NOT_RETRIED = ("owner", "fail_reason", "epochs", "fold_scores")


# A RUNNING trial with no owner record (its process died between creating it and recording itself, or an older
# version ran it) is orphaned once it is this old.
UNOWNED_GRACE_SECONDS = 120


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, limit: bool = True) -> None:
    """Queue a failed trial once more (at most MAX_RETRY times; `limit=False`: always, for a Ctrl-C), with its
    settings and run folder.

    As Optuna's RetryFailedTrialCallback, but the dead owner is not copied, so nobody mistakes the queued
    retry, once started, for the dead trial.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if limit and len(history) > MAX_RETRY:
        return
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in NOT_RETRIED}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history},
        )
    )


def fail_orphaned_trials(study: optuna.Study, log: Log) -> int:
    """Fail (and queue for one retry) every RUNNING trial whose owner process is gone; returns how many.

    Owners on this machine are judged by their OS lock (competition.core.locks), so a live trial, however long,
    is never failed. Trials of other machines are left to the heartbeat of server databases.
    """
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner")
        gone = claim_if_dead(owner) if owner else contextlib.nullcontext(_unowned_too_long(trial))
        with gone as dead:
            if dead and _fail(study, trial._trial_id, "its process died (found RUNNING, owner gone)"):
                count += 1
                log(f"trial {trial.number}: its process died; failed and queued for one retry")
    return count


def _unowned_too_long(trial: optuna.trial.FrozenTrial) -> bool:
    started = trial.datetime_start
    if started is None:
        return False
    return (datetime.now(started.tzinfo) - started).total_seconds() > UNOWNED_GRACE_SECONDS


def _fail(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Fail a trial still RUNNING and queue its retry; False when someone else finished it first."""
    storage = study._storage
    if storage.get_trial(trial_id).state != TrialState.RUNNING:
        return False
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    retry_trial(study, storage.get_trial(trial_id))
    return True
