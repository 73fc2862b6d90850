"""K-fold cross-validated training of one model configuration.

`train_run` trains every fold of the fold file (or one), keeps each fold's best checkpoint by the ranking
metric (per-image or dataset mIoU at 256 x 256), saves that checkpoint's out-of-fold probabilities (float16)
and writes the run folder described in competition.runs. Interrupted runs resume: finished folds are skipped
and an unfinished fold continues from its last epoch.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import models
from competition import plots
from competition.classes import ClassTable
from competition.config import save_config
from competition.data import DataRoot
from competition.dataset import SegmentationDataset, eval_transform, train_transform
from competition.errors import UserError
from competition.fileio import atomic_path, read_json, write_json
from competition.folds import Folds, make_folds
from competition.inference import autocast, pick_device, predict_probs
from competition.losses import MixedLoss
from competition.masks import MaskStore
from competition.metric import MeanIoU, Scores
from competition.optim import build_optimizer, build_scheduler
from competition.owners import run_folder_lock
from competition.probs import write_probs
from competition.runs import fold_dir, update_run

Log = Callable[[str], None]
# A kept checkpoint that predicts less foreground than this share of the true foreground has not learned yet.
BACKGROUND_ONLY = 0.05
# on_epoch(fold, epoch, running CV mean) is called after every epoch; it may raise to stop (pruning).
# The running CV mean averages the finished folds' scores and the current fold's best so far.
EpochHook = Callable[[int, int, float], None]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Setup:
    """Everything the folds of one run share."""

    cfg: dict[str, Any]
    data: DataRoot
    classes: ClassTable
    masks: MaskStore
    folds: Folds
    device: torch.device
    log: Log


def prepare(cfg: dict[str, Any], log: Log) -> Setup:
    """Load and validate the data, render (or reuse) the masks and the folds."""
    data = DataRoot(Path(cfg["data"]))
    classes = data.classes(cfg["classes"], cfg["ignore_index"])
    masks = data.masks("train_all", classes, cfg["overlap"], log=log)
    folds = make_folds(data, cfg["split"], cfg["folds"], cfg["seed"])
    device = pick_device(cfg["device"])
    return Setup(cfg, data, classes, masks, folds, device, log)


def fold_indices(cfg: dict[str, Any], folds: Folds) -> list[int]:
    if cfg["fold"] is None:
        return list(range(folds.k))
    if not 0 <= int(cfg["fold"]) < folds.k:
        raise UserError(f"--fold {cfg['fold']}: the fold file has folds 0..{folds.k - 1}")
    return [int(cfg["fold"])]


def train_run(
    cfg: dict[str, Any], run_dir: Path, log: Log = print, on_epoch: EpochHook | None = None
) -> dict[str, Any]:
    """Train all (remaining) folds of a run; returns the results dictionary (also written to results.json).

    The run folder is locked meanwhile: a second process cannot train (resume) it while this one lives.
    """
    with run_folder_lock(run_dir):
        return _train_locked(cfg, Path(run_dir), log, on_epoch)


def _train_locked(cfg: dict[str, Any], run_dir: Path, log: Log, on_epoch: EpochHook | None) -> dict[str, Any]:
    save_config(cfg, run_dir / "config.json")
    setup = prepare(cfg, log)
    previous = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    update_run(
        run_dir,
        id=run_dir.name,
        model=cfg["model"],
        status="running",
        created=previous.get("created", datetime.now().isoformat(timespec="seconds")),
        data=str(cfg["data"]),
        classes=list(setup.classes.names),
        device=str(setup.device),
    )
    indices = fold_indices(cfg, setup.folds)
    done: dict[int, dict[str, Any]] = {}
    for fold in indices:
        result_path = fold_dir(run_dir, fold) / "result.json"
        if result_path.exists():
            done[fold] = read_json(result_path)
            log(f"fold {fold}: finished earlier (mIoU {done[fold]['miou']:.4f}), skipped")
            continue

        def running_mean(epoch: int, best: float, fold: int = fold) -> None:
            if on_epoch:
                on_epoch(fold, epoch, float(np.mean([r["miou"] for r in done.values()] + [best])))

        done[fold] = train_fold(setup, fold, fold_dir(run_dir, fold), running_mean)
    results = summarize(run_dir, cfg, setup.classes, [done[f] for f in indices], log)
    update_run(run_dir, status="complete", finished=datetime.now().isoformat(timespec="seconds"))
    return results


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(setup: Setup, train_ids: list[int]) -> torch.Tensor | None:
    """None, a given list, or `auto`: inverse square root of each class's pixel share in the training fold."""
    spec, n = setup.cfg["class_weights"], setup.classes.num_classes
    if spec is None:
        return None
    if isinstance(spec, list):
        if len(spec) != n:
            raise UserError(f"setting class_weights: {len(spec)} values for {n} classes")
        return torch.tensor(spec, dtype=torch.float32)
    counts = np.zeros(256, dtype=np.int64)
    for image_id in train_ids:
        counts += np.bincount(setup.masks[image_id].ravel(), minlength=256)
    share = counts[:n] / max(1, counts[:n].sum())
    weights = np.where(share > 0, 1 / np.sqrt(np.maximum(share, 1e-12)), 0.0)
    weights = weights / weights[share > 0].mean()
    return torch.tensor(np.where(share > 0, weights, 1.0), dtype=torch.float32)


