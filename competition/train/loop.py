"""K-fold cross-validated training of one model configuration.

`train_run` trains every fold of the fold file (or one), keeps each fold's best checkpoint by the ranking
metric (per-image or dataset mIoU at 256 x 256), saves that checkpoint's out-of-fold probabilities (uint8)
and writes the run folder described in competition.core.runs. Interrupted runs resume: finished folds are skipped
and an unfinished fold continues from its last epoch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from competition.core.checkpoint import load_checkpoint, load_weights, save_checkpoint
from competition.core.errors import UserError, first_line
from competition.core.fileio import read_json, write_csv, write_json
from competition.core.interrupt import check as check_interrupt
from competition.core.locks import run_folder_lock
from competition.core.log import Log
from competition.core.progress import Steps, progress
from competition.core.runs import fold_dir, now, update_run, write_config
from competition.data import SegmentationDataset
from competition.predict import amp_dtype, autocast
from competition.submit import MeanIoU, Scores, image_values, ranking_value
from competition.train.averaging import WeightAverage
from competition.train.evaluate import evaluate
from competition.train.hooks import EpochHook, FoldHook, Hooks
from competition.train.losses import MixedLoss
from competition.train.optim import build_optimizer, build_scheduler, freeze_encoder
from competition.train.setup import DeviceBatches, Setup, build_model, class_weights, fold_indices, loaders, prepare
from competition.train.summary import summarize_run
from competition.train.trackers import TrackerError, open_trackers


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite (the run is marked failed with this reason)."""


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
    """
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
        if result_path.exists():
            done[fold] = read_json(result_path)
            log(f"fold {fold}: finished earlier (mIoU {done[fold]['miou']:.4f}), skipped")
        else:

            def running_mean(epoch: int, best: float, row: dict[str, Any], fold: int = fold) -> None:
                if hooks.on_epoch:
                    hooks.on_epoch(fold, epoch, float(np.mean([r["miou"] for r in done.values()] + [best])), row)

            done[fold] = train_fold(setup, fold, fold_dir(run_dir, fold), running_mean)
        if hooks.on_fold:
            hooks.on_fold(fold, done[fold])
        check_interrupt()
    return done


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Fold:
    """The objects of one fold's training, and its state (saved to last.pt after every epoch)."""

    index: int
    out: Path
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: DeviceBatches  # batches on the device, normalised there
    val_loader: DataLoader
    val_set: SegmentationDataset
    state: dict[str, Any]
    init: str  # what the weights were initialised from (`<source>: ...`)
    average: WeightAverage  # EMA / SWA (or nothing)
    scaler: torch.amp.GradScaler | None  # fp16 mixed precision only


