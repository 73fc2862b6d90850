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
(competition.owners) and records it in every trial it runs; before each new trial a process fails the trials
whose owner is gone and queues each for one retry, which resumes the failed trial's run folder (finished folds
are kept). A trial of a live owner is never touched. Owners on other machines are judged by Optuna's heartbeat
(server databases only).

Fixed settings: every setting the user gave (flag, --set, --config) is taken out of the search space and pinned
in every trial; the study stores them, and continuing it with other values is refused unless --force.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from competition.config import check_key, check_setting, differences, read_config_file, validate
from competition.errors import UsageError, UserError
from competition.leaderboard import short
from competition.owners import OwnerLock, claim_if_dead
from competition.runs import update_run

Log = Callable[[str], None]
SPACE_TYPES = ("float", "int", "categorical")
HEARTBEAT_SECONDS = 60
MAX_RETRY = 1  # a trial whose owner died is retried once
# A RUNNING trial with no owner record (its process died between creating it and recording itself, or an older
# version ran it) is orphaned once it is this old.
UNOWNED_GRACE_SECONDS = 120


# --------------------------------------------------------------------------- storage


def storage_url(spec: str | None, runs_dir: Path) -> str:
    """The storage to use: --storage as given, else an SQLite file in the runs folder."""
    if spec:
        return spec
    runs_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(runs_dir / 'optuna.db').resolve()}"


def safe_url(url: str) -> str:
    """The URL with any password hidden, for logs and JSON."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: show only its scheme
        return url.split(":", 1)[0] + ":***"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL; server databases get a heartbeat that fails and retries dead trials."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        if url.startswith("sqlite"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        # Optuna >= 4.9 names the stale-trial callback `heartbeat_stale_trial_callback`
        params = inspect.signature(optuna.storages.RDBStorage).parameters
        callback = (
            "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        )
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS, **{callback: retry_trial}
        )
    except Exception as e:  # bad URL, server down, missing driver: one line, no password
        raise UserError(f"--storage {safe_url(url)}: cannot open: {str(e).splitlines()[0][:200]}") from None


# --------------------------------------------------------------------------- search space


def load_space(path: Path) -> dict[str, Any]:
    """A search space file (YAML or JSON): setting -> {type: float|int|categorical, ...}."""
    space = read_config_file(path)
    check_space(space, str(path))
    return space


def check_space(space: dict[str, Any], source: str) -> None:
    """Every key a setting, every bound and choice a valid value of it (UsageError naming the key)."""
    for key, spec in space.items():
        check_key(key, source)
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise UsageError(f"{source}: {key}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise UsageError(f"{source}: {key}: categorical needs a non-empty 'choices' list")
            values = spec["choices"]
        else:
            if not all(k in spec for k in ("low", "high")):
                raise UsageError(f"{source}: {key}: {spec['type']} needs 'low' and 'high'")
            values = [spec["low"], spec["high"]]
        values = [check_setting(key, value, source) for value in values]
        if spec["type"] != "categorical" and not values[0] <= values[1]:
            raise UsageError(f"{source}: {key}: {spec['type']} needs 'low' <= 'high'")


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Sample one configuration from the space."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            params[key] = trial.suggest_categorical(key, spec["choices"])
    return params


def default_params(space: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The default configuration's value of every searched setting (inside the space's range or not)."""
    return {key: cfg.get(key) for key in space}


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The searched settings of a trial: sampled ones, or the default configuration's for trial 0."""
    return trial.params or trial.user_attrs.get("params", {})


# --------------------------------------------------------------------------- fixed settings


def pin_fixed(study: optuna.Study, fixed: dict[str, Any], data: str, force: bool, log: Log) -> dict[str, Any]:
    """The study's fixed settings after this search: those stored with it, updated by the user's.

    A study continued with other values for its fixed settings (or other data) would mix trials of different
    problems: refused (UsageError naming the keys) unless `force`. Settings fixed before and not given now stay.
    """
    stored = study.user_attrs.get("fixed")
    if stored is not None:
        changed = differences(stored, fixed)
        old_data = study.user_attrs.get("data")
        if old_data and old_data != data:
            changed.append(f"data ({old_data} -> {data})")
        if changed and not force:
            raise UsageError(
                f"study {study.study_name!r} was searched with other settings: {', '.join(changed)}; "
                "give the same values, choose another --study, or --force"
            )
        inherited = {k: v for k, v in stored.items() if k not in fixed}
        if inherited:
            log("fixed by the study: " + ", ".join(f"{k}={short(v)}" for k, v in inherited.items()))
        fixed = {**inherited, **fixed}
    if stored != fixed or study.user_attrs.get("data") != data:
        study.set_user_attr("fixed", fixed)
        study.set_user_attr("data", data)
    return fixed


