"""What the folds of one run share (data, classes, masks, folds, device) and what each fold builds from it:
data loaders, class weights, the model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, RandomSampler, WeightedRandomSampler

import models
from competition.core.config import image_hw
from competition.core.errors import UserError
from competition.core.log import Log
from competition.core.progress import Steps
from competition.data import (
    ClassTable,
    CopyPaste,
    DataRoot,
    DecodeEachTime,
    Folds,
    MaskStore,
    PseudoLabels,
    SegmentationDataset,
    balanced_weights,
    eval_transform,
    image_store,
    make_folds,
    normalise,
    pseudo_dir,
    train_transform,
)
from competition.predict import compiled, loader_workers, pick_device
from competition.train.distributed import Ranks
from competition.train.trackers import Trackers


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
    pseudo: PseudoLabels | None = None  # test images with pseudo-labels, added to every training fold
    pixels: DecodeEachTime | None = None  # train_all's images at image_size (cached unless image_cache=false)
    pseudo_pixels: DecodeEachTime | None = None
    steps: Steps | None = None  # the run's epochs: a bar on a terminal, the ETA of the log lines
    trackers: Trackers = field(default_factory=lambda: Trackers([]))  # the run's chosen trackers (train/trackers)
    ranks: Ranks = field(default_factory=Ranks)  # data parallelism (train/distributed): rank 0 of 1 by default


def prepare(cfg: dict[str, Any], runs_dir: Path, log: Log) -> Setup:
    """Load and validate the data, render (or reuse) the masks, the decoded images and the folds, open the
    pseudo-labelled set."""
    data = DataRoot(Path(cfg["data"]))
    classes = data.classes(cfg["classes"], cfg["ignore_index"])
    masks = data.masks("train_all", classes, cfg["overlap"], log=log)
    coco = data.coco("train_all")
    pixels = image_source(cfg, data.root, coco.path, coco.images, log)
    folds = make_folds(data, cfg["split"], cfg["folds"], cfg["seed"])
    device = pick_device(cfg["device"])
    pseudo = pseudo_pixels = None
    if cfg["pseudo"]:
        pseudo = PseudoLabels(pseudo_dir(runs_dir, cfg["pseudo"]))
        pseudo.check(list(classes.names), coco)
        log(f"pseudo-labels: {len(pseudo.images)} test images of {cfg['pseudo']} join every training fold")
        pseudo_pixels = image_source(cfg, Path(pseudo.meta["data"]), Path(pseudo.meta["source"]), pseudo.images, log)
    return Setup(cfg, data, classes, masks, folds, device, log, pseudo, pixels, pseudo_pixels)


def image_source(cfg: dict[str, Any], root: Path, source: Path, images, log: Log) -> DecodeEachTime:
    """The images at image_size: the decode-once cache, or (image_cache=false) decoded on every read."""
    if cfg.get("image_cache", True):  # runs saved before the setting existed resume with the default
        return image_store(root, source, images, image_hw(cfg), log=log)
    return DecodeEachTime(root, source, images, image_hw(cfg))


class DeviceBatches:
    """The training loader's uint8 batches moved to the device, where the images are normalised to float and
    the labels become int64."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device
        self.dataset, self.batch_size = loader.dataset, loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, targets in self.loader:
            images = normalise(images.to(self.device, non_blocking=True))
            yield images, targets.to(self.device, non_blocking=True).long()


def fold_indices(cfg: dict[str, Any], folds: Folds) -> list[int]:
    if cfg["fold"] is None:
        return list(range(folds.k))
    if not 0 <= int(cfg["fold"]) < folds.k:
        raise UserError(f"--fold {cfg['fold']}: the fold file has folds 0..{folds.k - 1}")
    return [int(cfg["fold"])]


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


def loaders(setup: Setup, fold: int) -> tuple[DeviceBatches, DataLoader, SegmentationDataset]:
    """The fold's training batches (its train images, plus the pseudo-labelled set; copy-paste and the balanced
    sampler when asked; normalised on the device), validation loader (its validation images only), and
    the validation dataset."""
    cfg, data = setup.cfg, setup.data
    coco = data.coco("train_all")
    train_images = [coco.by_id[i] for i in setup.folds.train_ids(fold)]
    val_images = [coco.by_id[i] for i in setup.folds.val_ids[fold]]
    train_ids = setup.folds.train_ids(fold)
    paste = None
    if cfg["copy_paste"] > 0:  # objects come from this fold's training images only
        paste = CopyPaste(data.root, coco, train_ids, setup.classes, cfg["overlap"], cfg["copy_paste"])
    train_set = SegmentationDataset(
        data.root, coco.path, train_images, setup.masks, train_transform(cfg), "train", paste, setup.pixels
    )
    label_maps = (setup.masks[i] for i in train_ids)
    if setup.pseudo is not None:  # training part only: the validation set below never sees them
        p = setup.pseudo
        extra = SegmentationDataset(
            p.meta["data"], p.meta["source"], p.images, p, train_transform(cfg), "train", pixels=setup.pseudo_pixels
        )
        train_set = ConcatDataset([train_set, extra])
        label_maps = itertools.chain(label_maps, (p[im.id] for im in p.images))
    val_set = SegmentationDataset(
        data.root, coco.path, val_images, setup.masks, eval_transform(cfg), "eval", pixels=setup.pixels
    )
    workers = loader_workers(cfg["num_workers"], setup.device)
    common = {
        "num_workers": workers,
        "pin_memory": setup.device.type == "cuda",
        "persistent_workers": workers > 0,
    }
    batch = min(int(cfg["batch_size"]), len(train_set))
    generator = torch.Generator().manual_seed(int(cfg["seed"]) + fold)
    sampler = None
    if cfg["sampler"] == "balanced":
        weights = torch.from_numpy(balanced_weights(label_maps, setup.classes))
        sampler = WeightedRandomSampler(weights, len(train_set), replacement=True, generator=generator)
    drop_last = len(train_set) > batch
    if setup.ranks.world == 1:
        train_loader = DataLoader(
            train_set, batch, shuffle=sampler is None, sampler=sampler, drop_last=drop_last, generator=generator,
            **common,
        )  # fmt: skip
    else:  # the global batches one process would draw, each rank taking its share
        order = sampler if sampler is not None else RandomSampler(train_set, generator=generator)
        shards = setup.ranks.shard(BatchSampler(order, batch, drop_last))
        train_loader = DataLoader(
            train_set, batch_sampler=shards, generator=generator, worker_init_fn=setup.ranks.worker_init(), **common
        )
    val_loader = DataLoader(val_set, batch, shuffle=False, **common)
    return DeviceBatches(train_loader, setup.device), val_loader, val_set


def build_model(setup: Setup) -> tuple[torch.nn.Module, str]:
    """The run's model on its device, and what its weights were initialised from (`<source>: ...`)."""
    model, loaded = models.create_model(setup.cfg["model"], setup.classes.num_classes, setup.cfg, setup.log)
    setup.log(f"model {setup.cfg['model']}: {loaded}")
    if setup.cfg.get("sync_bn") and setup.ranks.world > 1:  # BatchNorm over the global batch, not each rank's
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(setup.device)
    if setup.cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if setup.cfg["compile"]:
        example = torch.zeros(2, 3, *image_hw(setup.cfg), device=setup.device)
        if setup.cfg["channels_last"]:
            example = example.contiguous(memory_format=torch.channels_last)
        model = compiled(model, example, setup.log)
    return model, loaded
