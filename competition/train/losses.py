"""Losses by name and weighted mixes: `ce`, `dice`, `focal`, `lovasz`, e.g. `0.7*ce+0.3*dice` or `ce+dice`.

Cross-entropy is torch's (with class weights); dice, focal and lovasz are segmentation_models_pytorch's
multiclass losses. All skip `ignore_index` pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from competition.core.lossspec import parse_loss
from competition.core.names import NAMES, Table


class MixedLoss(nn.Module):
    """Weighted sum of segmentation losses on logits [B,C,H,W] and targets [B,H,W]."""

    def __init__(self, spec: str, ignore_index: int = 255, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.terms = parse_loss(spec)
        self.ignore_index = ignore_index
        self.losses = nn.ModuleList(LOSSES[name](ignore_index, class_weights) for _, name in self.terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum; zero (with a gradient) for a batch whose every pixel is ignored, where the mean
        cross-entropy would be 0/0 (a pseudo-labelled image can be all low-confidence)."""
        logits = logits.float()
        total = logits.sum() * 0.0
        if not (target != self.ignore_index).any():
            return total
        for (weight, _), loss in zip(self.terms, self.losses, strict=True):
            total = total + weight * loss(logits, target)
        return total


def _ce(ignore_index: int, class_weights: torch.Tensor | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=class_weights, ignore_index=ignore_index)


def _dice(ignore_index: int, class_weights: torch.Tensor | None) -> nn.Module:
    return smp_losses.DiceLoss("multiclass", ignore_index=ignore_index)


def _focal(ignore_index: int, class_weights: torch.Tensor | None) -> nn.Module:
    return smp_losses.FocalLoss("multiclass", ignore_index=ignore_index)


def _lovasz(ignore_index: int, class_weights: torch.Tensor | None) -> nn.Module:
    return smp_losses.LovaszLoss("multiclass", ignore_index=ignore_index)


# name -> builder(ignore_index, class_weights); a new loss is a builder here and its name in core/names.py
LOSSES: Table[Callable[[int, torch.Tensor | None], nn.Module]] = Table(
    "loss", NAMES["loss"], {"ce": _ce, "dice": _dice, "focal": _focal, "lovasz": _lovasz}
)
