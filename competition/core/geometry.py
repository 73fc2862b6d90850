"""The submission grid: every mask is scored and submitted at 256 x 256, resized as OpenCV's INTER_NEAREST."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

SUBMISSION_SIZE = 256

Mask = TypeVar("Mask", np.ndarray, "torch.Tensor")


def nearest_indices(h: int, w: int, size: int = SUBMISSION_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Source rows and columns of OpenCV INTER_NEAREST: output (y, x) reads input (y*h//size, x*w//size)."""
    return (np.arange(size) * h) // size, (np.arange(size) * w) // size


def resize_nearest(mask: Mask, size: int = SUBMISSION_SIZE) -> Mask:
    """Label maps [..., H, W] (numpy array or torch tensor) resized to [..., size, size] as INTER_NEAREST."""
    rows, cols = nearest_indices(mask.shape[-2], mask.shape[-1], size)
    if isinstance(mask, np.ndarray):
        return np.take(np.take(mask, rows, axis=-2), cols, axis=-1)
    import torch  # a tensor: torch is imported already (the CSV tools import no torch)

    rows_t = torch.from_numpy(rows).to(mask.device)
    cols_t = torch.from_numpy(cols).to(mask.device)
    return mask.index_select(-2, rows_t).index_select(-1, cols_t)
