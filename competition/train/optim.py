"""Optimizers (adam, adamw, sgd) and per-iteration learning-rate schedules (cosine with warmup, poly)."""

from __future__ import annotations

import math
from typing import Any

import torch


def build_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd, nesterov=True)
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimisation step `step` of `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "none":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "poly":
        return (1 - t) ** 0.9
    return 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per batch; warmup is `warmup_epochs` epochs (linear), then cosine or poly decay."""
    total = cfg["epochs"] * steps_per_epoch
    warmup = int(cfg["warmup_epochs"] * steps_per_epoch) if cfg["scheduler"] != "none" else 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, cfg["scheduler"]))
