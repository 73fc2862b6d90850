"""Model inference shared by validation, out-of-fold and test prediction: device, AMP, TTA, probabilities.

Probabilities are produced at the submission resolution (256 x 256): logits are resized bilinearly, then
softmaxed, then averaged over TTA views (soft voting).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from competition.core.errors import UserError
from competition.core.geometry import SUBMISSION_SIZE


def pick_device(name: str) -> torch.device:
    """auto = the GPU when there is one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `amp`; nothing on CPU."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class View:
    """One TTA view: resize by `scale`, optionally flip (dims 3 = horizontal, 2 = vertical)."""

    scale: float = 1.0
    flip: int | None = None


def parse_tta(spec: str | None) -> list[View]:
    """`"hflip,vflip,0.75,1,1.25"` -> every scale with no flip and with each flip (3 x 3 = 9 views)."""
    if not spec or spec == "none":
        return [View()]
    flips: list[int | None] = [None]
    scales: list[float] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in ("hflip", "vflip"):
            flips.append(3 if item == "hflip" else 2)
        else:
            try:
                scales.append(float(item))
            except ValueError:
                raise UserError(f"--tta {spec!r}: {item!r} is neither hflip, vflip nor a scale") from None
            if not 0.1 <= scales[-1] <= 4:
                raise UserError(f"--tta {spec!r}: scale {item} out of range 0.1..4")
    return [View(s, f) for s in (scales or [1.0]) for f in flips]


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    views: list[View] | None = None,
    amp: bool = True,
    channels_last: bool = True,
    size: int = SUBMISSION_SIZE,
) -> torch.Tensor:
    """Softmax probabilities [B, C, size, size] (float32) averaged over the TTA views."""
    views = views or [View()]
    total = None
    for view in views:
        x = images
        if view.scale != 1.0:
            x = F.interpolate(x, scale_factor=view.scale, mode="bilinear", align_corners=False)
        if view.flip is not None:
            x = x.flip(view.flip)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, amp):
            logits = model(x)
        if view.flip is not None:
            logits = logits.flip(view.flip)
        logits = F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(views))


def describe_views(views: Sequence[View]) -> list[str]:
    """TTA views as names such as `1+hflip` or `0.75`; empty without TTA."""
    if list(views) == [View()]:
        return []
    flips = {None: "", 3: "+hflip", 2: "+vflip"}
    return [f"{v.scale:g}{flips[v.flip]}" for v in views]
