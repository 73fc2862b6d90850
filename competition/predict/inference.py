"""Model inference shared by validation, out-of-fold and test prediction: device, AMP, TTA, probabilities.

Probabilities are produced at the submission resolution (256 x 256): logits are resized bilinearly, then
softmaxed, then averaged over TTA views (soft voting).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from competition.core.errors import UserError, first_line
from competition.core.geometry import SUBMISSION_SIZE
from competition.core.tta import View


def compiled(model: torch.nn.Module, example: torch.Tensor, log: Callable[[str], None]) -> torch.nn.Module:
    """`compile=true`: the model with its forward compiled in place (torch.compile through Module.compile, so
    its state dict and checkpoints are unchanged), run once on `example` now, so that a platform where
    torch.compile cannot work says so in one line and the eager model (an untouched copy) is used instead."""
    eager = copy.deepcopy(model)
    was_training = model.training
    start = time.perf_counter()
    try:
        model.compile()
        model.eval()  # the trial call changes no BatchNorm statistics
        with torch.no_grad():
            model(example)
    except Exception as e:  # no compiler, an unsupported op or platform: the eager model, said once
        log(f"compile=true: torch.compile does not work here ({first_line(e, 160)}); using the eager model")
        return eager.train(was_training)
    log(f"compile=true: model compiled ({time.perf_counter() - start:.1f} s for its first graph; later shapes and "
        "modes compile once each)")  # fmt: skip
    return model.train(was_training)


def pick_device(name: str) -> torch.device:
    """auto = the GPU when there is one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def loader_workers(setting: str | int, device: torch.device) -> int:
    """DataLoader worker processes of setting `num_workers`: auto = 0 on a CPU, where workers take the cores the
    model computes on (bench_peer.py: 2 workers on 2 cores cost 13 % of the wall time), 2 on CUDA."""
    if setting == "auto":
        return 2 if device.type == "cuda" else 0
    return int(setting)


def amp_dtype(device: torch.device, amp: str | bool) -> torch.dtype | None:
    """The autocast dtype of setting `amp` on `device`: auto = bf16 on CUDA where supported, else fp16 (which
    needs a gradient scaler in training), and off on CPU; bf16 also runs on CPU; fp16 only on CUDA."""
    amp = {True: "auto", False: "off"}.get(amp, amp)
    if amp == "off" or (device.type != "cuda" and amp == "auto"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise UserError("setting amp=fp16: needs a CUDA device (use bf16 or off on CPU)")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, amp: str | bool) -> contextlib.AbstractContextManager:
    """Mixed precision as setting `amp` asks (see amp_dtype); nothing when it resolves to off."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    views: list[View] | None = None,
    amp: str | bool = "auto",
    channels_last: bool = True,
    size: int = SUBMISSION_SIZE,
) -> torch.Tensor:
    """Softmax probabilities [B, C, size, size] (float32) averaged over the TTA views."""
    views = views or [View()]
    total = None
    for view in views:
        x = images
        if view.rot and x.shape[-1] != x.shape[-2]:
            raise UserError(f"TTA d4 rotates the image: it needs square inputs, got {x.shape[-2]}x{x.shape[-1]}")
        if view.scale != 1.0:
            x = F.interpolate(x, scale_factor=view.scale, mode="bilinear", align_corners=False)
        if view.rot:
            x = x.rot90(view.rot, dims=(2, 3))
        if view.flip is not None:
            x = x.flip(view.flip)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, amp):
            logits = model(x)
        if view.flip is not None:
            logits = logits.flip(view.flip)
        if view.rot:
            logits = logits.rot90(-view.rot, dims=(2, 3))
        # NCHW: softmax over channels is 2.5x faster there than on the channels-last output of the model (CPU)
        logits = F.interpolate(logits.float().contiguous(), size=(size, size), mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(views))


def describe_views(views: Sequence[View]) -> list[str]:
    """TTA views as names such as `1+hflip` or `0.75`; empty without TTA."""
    if list(views) == [View()]:
        return []
    flips = {None: "", 3: "+hflip", 2: "+vflip"}
    return [f"{v.scale:g}{f'+rot{90 * v.rot}' if v.rot else ''}{flips[v.flip]}" for v in views]
