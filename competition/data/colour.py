"""Colour jitter on uint8 training images, and their normalisation on the training device.

Training items leave the DataLoader as uint8 (decoded and resized once, then scaled, cropped, flipped and
colour-jittered in the workers); `normalise` turns a whole batch into normalised float32 on the training
device (the GPU where there is one), so workers and the host-to-device copy move a quarter of the bytes.

`ColourJitter` draws torchvision ColorJitter's factors (brightness, contrast and saturation uniform in
[1-s, 1+s], hue in [-h, h] with h = min(0.5, s/4), s = `aug_color`) and a random order of the four. Each is an
affine map of RGB (contrast through the image's mean grey), so the four compose to one 3x4 matrix per image,
applied by one OpenCV `cv2.transform` on the uint8 pixels (clipped to 0..255 and rounded once, at the end).
Differences from torchvision's ColorJitter: no clipping or rounding to uint8 between the four steps, and hue
turns colours about the grey axis (as CSS `hue-rotate`) instead of shifting the HSV hue.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GREY = np.array([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights


def _hue_rotation(turn: float) -> np.ndarray:
    """Rotation by `turn` (fraction of a full turn) about the grey axis (1, 1, 1)."""
    angle = 2 * math.pi * turn
    n = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return math.cos(angle) * np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * np.outer(n, n)


def compose(factors: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's colour map on uint8 input x with channel means mu: y = A x + U mu + o.

    `factors` are (brightness, contrast, saturation, hue); `order` a permutation of 0..3. Each step maps
    y -> M y + K mean(y), with mean(y) = (A + U) mu + o (K is non-zero for contrast alone)."""
    a, u, o = np.eye(3) / 255, np.zeros((3, 3)), np.zeros(3)
    grey = np.outer(np.ones(3), GREY)  # y -> its grey value in each channel
    for step in order:
        f = factors[step]
        k = np.zeros((3, 3))
        if step == 0:
            m = f * np.eye(3)
        elif step == 1:
            m, k = f * np.eye(3), (1 - f) * grey
        elif step == 2:
            m = f * np.eye(3) + (1 - f) * grey
        else:
            m = _hue_rotation(f)
        a, u, o = m @ a, m @ u + k @ (a + u), m @ o + k @ o
    return a, u, o


class ColourJitter(v2.Transform):
    """Colour jitter of a uint8 tv_tensors.Image (other inputs pass unchanged); draws from torch's generator,
    so it follows the epoch's (and the worker's) seed as the other transforms do."""

    def __init__(self, strength: float):
        super().__init__()
        self.strength, self.hue = float(strength), min(0.5, float(strength) / 4)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        s, draws = self.strength, torch.rand(4, dtype=torch.float64).numpy()
        low = np.array([max(0.0, 1 - s)] * 3 + [-self.hue])
        high = np.array([1 + s] * 3 + [self.hue])
        return {"factors": low + draws * (high - low), "order": torch.randperm(4).numpy()}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        assert inpt.dtype == torch.uint8 and inpt.shape[0] == 3, (inpt.dtype, inpt.shape)
        pixels = np.ascontiguousarray(inpt.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())
        mu = np.array(cv2.mean(pixels)[:3])
        a, u, o = compose(params["factors"], params["order"])
        matrix = np.hstack([a, (u @ mu + o)[:, None]]) * 255
        out = cv2.transform(pixels, matrix.astype(np.float32))
        return tv_tensors.Image(torch.from_numpy(out).permute(2, 0, 1))

    # torchvision < 0.21 (torch < 2.6) calls these by their former private names
    _get_params = make_params
    _transform = transform


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] (any device) -> float32 (x / 255 - MEAN) / STD, as ToDtype(scale=True) + Normalize
    up to float rounding."""
    assert images.dtype == torch.uint8 and images.dim() == 4, (images.dtype, images.shape)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    return images.float().mul_(1 / (255 * std)).sub_(mean / std)