def prepare_study(
    url: str,
    name: str,
    cfg: dict[str, Any],
    fixed: dict[str, Any],
    pruner: str,
    seed: int | None,
    runs_dir: Path,
    force: bool,
    log: Log,
) -> dict[str, Any]:
    """Create or continue the study: check its model, pin its fixed settings, queue the default as trial 0.

    Serialised between the processes of this machine, so searches started together queue one trial 0.
    Returns the study's fixed settings (stored ones included).
    """
    with setup_lock(runs_dir):
        study = create_study(url, name, cfg, pruner, seed)
        recorded = study.user_attrs.get("model")
        if recorded and recorded != cfg["model"]:
            raise UsageError(
                f"study {name!r} in {safe_url(url)} searches {recorded}, not {cfg['model']}; choose another --study"
            )
        study.set_user_attr("model", cfg["model"])
        fixed = pin_fixed(study, fixed, cfg["data"], force, log)
        if not study.trials:
            study.enqueue_trial({}, user_attrs={"default": True})
            log("trial 0 is the model's default configuration")
    return fixed


@contextlib.contextmanager
def setup_lock(runs_dir: Path) -> Iterator[None]:
    """Serialises the start-up of searches on one machine (creating a study, queueing its default trial)."""
    folder = Path(runs_dir) / ".owners"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- pruning


def make_pruner(kind: str, cfg: dict[str, Any]) -> optuna.pruners.BasePruner:
    epochs = int(cfg["epochs"])
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 3))
    if kind == "hyperband":
        folds = 1 if cfg["split"] == "official" else int(cfg["folds"])
        return optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 3), max_resource=folds * epochs)
    return optuna.pruners.NopPruner()


# --------------------------------------------------------------------------- study


def create_study(url: str, name: str, cfg: dict[str, Any], pruner: str, seed: int | None) -> optuna.Study:
    """Create (or load) the study once, before any worker starts (avoids the table-creation race)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is ours: one line per trial
    study = optuna.create_study(
        storage=open_storage(url),
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, cfg),
    )
    return study


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial once more (at most MAX_RETRY times), with its settings and run folder.

    As Optuna's RetryFailedTrialCallback, but the dead owner is not copied, so nobody mistakes the queued
    retry, once started, for the dead trial.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY:
        return
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("owner", "fail_reason")}
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

    Owners on this machine are judged by their OS lock (competition.owners), so a live trial, however long,
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


class Objective:
    """Train one configuration per trial; its value is the CV mean of the ranking metric."""

    def __init__(
        self, base: dict[str, Any], space: dict[str, Any], runs_dir: Path, study: str, owner: OwnerLock, log: Log
    ):
        self.base, self.space, self.runs_dir, self.study, self.log = base, space, runs_dir, study, log
        self.owner = owner

    def __call__(self, trial: optuna.Trial) -> float:
        from competition.train import NonFiniteLoss, remove_heavy_files, train_run

        trial.set_user_attr("owner", self.owner.info())
        if trial.user_attrs.get("default"):  # trial 0: exactly the default configuration, in the space or not
            params = default_params(self.space, self.base)
            trial.set_user_attr("params", params)
        else:
            params = suggest(trial, self.space)
        cfg = validate({**self.base, **params}, f"study {self.study}")
        run_dir = self._run_dir(trial)
        trial.set_user_attr("run", run_dir.name)
        trial.set_user_attr("dir", str(run_dir.resolve()))
        update_run(run_dir, trial={"study": self.study, "number": trial.number})
        log = self._prefixed(trial.number)
        log(f"start: {', '.join(f'{k}={short(v)}' for k, v in params.items())}")
        epochs = int(cfg["epochs"])

        def report(fold: int, epoch: int, running_mean: float) -> None:
            trial.report(running_mean, fold * epochs + epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"running CV mean {running_mean:.4f} after fold {fold} epoch {epoch + 1}")

        try:
            results = train_run(cfg, run_dir, log, on_epoch=report)
        except optuna.TrialPruned as e:
            self._end(trial, run_dir, "pruned", str(e))
            remove_heavy_files(run_dir)
            raise
        except torch.cuda.OutOfMemoryError as e:
            self._end(trial, run_dir, "pruned", f"CUDA out of memory: {str(e).splitlines()[0][:160]}")
            remove_heavy_files(run_dir)
            raise optuna.TrialPruned("CUDA out of memory") from None
        except NonFiniteLoss as e:
            self._end(trial, run_dir, "failed", str(e))
            remove_heavy_files(run_dir)
            raise
        update_run(run_dir, kind="trial")
        return float(results["miou"])

    def _run_dir(self, trial: optuna.Trial) -> Path:
        """A retried trial continues in the failed trial's folder, so its finished folds are kept."""
        previous = trial.user_attrs.get("run")
        if previous and (self.runs_dir / previous).is_dir():
            self._prefixed(trial.number)(f"retry of a failed trial: resuming {previous}")
            return self.runs_dir / previous
        return self.runs_dir / f"{self.study}-t{trial.number:03d}-{secrets.token_hex(2)}"

    def _end(self, trial: optuna.Trial, run_dir: Path, status: str, reason: str) -> None:
        trial.set_user_attr("fail_reason" if status == "failed" else "prune_reason", reason)
        update_run(run_dir, status=status, reason=reason)
        self._prefixed(trial.number)(f"{status}: {reason}")

    def _prefixed(self, number: int) -> Log:
        return lambda msg: self.log(f"[trial {number}] {msg}")


