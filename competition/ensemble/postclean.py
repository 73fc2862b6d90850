"""The small-region cleanup step of `--post auto`: per class, the minimum area (from AREAS, 0 = none) of its
8-connected regions. Regions are found once under the decision before the step; removing one moves its pixels
to their second-best class, so each candidate area is an exact update of per-image confusion counts. Classes
are fitted in class order, each given the areas already chosen; the held-out score applies the real cleanup
(predict.decide.cleanup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from competition.data import ClassTable
from competition.ensemble.noise import ranking_values
from competition.predict import Decision, argmax, cleanup

AREAS = (0, 8, 16, 32, 64, 128, 256, 512, 1024)  # minimum region areas tried per class (256 x 256 pixels)


def image_confusion(truth: np.ndarray, pred: np.ndarray, c: int, ignore: int) -> np.ndarray:
    """The confusion [C, C] of one image's pixels (truth [H, W], prediction [H, W])."""
    keep = truth != ignore
    return np.bincount(truth[keep].astype(np.int64) * c + pred[keep], minlength=c * c).reshape(c, c)


def second_best_map(scores: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Per pixel [H, W], the best class other than its decision `top` (scores [C, H, W])."""
    others = scores.copy()
    np.put_along_axis(others, top[None].astype(np.int64), -np.inf, axis=0)
    return argmax(others, 0)


@dataclass
class Regions:
    """Connected regions of the decision before the cleanup: image, class and area of each, and the counts of
    (region, truth, second-best class) of their pixels."""

    image: np.ndarray
    klass: np.ndarray
    area: np.ndarray
    entry_region: np.ndarray
    entry_cell: np.ndarray  # truth x C + second-best class
    entry_count: np.ndarray

    def delta(self, chosen: np.ndarray, n: int, c: int) -> np.ndarray:
        """Per-image confusion change [n, C, C] of removing the regions `chosen` (bool per region)."""
        take = chosen[self.entry_region]
        region, cell, count = self.entry_region[take], self.entry_cell[take], self.entry_count[take]
        img, truth, alt = self.image[region], cell // c, cell % c
        delta = np.zeros(n * c * c, np.int64)
        np.add.at(delta, (img * c + truth) * c + alt, count)
        np.add.at(delta, (img * c + truth) * c + self.klass[region], -count)
        return delta.reshape(n, c, c)


def find_regions(stream, base: Decision, classes: ClassTable) -> tuple[np.ndarray, Regions]:
    """Pass 2: the confusion [n, C, C] of `base` and the regions of its decisions."""
    n, c, ignore = len(stream.images), classes.num_classes, classes.ignore_index
    cm = np.zeros((n, c, c), np.int64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "klass", "area", "er", "ec", "cnt")}
    next_region = 0
    for start, probs, truth in stream:
        scores = stream.scores(base, start, probs)
        masks = argmax(scores, 1)
        for b in range(len(masks)):
            i, mask, t = start + b, masks[b], truth[b]
            cm[i] = image_confusion(t, mask, c, ignore)
            alt_all = second_best_map(scores[b], mask).astype(np.int64)
            for k in np.unique(mask):
                count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == k).view(np.uint8), connectivity=8)
                pix = (labels > 0) & (t != ignore)
                region = labels[pix].astype(np.int64) - 1 + next_region
                keys, counts = np.unique((region * c + t[pix].astype(np.int64)) * c + alt_all[pix], return_counts=True)
                parts["er"].append(keys // (c * c))
                parts["ec"].append(keys % (c * c))
                parts["cnt"].append(counts)
                parts["image"].append(np.full(count - 1, i))
                parts["klass"].append(np.full(count - 1, int(k)))
                parts["area"].append(stats[1:, cv2.CC_STAT_AREA].astype(np.int64))
                next_region += count - 1
    join = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}
    return cm, Regions(join["image"], join["klass"], join["area"], join["er"], join["ec"], join["cnt"])


def fit_areas(regions: Regions, cm: np.ndarray, images: np.ndarray, metric: str) -> np.ndarray:
    """Minimum areas per class (AREAS) maximising the ranking mIoU on `images` (bool per image)."""
    n, c, _ = cm.shape
    inside = images[regions.image]
    chosen = np.zeros(len(regions.area), bool)
    areas = np.zeros(c, np.int64)
    base = np.where(images[:, None, None], cm, 0)
    for k in range(c):
        candidates = (regions.klass == k) & inside
        if not candidates.any():
            continue
        values = []
        for a in AREAS:
            trial = chosen | (candidates & (regions.area < a))
            values.append(float(ranking_values(base + regions.delta(trial, n, c), metric)))
        best = max(range(len(AREAS)), key=lambda j: (round(values[j], 9), -AREAS[j]))
        areas[k] = AREAS[best]
        chosen |= candidates & (regions.area < areas[k])
    return areas


def held_out_cleanup(
    stream, base: Decision, fits: Sequence[np.ndarray], part_of: np.ndarray, c: int, ignore: int
) -> np.ndarray:
    """Pass 3: the confusion [n, C, C] of the real cleanup, each image with the areas fitted on the other half."""
    n = len(stream.images)
    cm = np.zeros((n, c, c), np.int64)
    for start, probs, truth in stream:
        scores = stream.scores(base, start, probs)
        masks = argmax(scores, 1)
        for b in range(len(masks)):
            i = start + b
            areas = fits[1 - part_of[i]]
            mask = cleanup(masks[b], scores[b], areas) if areas.any() else masks[b]
            cm[i] = image_confusion(truth[b], mask, c, ignore)
    return cm
