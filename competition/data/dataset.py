"""The torch Dataset: (image, mask) pairs with torchvision.transforms.v2 joint transforms.

Training items are resized to image_size (S x S, or H x W) and augmented on uint8 (random scale and crop,
flips, colour jitter: competition.data.colour); they leave the DataLoader as uint8 and are normalised on the
training device, a whole batch at once. Given `pixels` (an image store: decoded and resized
once, competition.data.images), an item starts from the image already at image_size, and its mask is
resized to it first (nearest, as the transforms' Resize does), so copy-paste pastes at image_size.
Evaluation items give the image at image_size (float, normalised) and the mask at the submission resolution
(256 x 256, nearest as OpenCV does it) so validation measures exactly what the leaderboard measures.
Masks come from the on-disk cache (competition.data.masks), never from pycocotools.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from competition.core.config import image_hw
from competition.core.geometry import SUBMISSION_SIZE, resize_nearest
from competition.data.coco import ImageInfo, read_image
from competition.data.colour import MEAN, STD, ColourJitter
from competition.data.images import DecodeEachTime
from competition.data.masks import MaskStore
from competition.data.rare import CopyPaste


def train_transform(cfg: dict[str, Any]) -> v2.Transform:
    """Resize, random scale and crop back to size, flips (image and mask jointly), colour jitter; uint8 stays
    uint8 (normalisation follows per batch on the device: competition.data.colour.normalise)."""
    size = image_hw(cfg)
    steps: list[v2.Transform] = [v2.Resize(size, antialias=True)]
    lo, hi = cfg["aug_scale_min"], cfg["aug_scale_max"]
    if (lo, hi) != (1.0, 1.0):
        short = min(size)  # RandomResize scales the shorter side, keeping the aspect ratio
        steps += [
            v2.RandomResize(max(8, int(short * lo)), max(9, int(short * hi) + 1), antialias=True),
            v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Mask: cfg["ignore_index"], "others": 0}),
        ]
    if cfg["aug_hflip"] > 0:
        steps.append(v2.RandomHorizontalFlip(cfg["aug_hflip"]))
    if cfg["aug_vflip"] > 0:
        steps.append(v2.RandomVerticalFlip(cfg["aug_vflip"]))
    if cfg["aug_color"] > 0:
        steps.append(ColourJitter(cfg["aug_color"]))
    return v2.Compose(steps)


def eval_transform(cfg: dict[str, Any]) -> v2.Transform:
    """Resize the image to image_size and normalise."""
    return v2.Compose([v2.Resize(image_hw(cfg), antialias=True), *_to_float()])


def _to_float() -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(MEAN, STD),
    ]


class SegmentationDataset(Dataset):
    """Images of a dataset root with their cached masks.

    mode `train`: (image [3,S,S] uint8, mask [S,S] uint8) jointly transformed (normalised, and the labels
    made int64, on the device: competition.train.setup.DeviceBatches).
    mode `eval`: (image [3,S,S] float, mask [256,256] int64 at the submission resolution).
    mode `predict` (masks=None): (image [3,S,S] float, index of the image).
    """

    def __init__(
        self,
        root: Path,
        source: Path,
        images: Sequence[ImageInfo],
        masks: MaskStore | None,
        transform: v2.Transform,
        mode: str,
        paste: CopyPaste | None = None,
        pixels: DecodeEachTime | None = None,
    ):
        assert mode in ("train", "eval", "predict")
        self.root, self.source, self.images = Path(root), Path(source), list(images)
        self.masks, self.transform, self.mode, self.paste = masks, transform, mode, paste
        self.pixels = pixels  # images at image_size (an ImageStore, or DecodeEachTime); None: decode here

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | int]:
        info = self.images[i]
        if self.pixels is not None:
            pixels = self.pixels[info.id]
        else:
            pixels = np.asarray(read_image(self.root, info, self.source))
        mask = self.masks[info.id] if self.masks is not None else None
        if self.pixels is not None and self.mode == "train" and mask.shape != pixels.shape[:2]:
            mask = resize_mask(mask, pixels.shape[:2])
        if self.paste is not None and self.mode == "train":
            rng = np.random.default_rng(int(torch.randint(2**31, ())))  # follows the epoch's (and worker's) seed
            pixels, mask = self.paste(pixels, mask, rng)
        image = tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
        if self.mode == "predict":
            return self.transform(image), i
        if self.mode == "eval":
            target = torch.from_numpy(resize_nearest(mask, SUBMISSION_SIZE).astype(np.int64))
            return self.transform(image), target
        image, mask_t = self.transform(image, tv_tensors.Mask(torch.from_numpy(np.array(mask, dtype=np.uint8))))
        return image.as_subclass(torch.Tensor), mask_t.as_subclass(torch.Tensor)  # both uint8


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A uint8 label map resized to hw as the transforms' Resize resizes a Mask (nearest)."""
    resized = F.resize(tv_tensors.Mask(torch.from_numpy(np.array(mask))[None]), list(hw), InterpolationMode.NEAREST)
    return resized[0].numpy()