def progress_callback(total: int, log: Log) -> Callable[[optuna.Study, Any], None]:
    """After each of this process's trials: `trial n complete: value; k/N done; best so far`."""
    done = 0

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        done += 1
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        log(f"trial {trial.number} {trial.state.name.lower()}: {value}; {min(done, total)}/{total} done; {best}")

    return callback


def keep_oof_callback(keep: int, runs_dir: Path, log: Log) -> Callable[[optuna.Study, Any], None]:
    """After each trial, delete the out-of-fold probabilities of complete trials outside the best `keep`.

    They are the big files of a run (images x classes x 256 x 256 float16: about 1 GB for 480 images and 17
    classes, 5 GB for the full competition); only ensembling with fitted weights reads them. Checkpoints stay,
    so every complete trial can still be predicted.
    """

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
        for old in complete[keep:]:
            run_dir = runs_dir / old.user_attrs["run"]
            oofs = list(run_dir.glob("fold_*/oof.*"))
            if not oofs:
                continue
            for path in oofs:
                path.unlink(missing_ok=True)
            update_run(run_dir, oof_removed=f"not among the best {keep} trials of study {study.study_name}")
            log(f"trial {old.number}: not among the best {keep}; its out-of-fold probabilities were deleted")

    return callback


def budget_callback(budget: int, spent_before: int, log: Log) -> Callable[[optuna.Study, Any], None]:
    """Stop starting trials once this search has trained `budget` epochs (pruned trials count what they ran)."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        spent = epochs_spent(study) - spent_before
        if spent >= budget:
            log(f"epoch budget reached: {spent} of {budget} epochs trained; no new trials")
            study.stop()

    return callback


@dataclass(frozen=True)
class SearchJob:
    """What every worker of one search shares (picklable, sent to worker processes)."""

    url: str
    study: str
    base: dict[str, Any]  # resolved settings of the model's default configuration
    space: dict[str, Any]
    runs_dir: Path
    pruner: str = "median"
    seed: int | None = None
    timeout: float | None = None
    epoch_budget: int | None = None  # stop starting trials after this many training epochs (all workers)
    keep_oof: int = 5  # out-of-fold probabilities are kept for the best `keep_oof` complete trials
    epochs_before: int = 0  # epochs the study had trained when this search started


def orphans_callback(log: Log) -> Callable[[optuna.Study, Any], None]:
    """After each trial (before the next is started): fail and requeue the trials of dead processes."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        fail_orphaned_trials(study, log)

    return callback


def run_worker(job: SearchJob, n_trials: int, log: Log = print) -> None:
    """One worker: optimise `n_trials` trials of the study (a process of its own with --workers N)."""
    from competition.train import NonFiniteLoss

    study = create_study(job.url, job.study, job.base, job.pruner, job.seed)
    owner = OwnerLock(job.runs_dir)
    callbacks = [
        progress_callback(n_trials, log),
        keep_oof_callback(job.keep_oof, job.runs_dir, log),
        orphans_callback(log),
    ]
    if job.epoch_budget:
        callbacks.append(budget_callback(job.epoch_budget, job.epochs_before, log))
    try:
        fail_orphaned_trials(study, log)
        study.optimize(
            Objective(job.base, job.space, job.runs_dir, job.study, owner, log),
            n_trials=n_trials,
            timeout=job.timeout,
            catch=(NonFiniteLoss,),  # a NaN loss fails that trial (reason in its user attributes); search goes on
            callbacks=callbacks,
        )
    finally:
        owner.release()


