"""Optuna hyperparameter search whose objective is the k-fold CV mIoU of a training run.

Each trial samples settings from the model family's search space (declared beside its registration in
models/registry.py, or `--space FILE`), trains every fold with competition.train.train_run, and returns the
CV mean of the ranking metric. The model's default configuration is enqueued as trial 0, so a search never
ends worse than the default.

Pruning across folds. After every epoch of every fold the trial reports the *running CV mean* (finished
folds' scores and the current fold's best so far) at global step `fold * epochs + epoch`, folds always in the
same order, so a step means the same amount of training in every trial and values are comparable. The default
MedianPruner stops a trial whose running mean is below the median of earlier trials at the same step: it has no
assumptions about the budget, works from a handful of trials (two start-up trials, a warm-up of a third of a
fold), and never kills the first trials, which fits searches of tens of expensive trials. Because the value
averages folds seen so far, an early fold that is merely hard does not look worse than it is for one trial and
not another: every trial sees the same folds at the same steps. Hyperband (`--pruner hyperband`) spends less on
poor trials but needs many more of them to be reliable; `none` trains every trial to the end.

Storage: an SQLite file in the runs folder by default; any Optuna RDB URL (PostgreSQL for several machines),
or `journal:PATH` for a journal file shared by processes on one machine. Any number of search processes may
work on one study, started by `--workers N` or by hand. Each process holds an OS lock for its life
(competition.core.locks) and records it in every trial it runs; before each new trial a process fails the trials
whose owner is gone and queues each for one retry, which resumes the failed trial's run folder (finished folds
are kept). A trial of a live owner is never touched. Owners on other machines are judged by Optuna's heartbeat
(server databases only).

Fixed settings: every setting the user gave (flag, --set, --config) is taken out of the search space and pinned
in every trial; the study stores them, and continuing it with other values is refused unless --force.

"""

from competition.search.callbacks import epochs_spent
from competition.search.command import SearchRequest, run_search
from competition.search.orphans import fail_orphaned_trials
from competition.search.plots import study_figures
from competition.search.space import check_space, default_params, load_space, suggest, trial_params
from competition.search.storage import open_storage, safe_url, storage_url
from competition.search.study import create_study, make_pruner
from competition.search.workers import SearchJob, launch, run_worker, split_trials

__all__ = [
    "epochs_spent",
    "SearchRequest",
    "run_search",
    "fail_orphaned_trials",
    "study_figures",
    "check_space",
    "default_params",
    "load_space",
    "suggest",
    "trial_params",
    "open_storage",
    "safe_url",
    "storage_url",
    "create_study",
    "make_pruner",
    "SearchJob",
    "launch",
    "run_worker",
    "split_trials",
]
