"""Running a search: `launch` starts N worker processes (or runs in this one), each optimising its share of the
trials with Optuna; `SearchJob` is what they share."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from competition.core.interrupt import interrupts
from competition.core.locks import OwnerLock
from competition.core.log import Log
from competition.core.progress import ENV as PROGRESS_ENV
from competition.core.progress import Steps
from competition.search.callbacks import (
    budget_callback,
    epochs_spent,
    keep_checkpoints_callback,
    keep_oof_callback,
    orphans_callback,
    progress_callback,
)
from competition.search.objective import Objective
from competition.search.orphans import fail_orphaned_trials
from competition.search.storage import safe_url
from competition.search.study import StudySpec, configure, open_study
from competition.train import NonFiniteLoss, OutOfMemory


@dataclass(frozen=True, kw_only=True)
class SearchJob:
    """What every worker of one search shares (picklable, sent to worker processes)."""

    study: StudySpec  # resolved: its pruner and sampler are named
    base: dict[str, Any]  # resolved settings of the model's default configuration
    space: dict[str, Any]
    runs_dir: Path
    timeout: float | None = None
    epoch_budget: int | None = None  # stop starting trials after this many training epochs (all workers)
    keep_oof: int = 5  # out-of-fold probabilities are kept for the best `keep_oof` complete trials
    keep_checkpoints: int | None = None  # checkpoints too, when set (else every complete trial keeps its own)
    epochs_before: int = 0  # epochs the study had trained when this search started


def run_worker(job: SearchJob, n_trials: int, log: Log = print, study: optuna.Study | None = None) -> None:
    """One worker: optimise `n_trials` trials of the study (a process of its own with --workers N, which opens
    the study itself; in this process, the study already open)."""
    study = configure(study, job.study, job.base) if study is not None else open_study(job.study, job.base)
    owner = OwnerLock(job.runs_dir)
    steps = Steps(n_trials, f"study {study.study_name}", "trial")  # a bar on a terminal; the ETA of the trial lines
    callbacks = [
        progress_callback(steps, log, job.epoch_budget, job.epochs_before),
        keep_oof_callback(job.keep_oof, job.runs_dir, log),
        orphans_callback(log),
    ]
    if job.keep_checkpoints is not None:
        callbacks.append(keep_checkpoints_callback(job.keep_checkpoints, job.runs_dir, log))
    if job.epoch_budget:
        callbacks.append(budget_callback(job.epoch_budget, job.epochs_before, log))
    try:
        fail_orphaned_trials(study, log)
        study.optimize(
            Objective(
                base=job.base,
                space=job.space,
                runs_dir=job.runs_dir,
                study=study.study_name,
                pruner=job.study.pruner,
                owner=owner,
                log=log,
            ),
            n_trials=n_trials,
            timeout=job.timeout,
            catch=(NonFiniteLoss, OutOfMemory),  # fails that trial (reason in its user attributes); search goes on
            callbacks=callbacks,
        )
    finally:
        steps.close()
        owner.release()


def _worker_process(job: SearchJob, n_trials: int, index: int) -> None:
    """Entry point of a worker process: its log lines carry the worker's number."""

    def log(msg: str) -> None:
        print(f"[w{index}] {msg}", flush=True)

    with interrupts():
        run_worker(job, n_trials, log)


def split_trials(n: int, workers: int) -> list[int]:
    """N trials over W workers exactly: the first N % W workers take one more."""
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)]


def launch(study: optuna.Study, job: SearchJob, n_trials: int, workers: int, log: Log) -> optuna.Study:
    """Run `n_trials` more trials of the prepared study (search.study.prepare_study) with `workers` processes."""
    started_with = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    job = replace(job, epochs_before=epochs_spent(study))
    budget = f" or until {job.epoch_budget} epochs are trained" if job.epoch_budget else ""
    spec = job.study
    log(f"study {spec.name} on {safe_url(spec.url)}: {started_with} finished trials; running {n_trials} more{budget}; "
        f"sampler {spec.sampler}, pruner {spec.pruner}")  # fmt: skip
    job.runs_dir.mkdir(parents=True, exist_ok=True)
    shares = [s for s in split_trials(n_trials, workers) if s > 0]
    if len(shares) == 1:
        run_worker(job, shares[0], log, study)
        return study
    gpus = torch.cuda.device_count() if job.base["device"] != "cpu" else 0
    context = multiprocessing.get_context("spawn")
    progress_before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "0"  # several processes' bars on one terminal would garble: lines only
    processes = []
    for i, share in enumerate(shares):
        seed = None if spec.sampler_seed is None else spec.sampler_seed + i  # distinct sampler streams
        worker = replace(job, study=replace(spec, sampler_seed=seed))
        env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = worker_devices(i, int(job.base.get("gpus", 1)), gpus)
        if gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = devices  # inherited by the child
        process = context.Process(target=_worker_process, args=(worker, share, i))
        process.start()
        processes.append(process)
        if gpus > 1:
            _restore_env("CUDA_VISIBLE_DEVICES", env_before)
        log(f"worker {i}: pid {process.pid}, {share} trials" + (f", GPU {devices}" if gpus > 1 else ""))
    _restore_env(PROGRESS_ENV, progress_before)
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


def worker_devices(worker: int, per_trial: int, gpus: int) -> str:
    """CUDA_VISIBLE_DEVICES of worker `worker`: `per_trial` consecutive devices, round-robin over `gpus`."""
    return ",".join(str((worker * per_trial + j) % max(1, gpus)) for j in range(per_trial))


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