def _worker_process(job: SearchJob, n_trials: int, index: int) -> None:
    """Entry point of a worker process: its log lines carry the worker's number."""

    def log(msg: str) -> None:
        print(f"[w{index}] {msg}", flush=True)

    run_worker(job, n_trials, log)


def split_trials(n: int, workers: int) -> list[int]:
    """N trials over W workers exactly: the first N % W workers take one more."""
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)]


def launch(job: SearchJob, n_trials: int, workers: int, log: Log) -> optuna.Study:
    """Run `n_trials` more trials of the prepared study (see `prepare`) with `workers` processes."""
    study = create_study(job.url, job.study, job.base, job.pruner, job.seed)
    started_with = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    job = replace(job, epochs_before=epochs_spent(study))
    budget = f" or until {job.epoch_budget} epochs are trained" if job.epoch_budget else ""
    log(f"study {job.study} on {safe_url(job.url)}: {started_with} finished trials; running {n_trials} more{budget}")
    job.runs_dir.mkdir(parents=True, exist_ok=True)
    shares = [s for s in split_trials(n_trials, workers) if s > 0]
    if len(shares) == 1:
        run_worker(job, shares[0], log)
        return study
    gpus = torch.cuda.device_count() if job.base["device"] != "cpu" else 0
    context = multiprocessing.get_context("spawn")
    processes = []
    for i, share in enumerate(shares):
        worker = replace(job, seed=None if job.seed is None else job.seed + i)  # distinct TPE streams
        env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i % gpus)  # round-robin, inherited by the child
        process = context.Process(target=_worker_process, args=(worker, share, i))
        process.start()
        processes.append(process)
        if gpus > 1:
            _restore_env("CUDA_VISIBLE_DEVICES", env_before)
        log(f"worker {i}: pid {process.pid}, {share} trials" + (f", GPU {i % gpus}" if gpus > 1 else ""))
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    bad = [p.exitcode for p in processes if p.exitcode]
    if bad:
        log(f"warning: {len(bad)} worker(s) exited with errors (exit codes {bad}); see their output above")
    return study


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def summarize(study: optuna.Study, url: str, out_dir: Path, log: Log, top: int = 10) -> dict[str, Any]:
    """Top-trials table, best_params.json, trials.csv and plots in the study folder; the --json result."""
    from competition.fileio import atomic_path, write_json
    from competition.study_plots import save_study_plots

    trials = study.get_trials(deepcopy=False)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    counts = {s: sum(1 for t in trials if t.state == s) for s in states}
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "trials.csv") as tmp:
        study.trials_dataframe().to_csv(tmp, index=False)
    best = None
    if complete:
        b = complete[0]
        best = {"miou": b.value, "params": trial_params(b), "run": b.user_attrs.get("run"), "number": b.number}
        write_json(out_dir / "best_params.json", best)
    save_study_plots(study, out_dir, log)

    log("")
    log(f"{'trial':>5} {'CV mIoU':>8}  {'run':<28} params")
    for t in complete[:top]:
        params = ", ".join(f"{k}={short(v)}" for k, v in trial_params(t).items())
        log(f"{t.number:>5} {t.value:>8.4f}  {t.user_attrs.get('run', ''):<28} {params}")
    log(
        f"study {study.study_name}: {len(trials)} trials ({counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed; {epochs_spent(study)} epochs trained); "
        f"folder {out_dir}"
    )
    if best:
        log(f"best: trial {best['number']} CV mIoU {best['miou']:.4f} -> ./run.sh predict best:{study.study_name}")
    return {
        "study": study.study_name,
        "storage": safe_url(url),
        "trials": len(trials),
        "complete": counts[TrialState.COMPLETE],
        "pruned": counts[TrialState.PRUNED],
        "failed": counts[TrialState.FAIL],
        "epochs": epochs_spent(study),
        "best": best,
        "dir": str(out_dir),
    }


def epochs_spent(study: optuna.Study) -> int:
    """Training epochs all trials used (one reported step per epoch): the search's cost."""
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))