def loaders(setup: Setup, fold: int) -> tuple[DataLoader, DataLoader, SegmentationDataset]:
    cfg, data = setup.cfg, setup.data
    coco = data.coco("train_all")
    train_images = [coco.by_id[i] for i in setup.folds.train_ids(fold)]
    val_images = [coco.by_id[i] for i in setup.folds.val_ids[fold]]
    train_set = SegmentationDataset(data.root, coco.path, train_images, setup.masks, train_transform(cfg), "train")
    val_set = SegmentationDataset(data.root, coco.path, val_images, setup.masks, eval_transform(cfg), "eval")
    workers = int(cfg["num_workers"])
    common = {
        "num_workers": workers,
        "pin_memory": setup.device.type == "cuda",
        "persistent_workers": workers > 0,
    }
    batch = min(int(cfg["batch_size"]), len(train_set))
    generator = torch.Generator().manual_seed(int(cfg["seed"]) + fold)
    train_loader = DataLoader(
        train_set, batch, shuffle=True, drop_last=len(train_set) > batch, generator=generator, **common
    )
    val_loader = DataLoader(val_set, batch, shuffle=False, **common)
    return train_loader, val_loader, val_set


def build_model(setup: Setup) -> torch.nn.Module:
    model, loaded = models.create_model(setup.cfg["model"], setup.classes.num_classes, setup.cfg)
    setup.log(f"model {setup.cfg['model']}: {loaded}")
    model = model.to(setup.device)
    if setup.cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_fold(setup: Setup, fold: int, out: Path, on_epoch: Callable[[int, float], None]) -> dict[str, Any]:
    """Train one fold (resuming from out/last.pt when present); returns the fold's result."""
    cfg, log, device = setup.cfg, setup.log, setup.device
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(int(cfg["seed"]) + fold)
    train_loader, val_loader, val_set = loaders(setup, fold)
    model = build_model(setup)
    weights = class_weights(setup, setup.folds.train_ids(fold))
    loss_fn = MixedLoss(cfg["loss"], setup.classes.ignore_index, weights).to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    state = {"epoch": 0, "best": -1.0, "best_epoch": -1, "stale": 0, "history": []}
    if (out / "last.pt").exists():
        saved = torch.load(out / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        log(f"fold {fold}: resuming after epoch {state['epoch']} (best {state['best']:.4f})")

    epochs = int(cfg["epochs"])
    for epoch in range(state["epoch"], epochs):
        seed_everything(int(cfg["seed"]) * 1000 + fold * 100 + epoch)
        start = time.time()
        desc = f"fold {fold} epoch {epoch + 1}/{epochs}"
        train_loss = train_epoch(model, train_loader, loss_fn, optimizer, scheduler, setup, desc)
        scores, val_loss = evaluate(model, val_loader, setup)
        value = ranking_value(scores, cfg["metric"])
        improved = value > state["best"]
        if improved:
            state.update(best=value, best_epoch=epoch + 1, stale=0)
            save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "score": value}, out / "best.pt")
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        state["history"].append(
            {
                "fold": fold,
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "miou_image": scores.miou_image,
                "miou_dataset": scores.miou_dataset,
                "pixel_accuracy": scores.pixel_accuracy,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.time() - start, 2),
            }
        )
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
            },
            out / "last.pt",
        )
        write_csv(pd.DataFrame(state["history"]), out / "metrics.csv")
        log(
            f"{desc}: loss {train_loss:.4f} val_loss {val_loss:.4f} mIoU(image) {scores.miou_image:.4f} "
            f"mIoU(dataset) {scores.miou_dataset:.4f} best {state['best']:.4f}{' *' if improved else ''} "
            f"[{time.time() - start:.1f}s]"
        )
        on_epoch(epoch, state["best"])
        if cfg["early_stop"] and state["stale"] >= int(cfg["early_stop"]):
            log(f"fold {fold}: early stop after {epoch + 1} epochs ({state['stale']} without improvement)")
            break

    best = torch.load(out / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    scores, _ = evaluate(model, val_loader, setup, oof_dir=out if cfg["save_oof"] else None, val_set=val_set)
    result = {
        "fold": fold,
        "miou": ranking_value(scores, cfg["metric"]),
        "metric": cfg["metric"],
        **scores.to_dict(),
        "best_epoch": best["epoch"],
        "epochs_run": state["epoch"],
        "n_train": len(setup.folds.train_ids(fold)),
        "n_val": len(setup.folds.val_ids[fold]),
    }
    write_json(out / "result.json", result)
    (out / "last.pt").unlink(missing_ok=True)
    log(f"fold {fold}: best epoch {best['epoch']}, mIoU {result['miou']:.4f} ({cfg['metric']})")
    return result


def ranking_value(scores: Scores, metric: str) -> float:
    return scores.miou_image if metric == "image" else scores.miou_dataset


def train_epoch(model, loader, loss_fn, optimizer, scheduler, setup: Setup, desc: str) -> float:
    """One pass over the training fold; returns the mean loss (NonFiniteLoss on NaN/inf)."""
    cfg, device = setup.cfg, setup.device
    model.train()
    total, count = 0.0, 0
    for images, targets in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None):
        images = images.to(device, non_blocking=True)
        if cfg["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, cfg["amp"]):
            logits = model(images)
        loss = loss_fn(logits, targets)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"{desc}: loss is {loss.item()} (lr {optimizer.param_groups[0]['lr']:.3g})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(images)
        count += len(images)
    return total / max(1, count)


@torch.no_grad()
def evaluate(
    model, loader, setup: Setup, oof_dir: Path | None = None, val_set: SegmentationDataset | None = None
) -> tuple[Scores, float]:
    """Scores at 256 x 256 over the whole validation fold (one confusion matrix, per-image mIoU) and the
    validation cross-entropy; with `oof_dir`, also the fold's out-of-fold probabilities and overlays."""
    cfg, device, classes = setup.cfg, setup.device, setup.classes
    model.eval()
    metric = MeanIoU(classes.num_classes, classes.ignore_index, device=device)
    nll, pixels = 0.0, 0
    writer = None
    if oof_dir is not None:
        images = [im.file_name for im in val_set.images]
        writer = write_probs(oof_dir / "oof.npy", images, list(classes.names), member=str(oof_dir))
    overlays = int(cfg["overlays"]) if oof_dir is not None else 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        probs = predict_probs(model, images, amp=cfg["amp"], channels_last=cfg["channels_last"])
        pred = probs.argmax(1)
        metric.update(pred, targets)
        valid = targets != classes.ignore_index
        logp = probs.clamp_min(1e-8).log()
        nll -= logp.gather(1, targets.clamp(0, classes.num_classes - 1)[:, None])[:, 0][valid].sum().item()
        pixels += int(valid.sum())
        if writer is not None:
            writer.write(probs)
        if overlays > 0:
            take = min(overlays, len(images))
            shown = int(cfg["overlays"]) - overlays
            plots.save_overlays(
                images[:take],
                targets[:take],
                pred[:take],
                classes.num_classes,
                oof_dir,
                shown,
                classes.ignore_index,
            )
            overlays -= take
    if writer is not None:
        writer.close()
    return metric.compute(), nll / max(1, pixels)


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def summarize(
    run_dir: Path, cfg: dict[str, Any], classes: ClassTable, results: list[dict[str, Any]], log: Log
) -> dict[str, Any]:
    """results.json, metrics.csv, per_class_iou.csv, plots and the summary table of a finished run."""
    scores = [r["miou"] for r in results]
    per_class = pd.DataFrame(
        [[math.nan if v is None else v for v in r["per_class"]] for r in results],
        columns=list(classes.names),
        index=[f"fold_{r['fold']}" for r in results],
    )
    per_class.loc["mean"] = per_class.mean(skipna=True)
    write_csv(per_class.T.reset_index(names="class"), run_dir / "per_class_iou.csv")
    history = pd.concat([pd.read_csv(fold_dir(run_dir, r["fold"]) / "metrics.csv") for r in results], ignore_index=True)
    write_csv(history, run_dir / "metrics.csv")
    ratios = [r.get("foreground_ratio") for r in results]
    ratios = [x for x in ratios if x is not None and not math.isnan(x)]
    background_only = bool(ratios) and float(np.mean(ratios)) < BACKGROUND_ONLY
    summary = {
        "run": run_dir.name,
        "model": cfg["model"],
        "metric": cfg["metric"],
        "miou": float(np.mean(scores)),
        "miou_std": float(np.std(scores)),
        "miou_image": float(np.mean([r["miou_image"] for r in results])),
        "miou_dataset": float(np.mean([r["miou_dataset"] for r in results])),
        "background_only": background_only,
        "folds": results,
        "dir": str(run_dir),
    }
    write_json(run_dir / "results.json", summary)
    plots.learning_curves(history, run_dir / "learning_curves.png")
    plots.per_class_bars(list(classes.names), per_class.loc["mean"].tolist(), run_dir / "per_class_iou.png")

    log("")
    log(f"{'fold':>4} {'best epoch':>10} {'mIoU(image)':>11} {'mIoU(dataset)':>13} {'pixel acc':>9}")
    for r in results:
        log(
            f"{r['fold']:>4} {r['best_epoch']:>10} {r['miou_image']:>11.4f} {r['miou_dataset']:>13.4f} "
            f"{r['pixel_accuracy']:>9.4f}"
        )
    log(f"CV mIoU ({cfg['metric']}): {summary['miou']:.4f} ± {summary['miou_std']:.4f} over {len(results)} folds")
    if background_only:
        log(
            f"warning: the kept checkpoints predict (almost) only background (foreground predicted on "
            f"{np.mean(ratios):.1%} of the true foreground's area): not learned yet; try more epochs, another lr, "
            "norm=batch (FCN) or pretrained weights"
        )
    log(f"run folder: {run_dir}")
    return summary


def remove_heavy_files(run_dir: Path) -> None:
    """Drop checkpoints and probabilities of a run nobody will use (a pruned trial)."""
    for fold in Path(run_dir).glob("fold_*"):
        for name in ("best.pt", "last.pt", "oof.npy"):
            (fold / name).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / "test", ignore_errors=True)
