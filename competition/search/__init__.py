"""Optuna hyperparameter search whose objective is the k-fold CV mIoU of a training run.

Each trial samples settings from the model family's search space (declared beside its registration in
models/registry.py, or `--space FILE`), trains every fold with competition.train.train_run, and returns the
CV mean of the ranking metric. The model's default configuration is enqueued as trial 0, so a search never
ends worse than the default.

Pruning across folds (search/pruners.py, the table; search/reports.py, what a trial reports). Folds always run
in the same order. `median` and `hyperband` read the *running CV mean* (finished folds' scores and the current
fold's best so far) after every epoch at step `fold * epochs + epoch`. `wilcoxon` reads, after each finished
fold, every validation image's score at step = its index in train_all, and stops a trial that is worse than the
best fully trained trial image by image (one-sided paired Wilcoxon test); inside a fold it also stops a trial
that still predicts only background after a third of its epochs. The default trial 0 is never pruned. A pruned
trial ends COMPLETE with an honest partial value (its paired estimate, or its running CV mean), marked `pruned`,
so the sampler learns from it; rankings (search/trials.py) put it below every fully trained trial.

Samplers (search/samplers.py): tpe (multivariate, group, constant liar, set explicitly), gp, random, qmc; the
study stores its pruner and sampler, and a search that names others says so in one line.

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
from competition.search.pruners import PRUNERS, make_pruning
from competition.search.samplers import SAMPLERS, make_sampler
from competition.search.space import check_space, default_params, load_space, suggest, trial_params
from competition.search.storage import open_storage, safe_url, storage_url
from competition.search.storage import serve_proxy as serve_storage_proxy
from competition.search.study import StudySpec, open_study, prepare_study
from competition.search.trials import best_full, is_full, is_pruned, ranked
from competition.search.trials import count as count_trials
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
    "serve_storage_proxy",
    "safe_url",
    "storage_url",
    "PRUNERS",
    "make_pruning",
    "SAMPLERS",
    "make_sampler",
    "StudySpec",
    "open_study",
    "prepare_study",
    "best_full",
    "count_trials",
    "is_full",
    "is_pruned",
    "ranked",
    "SearchJob",
    "launch",
    "run_worker",
    "split_trials",
]
