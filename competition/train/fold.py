"""One fold of a run: its data, model, optimiser and schedule (`Fold`, resumed from last.pt), the epochs
(training, validation every `val_every` epochs and always the last, the kept checkpoint: `keep` best or last),
and the fold's final pass (out-of-fold probabilities, every validation image's score) into result.json.

The final pass is the last epoch's validation when that epoch is the kept one (the usual case with a decaying
schedule): the same weights are never validated twice.
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
from competition.core.errors import UserError
from competition.core.fileio import write_csv, write_json
from competition.core.interrupt import check as check_interrupt
from competition.core.progress import progress
from competition.data import SegmentationDataset
from competition.predict import amp_dtype, autocast
from competition.submit import MeanIoU, Scores, image_values, ranking_value
from competition.train.averaging import WeightAverage
from competition.train.evaluate import evaluate
from competition.train.losses import MixedLoss
from competition.train.optim import build_optimizer, build_scheduler, freeze_encoder
from competition.train.setup import DeviceBatches, Setup, build_model, class_weights, loaders


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite (the run is marked failed with this reason)."""


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
    final: tuple[int, Scores, MeanIoU] | None = None  # the last epoch's validation, done as the final pass
    net: torch.nn.Module | None = None  # what training runs through: the model, or DDP over it (train/distributed)


def train_fold(
    setup: Setup, fold: int, out: Path, on_epoch: Callable[[int, float, dict[str, Any]], None]
) -> dict[str, Any]:
    """Train one fold (resuming from out/last.pt when present); returns the fold's result.

    With data parallelism every rank trains; rank 0 alone validates, saves and calls `on_epoch`, then tells the
    others whether to go on (train/distributed); their result is {}."""
    cfg, ranks = setup.cfg, setup.ranks
    f = build_fold(setup, fold, out)
    epochs = int(cfg["epochs"])
    every = val_interval(cfg["val_every"], len(f.train_loader.dataset), len(f.val_set))
    if setup.steps is not None:
        setup.steps.skip(f.state["epoch"])  # epochs a resumed fold had done
    for epoch in range(f.state["epoch"], epochs):
        seed_everything(int(cfg["seed"]) * 1000 + fold * 100 + epoch + ranks.seed_offset)
        # the shuffle order is a function of the epoch alone, so a resumed fold replays the same batches
        f.train_loader.loader.generator.manual_seed(int(cfg["seed"]) * 1000 + fold * 100 + epoch)
        start = time.time()
        desc = f"fold {fold} epoch {epoch + 1}/{epochs}"
        train_loss = train_epoch(f, setup, desc)
        f.average.after_epoch(f.model, epoch + 1)
        stop = False
        if ranks.main:
            with ranks.leading():
                stop = end_epoch(f, setup, epoch, every, (train_loss, start, desc), on_epoch)
        if ranks.agree(stop):
            break
    if not ranks.main:
        return {}
    with ranks.leading():
        result = finish_fold(f, setup)
        overlays = sorted(out.glob("overlay_*.png"), key=lambda p: int(p.stem.split("_")[1]))
        setup.trackers.images(fold, overlays, result["best_epoch"])  # the kept checkpoint's predictions
        setup.trackers.fold_done(fold, result)
    return result


def end_epoch(
    f: Fold, setup: Setup, epoch: int, every: int, trained: tuple[float, float, str], on_epoch: Callable
) -> bool:
    """After an epoch's training: validation (when due), the record, the hook; whether to stop early."""
    cfg, epochs = setup.cfg, int(setup.cfg["epochs"])
    train_loss, start, desc = trained
    scores, val_loss = None, math.nan
    if epoch + 1 == epochs and f.average.kind != "swa":  # the fold's final pass too, if this epoch is kept
        scores, val_loss = final_evaluation(f, f.average.evaluated(f.model), setup)
    elif validated(epoch + 1, epochs, every):
        scores, val_loss = evaluate(f.average.evaluated(f.model), f.val_loader, setup)
    record_epoch(f, setup, scores, train_loss, val_loss, start, desc)
    setup.trackers.epoch(f.index, f.state["history"][-1])
    check_interrupt()
    on_epoch(epoch, f.state["best"], f.state["history"][-1])
    if cfg["early_stop"] and f.state["stale"] >= int(cfg["early_stop"]):
        setup.log(f"fold {f.index}: early stop after {epoch + 1} epochs ({f.state['stale']} without improvement)")
        if setup.steps is not None:
            setup.steps.skip(epochs - epoch - 1)
        return True
    return False


VAL_COST = 0.5  # a validation image (forward, upsampling to 256 x 256, scoring) costs about half a training image
VAL_SHARE = 0.1  # val_every=auto keeps the validations near a tenth of the training time


def val_interval(setting: str | int, n_train: int, n_val: int) -> int:
    """The epochs between validations of setting `val_every`: auto = every epoch where validation is cheap (5
    folds: a quarter as many validation images as training ones), else sparser (2 folds: every 5th epoch)."""
    if setting != "auto":
        return int(setting)
    return max(1, round(VAL_COST * n_val / max(1, n_train) / VAL_SHARE))


