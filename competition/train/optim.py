"""Optimisers (adam, adamw, sgd) and per-iteration learning-rate schedules (cosine with warmup, poly, none), each
a table by name (core/names.py declares the names the settings accept)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from competition.core.names import NAMES, Table
from models import encoder_of


def _sgd(params, lr: float, wd: float, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd, nesterov=True)


def _adam(params, lr: float, wd: float, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def _adamw(params, lr: float, wd: float, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


OPTIMIZERS: Table[Callable[..., torch.optim.Optimizer]] = Table(
    "optimizer", NAMES["optimizer"], {"adam": _adam, "adamw": _adamw, "sgd": _sgd}
)


def _cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t))


def _poly(t: float) -> float:
    return (1 - t) ** 0.9


def _constant(t: float) -> float:
    return 1.0


# name -> the multiplier of the base rate at progress t in [0, 1] after the warmup; "none" has no warmup either
SCHEDULES: Table[Callable[[float], float]] = Table(
    "scheduler", NAMES["scheduler"], {"cosine": _cosine, "poly": _poly, "none": _constant}
)


def build_optimizer(model: torch.nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser of a model: two parameter groups when `encoder_lr` is not 1 (the encoder at lr x
    encoder_lr, the rest at lr), else one. The schedule scales every group alike."""
    lr, factor = float(cfg["lr"]), float(cfg.get("encoder_lr", 1.0))
    encoder = encoder_of(model)
    if encoder is None or factor == 1.0:
        params = model.parameters()
    else:
        inside = {id(p) for p in encoder.parameters()}
        params = [
            {"params": [p for p in model.parameters() if id(p) in inside], "lr": lr * factor, "name": "encoder"},
            {"params": [p for p in model.parameters() if id(p) not in inside], "lr": lr, "name": "decoder"},
        ]
    return OPTIMIZERS[cfg["optimizer"]](params, lr, float(cfg["weight_decay"]), cfg)


def freeze_encoder(model: torch.nn.Module, frozen: bool) -> None:
    """Freeze (no gradients; BatchNorm and dropout in eval mode) or release the model's encoder. Called after
    `model.train()` at every epoch: frozen parameters get no gradient, so no optimiser (weight decay included)
    changes them."""
    encoder = encoder_of(model)
    if encoder is None:
        return
    for p in encoder.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        encoder.eval()


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimisation step `step` of `total`."""
    decay = SCHEDULES[kind]
    if warmup and step < warmup:
        return (step + 1) / warmup
    return decay(min(1.0, (step - warmup) / max(1, total - warmup)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per batch; warmup is `warmup_epochs` epochs (linear), then cosine or poly decay."""
    total = cfg["epochs"] * steps_per_epoch
    warmup = int(cfg["warmup_epochs"] * steps_per_epoch) if cfg["scheduler"] != "none" else 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, cfg["scheduler"]))
