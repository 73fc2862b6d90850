"""K-fold cross-validated training of one model configuration.

`train_run` trains every fold of the fold file (or one; competition.train.fold), keeps each fold's checkpoint
by the ranking metric (per-image or dataset mIoU at 256 x 256), saves that checkpoint's out-of-fold
probabilities (uint8) and writes the run folder described in competition.core.runs. Interrupted runs resume:
finished folds are skipped and an unfinished fold continues from its last epoch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError, first_line
from competition.core.fileio import read_json
from competition.core.interrupt import check as check_interrupt
from competition.core.locks import run_folder_lock
from competition.core.log import Log
from competition.core.progress import Steps
from competition.core.runs import fold_dir, now, update_run, write_config
from competition.train.distributed import Ranks, check_gpus, launch
from competition.train.fold import NonFiniteLoss, train_fold
from competition.train.hooks import EpochHook, FoldHook, Hooks
from competition.train.setup import Setup, fold_indices, prepare
from competition.train.summary import summarize_run
from competition.train.trackers import TrackerError, open_trackers

__all__ = ["NonFiniteLoss", "OutOfMemory", "train_run"]


class OutOfMemory(UserError):
    """The GPU ran out of memory (after the one retry with half the batch size that `oom=halve` allows)."""


def train_run(
    cfg: dict[str, Any],
    run_dir: Path,
    log: Log = print,
    on_epoch: EpochHook | None = None,
    on_fold: FoldHook | None = None,
) -> dict[str, Any]:
    """Train all (remaining) folds of a run; returns the results dictionary (also written to results.json).

    The run folder is locked meanwhile: a second process cannot train (resume) it while this one lives.
    With setting gpus=N each fold is trained by N processes (train/distributed); this one is rank 0.
    """
    check_gpus(cfg)
    with run_folder_lock(run_dir):
        remove_stale_temporaries(Path(run_dir))
        try:
            return _train_or_halve(cfg, Path(run_dir), log, Hooks(on_epoch, on_fold))
        except (NonFiniteLoss, OutOfMemory, TrackerError) as e:
            update_run(run_dir, status="failed", reason=str(e))
            raise
        except ValueError as e:  # BatchNorm over one value per channel: a setting to change, not a bug
            if "more than 1 value per channel" not in str(e):
                raise
            message = (f"--batch-size {cfg['batch_size']}: {cfg['model']} has BatchNorm over pooled features, "
                       "which needs at least 2 images per batch in training; use --batch-size 2 or more")  # fmt: skip
            update_run(run_dir, status="failed", reason=message)
            raise UserError(message) from None


def _train_or_halve(cfg: dict[str, Any], run_dir: Path, log: Log, hooks: Hooks) -> dict[str, Any]:
    """Train; on CUDA out of memory with `oom=halve`, once more with half the batch size (OutOfMemory else)."""
    try:
        return _train_locked(cfg, Path(run_dir), log, hooks)
    except torch.cuda.OutOfMemoryError as e:
        if cfg.get("oom") != "halve" or int(cfg["batch_size"]) < 2:
            raise OutOfMemory(oom_message(cfg, e)) from None
        smaller = {**cfg, "batch_size": int(cfg["batch_size"]) // 2, "oom": "fail"}  # retried once only
        log(f"{oom_message(cfg, e)}; oom=halve: retrying the unfinished folds with batch size "
            f"{smaller['batch_size']}")  # fmt: skip
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for last in Path(run_dir).glob("fold_*/last.pt"):  # its optimiser steps were for the old batch size
            last.unlink()
        update_run(run_dir, oom_retry={"batch_size": [int(cfg["batch_size"]), smaller["batch_size"]]})
        try:
            return _train_locked(smaller, Path(run_dir), log, hooks)
        except torch.cuda.OutOfMemoryError as again:
            raise OutOfMemory(oom_message(smaller, again)) from None


def oom_message(cfg: dict[str, Any], e: BaseException) -> str:
    first = first_line(e, 160)
    return f"CUDA out of memory at batch size {cfg['batch_size']} ({first}); try --batch-size or --set oom=halve"


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed trainer left in the run's fold folders (never read; the lock is ours now)."""
    for tmp in run_dir.glob("fold_*/.*.tmp"):
        tmp.unlink(missing_ok=True)