def validated(epoch: int, epochs: int, every: int) -> bool:
    """Whether epoch `epoch` (from 1) of `epochs` is validated: every `every`-th and always the last (every=0:
    the last only)."""
    return epoch == epochs or (every > 0 and epoch % every == 0)


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
    net = setup.ranks.wrap(model, cfg)
    return Fold(fold, out, model, loss_fn, optimizer, scheduler, *loaders_, state, init, average, scaler, net=net)


def record_epoch(
    f: Fold, setup: Setup, scores: Scores | None, train_loss: float, val_loss: float, start: float, desc: str
) -> None:
    """After an epoch: the kept checkpoint (if this epoch is the best so far, or with keep=last the latest
    validated one), history, resume state, metrics.csv and a log line. `scores` is None for an epoch that was
    not validated (val_every): its row has no scores and nothing is kept."""
    state, epoch = f.state, f.state["epoch"] + 1
    value = ranking_value(scores, setup.cfg["metric"]) if scores is not None else math.nan
    improved = scores is not None and (value > state["best"] or setup.cfg["keep"] == "last")
    if improved:
        state.update(best=value, best_epoch=epoch, stale=0)
        kept = f.average.evaluated(f.model).state_dict()
        save_checkpoint({"model": kept, "epoch": epoch, "score": value}, f.out / "best.pt")
    elif scores is not None and state["best_epoch"] > 0:  # patience in epochs, checked where there is a score
        state["stale"] = epoch - state["best_epoch"]
    state["epoch"] = epoch
    nan = math.nan
    state["history"].append(
        {
            "fold": f.index,
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "miou_image": scores.miou_image if scores is not None else nan,
            "miou_dataset": scores.miou_dataset if scores is not None else nan,
            "pixel_accuracy": scores.pixel_accuracy if scores is not None else nan,
            "foreground_ratio": scores.foreground_ratio if scores is not None else nan,
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
    if scores is None:
        setup.log(f"{desc}: loss {train_loss:.4f} (not validated: val_every) [{time.time() - start:.1f}s{eta}]")
        return
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
    if f.final is not None and best["epoch"] == f.final[0]:  # the last epoch is kept: its pass was the final one
        scores, metric = f.final[1], f.final[2]
    else:
        load_weights(f.model, best, f.out / "best.pt")
        scores, _, metric = _final_pass(f, f.model, setup)
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


def final_evaluation(f: Fold, model: torch.nn.Module, setup: Setup) -> tuple[Scores, float]:
    """The last epoch's validation done as the fold's final pass (out-of-fold probabilities, overlays, every
    image's confusion), remembered in `f.final`: finish_fold uses it when this epoch is the kept one instead of
    validating the same weights once more (else it validates the kept checkpoint, rewriting the files)."""
    scores, val_loss, metric = _final_pass(f, model, setup)
    f.final = (f.state["epoch"] + 1, scores, metric)
    return scores, val_loss


def _final_pass(f: Fold, model: torch.nn.Module, setup: Setup) -> tuple[Scores, float, MeanIoU]:
    oof_dir = f.out if setup.cfg["save_oof"] else None
    metric = MeanIoU(setup.classes.num_classes, setup.classes.ignore_index, setup.device, keep_images=True)
    scores, val_loss = evaluate(model, f.val_loader, setup, oof_dir=oof_dir, val_set=f.val_set, metric=metric)
    return scores, val_loss, metric


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
    cfg, device, ranks = setup.cfg, setup.device, setup.ranks
    net = f.net if f.net is not None else f.model
    loss_fn, optimizer = f.loss_fn, f.optimizer
    accum, batches = int(cfg["accum"]), len(f.train_loader)
    net.train()
    freeze_encoder(f.model, f.state["epoch"] < int(cfg["freeze_encoder"]))
    optimizer.zero_grad(set_to_none=True)
    total, count = 0.0, 0
    for i, (images, targets) in enumerate(progress(f.train_loader, desc=desc, leave=False, unit="batch")):
        check_interrupt()  # a Ctrl-C swallowed by a finaliser is raised here
        images = images.to(device, non_blocking=True)
        if cfg["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        stepping = (i + 1) % accum == 0 or i + 1 == batches
        with ranks.no_sync(net, stepping):
            with autocast(device, cfg["amp"]):
                logits = net(images)
            loss = loss_fn(logits.float(), targets)
            value, n = ranks.batch_loss(loss, len(images))  # the global batch's (every rank sees the same)
            if not math.isfinite(value):
                raise NonFiniteLoss(f"{desc}: loss is {value} (lr {optimizer.param_groups[0]['lr']:.3g})")
            scaled = loss / accum
            (f.scaler.scale(scaled) if f.scaler else scaled).backward()
        if stepping:
            optimizer_step(f, cfg)
        total += value * n
        count += n
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