def train_fold(
    setup: Setup, fold: int, out: Path, on_epoch: Callable[[int, float, dict[str, Any]], None]
) -> dict[str, Any]:
    """Train one fold (resuming from out/last.pt when present); returns the fold's result."""
    cfg = setup.cfg
    f = build_fold(setup, fold, out)
    epochs = int(cfg["epochs"])
    if setup.steps is not None:
        setup.steps.skip(f.state["epoch"])  # epochs a resumed fold had done
    for epoch in range(f.state["epoch"], epochs):
        seed_everything(int(cfg["seed"]) * 1000 + fold * 100 + epoch)
        # the shuffle order is a function of the epoch alone, so a resumed fold replays the same batches
        f.train_loader.loader.generator.manual_seed(int(cfg["seed"]) * 1000 + fold * 100 + epoch)
        start = time.time()
        desc = f"fold {fold} epoch {epoch + 1}/{epochs}"
        train_loss = train_epoch(f, setup, desc)
        f.average.after_epoch(f.model, epoch + 1)
        scores, val_loss = evaluate(f.average.evaluated(f.model), f.val_loader, setup)
        record_epoch(f, setup, scores, train_loss, val_loss, start, desc)
        setup.trackers.epoch(fold, f.state["history"][-1])
        check_interrupt()
        on_epoch(epoch, f.state["best"], f.state["history"][-1])
        if cfg["early_stop"] and f.state["stale"] >= int(cfg["early_stop"]):
            setup.log(f"fold {fold}: early stop after {epoch + 1} epochs ({f.state['stale']} without improvement)")
            if setup.steps is not None:
                setup.steps.skip(epochs - epoch - 1)
            break
    result = finish_fold(f, setup)
    overlays = sorted(out.glob("overlay_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    setup.trackers.images(fold, overlays, result["best_epoch"])  # the kept checkpoint's predictions
    setup.trackers.fold_done(fold, result)
    return result


def build_fold(setup: Setup, fold: int, out: Path) -> Fold:
    """Data, model, loss, optimiser and schedule of a fold; its state from out/last.pt when resuming."""
    cfg, device = setup.cfg, setup.device
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(int(cfg["seed"]) + fold)
    train_loader, val_loader, val_set = loaders(setup, fold)
    model, init = build_model(setup)
    loss_weights = class_weights(setup, setup.folds.train_ids(fold))
    loss_fn = MixedLoss(cfg["loss"], setup.classes.ignore_index, loss_weights).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, math.ceil(len(train_loader) / int(cfg["accum"])))
    average = WeightAverage(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype(device, cfg["amp"]) == torch.float16 else None
    state = {"epoch": 0, "best": -1.0, "best_epoch": -1, "stale": 0, "history": []}
    if (out / "last.pt").exists():
        saved = load_checkpoint(out / "last.pt", device)
        load_weights(model, saved, out / "last.pt")
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        average.load_state_dict(saved.get("average"))
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state = saved["state"]
        setup.log(f"fold {fold}: resuming after epoch {state['epoch']} (best {state['best']:.4f})")
    loaders_ = (train_loader, val_loader, val_set)
    return Fold(fold, out, model, loss_fn, optimizer, scheduler, *loaders_, state, init, average, scaler)


def record_epoch(
    f: Fold, setup: Setup, scores: Scores, train_loss: float, val_loss: float, start: float, desc: str
) -> None:
    """After an epoch: best checkpoint (if it improved), history, resume state, metrics.csv and a log line."""
    state, epoch = f.state, f.state["epoch"] + 1
    value = ranking_value(scores, setup.cfg["metric"])
    improved = value > state["best"]
    if improved:
        state.update(best=value, best_epoch=epoch, stale=0)
        kept = f.average.evaluated(f.model).state_dict()
        save_checkpoint({"model": kept, "epoch": epoch, "score": value}, f.out / "best.pt")
    else:
        state["stale"] += 1
    state["epoch"] = epoch
    state["history"].append(
        {
            "fold": f.index,
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "miou_image": scores.miou_image,
            "miou_dataset": scores.miou_dataset,
            "pixel_accuracy": scores.pixel_accuracy,
            "foreground_ratio": scores.foreground_ratio,
            "lr": f.optimizer.param_groups[0]["lr"],
            "seconds": round(time.time() - start, 2),
        }
    )
    resume = {"optimizer": f.optimizer.state_dict(), "scheduler": f.scheduler.state_dict(), "state": state}
    resume |= {"average": f.average.state_dict(), "scaler": f.scaler.state_dict() if f.scaler else None}
    save_checkpoint({"model": f.model.state_dict(), **resume}, f.out / "last.pt")
    write_csv(pd.DataFrame(state["history"]), f.out / "metrics.csv")
    eta = ""
    if setup.steps is not None:
        setup.steps.tick()
        eta = f", run ETA {setup.steps.eta()}"
    setup.log(
        f"{desc}: loss {train_loss:.4f} val_loss {val_loss:.4f} mIoU(image) {scores.miou_image:.4f} "
        f"mIoU(dataset) {scores.miou_dataset:.4f} best {state['best']:.4f}{' *' if improved else ''} "
        f"[{time.time() - start:.1f}s{eta}]"
    )


def finish_fold(f: Fold, setup: Setup) -> dict[str, Any]:
    """The best checkpoint's scores and out-of-fold probabilities; result.json; the resume state removed."""
    cfg = setup.cfg
    keep_swa(f, setup)
    best = load_checkpoint(f.out / "best.pt", setup.device)
    load_weights(f.model, best, f.out / "best.pt")
    oof_dir = f.out if cfg["save_oof"] else None
    metric = MeanIoU(setup.classes.num_classes, setup.classes.ignore_index, setup.device, keep_images=True)
    scores, _ = evaluate(f.model, f.val_loader, setup, oof_dir=oof_dir, val_set=f.val_set, metric=metric)
    result = {
        "fold": f.index,
        "miou": ranking_value(scores, cfg["metric"]),
        "metric": cfg["metric"],
        **scores.to_dict(),
        "best_epoch": best["epoch"],
        "epochs_run": f.state["epoch"],
        "n_train": len(setup.folds.train_ids(f.index)),
        "n_val": len(setup.folds.val_ids[f.index]),
        "init": f.init,
        "image_scores": image_scores(setup, f.val_set, metric.image_confusions()),
    }
    write_json(f.out / "result.json", result)
    (f.out / "last.pt").unlink(missing_ok=True)
    setup.log(f"fold {f.index}: best epoch {best['epoch']}, mIoU {result['miou']:.4f} ({cfg['metric']})")
    return result


def image_scores(setup: Setup, val_set: SegmentationDataset, cms: torch.Tensor) -> dict[str, list]:
    """Each validation image's share of the fold's ranking mIoU (submit.image_values), keyed by the image's
    index in train_all: a step id that pairs the same image across runs (search's Wilcoxon pruner)."""
    order = {im.id: i for i, im in enumerate(setup.data.coco("train_all").images)}
    values = image_values(cms, setup.cfg["metric"]).tolist()
    pairs = [(order[im.id], v) for im, v in zip(val_set.images, values, strict=True) if math.isfinite(v)]
    return {"steps": [s for s, _ in pairs], "values": [v for _, v in pairs]}


def keep_swa(f: Fold, setup: Setup) -> None:
    """With SWA: its average (BatchNorm recomputed) becomes the fold's kept checkpoint."""
    swa = f.average.final(f.model, f.train_loader, setup.device)
    if swa is None:
        return
    scores, _ = evaluate(swa, f.val_loader, setup)
    value = ranking_value(scores, setup.cfg["metric"])
    save_checkpoint({"model": swa.state_dict(), "epoch": f.state["epoch"], "score": value}, f.out / "best.pt")
    setup.log(
        f"fold {f.index}: SWA of the last {f.average.swa} epochs: mIoU {value:.4f} (best single epoch "
        f"{f.state['best']:.4f}); the SWA model is kept"
    )


def train_epoch(f: Fold, setup: Setup, desc: str) -> float:
    """One pass over the training fold; returns the mean loss (NonFiniteLoss on NaN/inf).

    The optimiser steps every `accum` batches (and after the last one), through the gradient scaler with fp16.
    """
    cfg, device = setup.cfg, setup.device
    model, loss_fn, optimizer = f.model, f.loss_fn, f.optimizer
    accum, batches = int(cfg["accum"]), len(f.train_loader)
    model.train()
    freeze_encoder(model, f.state["epoch"] < int(cfg["freeze_encoder"]))
    optimizer.zero_grad(set_to_none=True)
    total, count = 0.0, 0
    for i, (images, targets) in enumerate(progress(f.train_loader, desc=desc, leave=False, unit="batch")):
        check_interrupt()  # a Ctrl-C swallowed by a finaliser is raised here
        images = images.to(device, non_blocking=True)
        if cfg["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, cfg["amp"]):
            logits = model(images)
        loss = loss_fn(logits.float(), targets)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"{desc}: loss is {loss.item()} (lr {optimizer.param_groups[0]['lr']:.3g})")
        scaled = loss / accum
        (f.scaler.scale(scaled) if f.scaler else scaled).backward()
        if (i + 1) % accum == 0 or i + 1 == batches:
            optimizer_step(f, cfg)
        total += loss.item() * len(images)
        count += len(images)
    return total / max(1, count)


def optimizer_step(f: Fold, cfg: dict[str, Any]) -> None:
    """Clip (after unscaling), step the optimiser (through the scaler), the schedule and the EMA."""
    if f.scaler is not None:
        f.scaler.unscale_(f.optimizer)
    if cfg["grad_clip"]:
        torch.nn.utils.clip_grad_norm_(f.model.parameters(), float(cfg["grad_clip"]))
    if f.scaler is not None:
        f.scaler.step(f.optimizer)
        f.scaler.update()
    else:
        f.optimizer.step()
    f.optimizer.zero_grad(set_to_none=True)
    f.scheduler.step()
    f.average.after_step(f.model)