def _train_locked(cfg: dict[str, Any], run_dir: Path, log: Log, hooks: Hooks) -> dict[str, Any]:
    write_config(run_dir, cfg)
    setup = prepare(cfg, run_dir.parent, log)
    previous = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    info = update_run(
        run_dir,
        id=run_dir.name,
        model=cfg["model"],
        status="running",
        created=previous.get("created", now()),
        data=str(cfg["data"]),
        classes=list(setup.classes.names),
        device=str(setup.device),
    )
    indices = fold_indices(cfg, setup.folds)
    pending = [f for f in indices if not (fold_dir(run_dir, f) / "result.json").exists()]
    setup.steps = Steps(len(pending) * int(cfg["epochs"]), f"run {run_dir.name}", "epoch")
    setup.trackers = open_trackers(cfg, run_dir, info, log)
    stopped: list[BaseException] = []  # what a hook raised to stop the run (pruning)
    try:
        with launch(cfg, setup.device, helper_rank, (cfg, str(run_dir), pending)) as ranks:
            setup.ranks, setup.device = ranks, ranks.device
            if ranks.world > 1:
                log(f"data parallel: {ranks.world} processes per fold on {ranks.device.type}, global batch "
                    f"{cfg['batch_size']} ({int(cfg['batch_size']) // ranks.world} per process)")  # fmt: skip
            done = _train_folds(setup, run_dir, indices, hooks.recording(stopped))
    except BaseException as e:  # pruned or interrupted: KILLED; an error: FAILED
        failed = not stopped and isinstance(e, Exception)
        setup.trackers.end("FAILED" if failed else "KILLED")
        if failed:  # whatever it was, the run folder says so (never left "running")
            update_run(run_dir, status="failed", reason=first_line(e), finished=now())
        raise
    finally:
        setup.steps.close()
    results = summarize_run(run_dir, cfg, setup.classes, [done[f] for f in indices], log, setup.trackers)
    update_run(run_dir, status="complete", finished=now())
    return results


def _train_folds(setup: Setup, run_dir: Path, indices: list[int], hooks: Hooks) -> dict[int, dict[str, Any]]:
    """Every fold's result: read when finished earlier, else trained (or resumed) now."""
    log = setup.log
    done: dict[int, dict[str, Any]] = {}
    for fold in indices:
        result_path = fold_dir(run_dir, fold) / "result.json"
        trained = not result_path.exists()
        if not trained:
            done[fold] = read_json(result_path)
            log(f"fold {fold}: finished earlier (mIoU {done[fold]['miou']:.4f}), skipped")
        else:

            def running_mean(epoch: int, best: float, row: dict[str, Any], fold: int = fold) -> None:
                if hooks.on_epoch:
                    hooks.on_epoch(fold, epoch, float(np.mean([r["miou"] for r in done.values()] + [best])), row)

            done[fold] = train_fold(setup, fold, fold_dir(run_dir, fold), running_mean)
        # the other ranks wait for this fold's word only when they trained it (a skipped fold: no message)
        with setup.ranks.leading() if trained else contextlib.nullcontext():
            if hooks.on_fold:
                hooks.on_fold(fold, done[fold])
            check_interrupt()
        if trained:
            setup.ranks.agree()  # the other ranks go on to the next fold (or stop, told by leading())
    return done


def helper_rank(ranks: Ranks, cfg: dict[str, Any], run_dir: str, pending: list[int]) -> None:
    """Rank 1..N-1 of a data-parallel run (train/distributed): trains rank 0's pending folds with it, writes
    nothing, logs nothing."""
    setup = prepare(cfg, Path(run_dir).parent, lambda message: None)
    setup.ranks, setup.device = ranks, ranks.device
    for fold in pending:
        train_fold(setup, fold, fold_dir(Path(run_dir), fold), lambda epoch, best, row: None)
        ranks.agree()
