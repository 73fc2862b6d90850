"""Rare classes (Battery, Clothing, Glass are a few percent of objects): a class-balanced image sampler and
copy-paste augmentation from the instance annotations.

`sampler=balanced`: each training image is drawn with probability proportional to the rarest class it holds
(weight = max over its classes of 1 / images holding the class), with replacement, as many draws as images.

`copy_paste=P`: with probability P a training image gets one object pasted from another training image. The
object's class is drawn by inverse object frequency, the object is one annotation of it (its own polygon or
RLE), taken with its pixels from its image resized to the target's size (same relative place and scale). The
label follows the run's rules: its value is the class table's (kept, merged, or ignore_index for an ignored
category such as UNKNOWN), and where it overlaps the target's objects the overlap policy decides (`max`: the
higher value stays; `small-on-top`: the pasted object lies on top).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from competition.data.classes import ClassTable
from competition.data.coco import CocoFile, ImageInfo, read_image
from competition.data.masks import annotation_mask


def balanced_weights(masks: Iterable[np.ndarray], classes: ClassTable) -> np.ndarray:
    """Sampling weight of each image (its mask, in order): 1 / (images holding its rarest foreground class);
    background-only images weigh as the most common class. Normalised to sum to 1."""
    n = classes.num_classes
    present = np.stack([np.bincount(m.ravel(), minlength=256)[:n] > 0 for m in masks])  # images x classes
    present[:, 0] = False
    holding = present.sum(0)
    inverse = np.where(holding > 0, 1.0 / np.maximum(holding, 1), 0.0)
    weights = (present * inverse).max(1)
    weights = np.where(weights > 0, weights, inverse[holding > 0].min() if holding.any() else 1.0)
    return weights / weights.sum()


@dataclass(frozen=True)
class PasteSource:
    """One annotated object that can be pasted."""

    image: ImageInfo
    ann: dict[str, Any]
    value: int  # its pixel value under the run's class table (or ignore_index)


class CopyPaste:
    """Pastes one rare-class object into a training image with probability `p` (see the module docstring)."""

    def __init__(self, root: Path, coco: CocoFile, ids: Sequence[int], classes: ClassTable, overlap: str, p: float):
        self.root, self.source, self.p, self.overlap = Path(root), coco.path, float(p), overlap
        self.ignore_index = classes.ignore_index
        by_category: dict[int, list[PasteSource]] = {}
        for image_id in ids:
            for ann in coco.annotations.get(image_id, []):
                source = PasteSource(coco.by_id[image_id], ann, classes.value_of[ann["category_id"]])
                by_category.setdefault(ann["category_id"], []).append(source)
        self.categories = sorted(by_category)
        self.objects = [by_category[c] for c in self.categories]
        counts = np.array([len(o) for o in self.objects], dtype=np.float64)
        self.class_p = (1 / counts) / (1 / counts).sum() if len(counts) else counts

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`image` (H, W, 3 uint8) and `mask` (H, W uint8), possibly with one object pasted (new arrays)."""
        if not self.objects or rng.random() >= self.p:
            return image, mask
        group = self.objects[rng.choice(len(self.objects), p=self.class_p)]
        obj = group[int(rng.integers(len(group)))]
        height, width = mask.shape
        on = annotation_mask(obj.ann, obj.image.height, obj.image.width)
        pixels = read_image(self.root, obj.image, self.source)
        if (obj.image.height, obj.image.width) != (height, width):
            on = np.asarray(Image.fromarray(on).resize((width, height), Image.NEAREST))
            pixels = pixels.resize((width, height), Image.BILINEAR)
        on = on.astype(bool)
        image, mask = image.copy(), mask.copy()
        image[on] = np.asarray(pixels)[on]
        mask[on] = self.label(mask[on], obj.value)
        return image, mask

    def label(self, under: np.ndarray, value: int) -> np.ndarray:
        """The pasted object's label over the labels `under` it, by the overlap policy."""
        if self.overlap == "small-on-top" or value == self.ignore_index:
            return np.full_like(under, value)
        return np.where(under == self.ignore_index, value, np.maximum(under, value)).astype(under.dtype)
