"""Weight averaging of a fold's model, on torch.optim.swa_utils: EMA (`ema=0.999`, updated after every
optimiser step) or SWA (`swa=N`, the plain average of the model after each of the last N epochs, its BatchNorm
statistics recomputed on the training data at the end). Validation, checkpoints and prediction use the averaged
model: EMA's after every epoch, SWA's once it exists (the end of the fold)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn


class WeightAverage:
    """None, EMA or SWA of `model` as settings `ema` and `swa` ask (at most one of them is on)."""

    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any]):
        self.ema, self.swa, self.epochs = float(cfg["ema"]), int(cfg["swa"]), int(cfg["epochs"])
        self.kind = "ema" if self.ema else "swa" if self.swa else None
        self.averaged: AveragedModel | None = None
        if self.kind == "ema":
            self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.ema), use_buffers=True)
        elif self.kind == "swa":
            self.averaged = AveragedModel(model)

    def after_step(self, model: torch.nn.Module) -> None:
        if self.kind == "ema":
            self.averaged.update_parameters(model)

    def after_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """`epoch` counts from 1; SWA averages the last `swa` epochs."""
        if self.kind == "swa" and epoch > self.epochs - self.swa:
            self.averaged.update_parameters(model)

    def evaluated(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to validate and checkpoint after an epoch: EMA's average, else the model itself."""
        return self.averaged.module if self.kind == "ema" else model

    def final(self, model: torch.nn.Module, loader: Iterable, device: torch.device) -> torch.nn.Module | None:
        """SWA's average with BatchNorm statistics recomputed (None without SWA, or before any epoch averaged)."""
        if self.kind != "swa" or int(self.averaged.n_averaged) == 0:
            return None
        update_bn(_images(loader, device), self.averaged, device=device)
        return self.averaged.module

    def state_dict(self) -> dict[str, Any] | None:
        return self.averaged.state_dict() if self.averaged is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.averaged is not None and state is not None:
            self.averaged.load_state_dict(state)


def _images(loader: Iterable, device: torch.device):
    """The training images alone, as update_bn wants them."""
    for images, _ in loader:
        yield images.to(device)
