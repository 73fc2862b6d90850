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

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".callbacks": ("epochs_spent",),
        ".command": ("SearchRequest", "run_search"),
        ".orphans": ("fail_orphaned_trials",),
        ".plots": ("study_figures",),
        ".pruners": ("PRUNERS", "make_pruning"),
        ".samplers": ("SAMPLERS", "make_sampler"),
        ".space": ("check_space", "default_params", "load_space", "suggest", "trial_params"),
        ".storage": ("open_storage", "safe_url", "storage_url", "serve_storage_proxy=serve_proxy"),
        ".study": ("StudySpec", "open_study", "prepare_study"),
        ".trials": ("best_full", "is_full", "is_pruned", "ranked", "count_trials=count"),
        ".workers": ("SearchJob", "launch", "run_worker", "split_trials"),
    },
)
