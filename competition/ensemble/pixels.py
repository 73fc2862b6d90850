"""The out-of-fold evidence of an ensemble, read once: per-image confusion counts where the members agree, and
the members' stored values only at the pixels where their argmaxes differ.

Where every member predicts class c, every mixture with non-negative weights predicts c too (c beats each
lower class strictly and each higher class at least weakly in every member, so in any weighted sum). Those
pixels add the same confusion counts to every candidate weighting and are counted once. Only the disagreement
pixels are kept (values class-major, [C, n], in their stored dtype), so scoring a weighting reads them alone,
through the same `mix` and `argmax` as the test-set prediction: the scores are exact, not estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from competition.core.geometry import resize_nearest
from competition.core.log import Log
from competition.data import ImageInfo, MaskStore
from competition.ensemble.members import OofProbs
from competition.predict import BLOCK, argmax, coefficients, mix

CHUNK = 1 << 16  # pixels per vectorised step (class-major chunks of this size stay in the CPU cache)


def chunks(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


@dataclass
class Part:
    """The disagreement pixels of one set of images (a half of the out-of-fold images)."""

    values: list[np.ndarray]  # per member [C, n], stored values (probability = value x unit)
    base: np.ndarray  # [n] int64: image x C x C + truth x C, the confusion cell of prediction 0

    @property
    def size(self) -> int:
        return len(self.base)


@dataclass
class OofPixels:
    """Agreed confusion counts and disagreement pixels of the out-of-fold images, split into parts."""

    num_classes: int
    units: list[float]  # per member: probability per stored unit
    agreed: np.ndarray  # [n_images, C, C] int64 confusion of the pixels where all members agree
    members: np.ndarray  # [M, n_images, C, C] int64 confusion of each member alone
    parts: list[Part]
    part_of: np.ndarray  # [n_images] the part of each image

    @property
    def n_images(self) -> int:
        return len(self.agreed)

    def confusion(self, weights: np.ndarray, parts: Sequence[int] | None = None) -> np.ndarray:
        """Per-image confusion [n_images, C, C] of the mixture with these weights; zero outside `parts`."""
        parts = range(len(self.parts)) if parts is None else parts
        coefs = coefficients(weights, self.units)
        cm = self.restrict(self.agreed, parts)
        for k in parts:
            part = self.parts[k]
            for s in chunks(part.size):
                pred = argmax(mix([v[:, s] for v in part.values], coefs), 0)
                cm += self.counts(part.base[s] + pred)
        return cm

    def member_confusion(self, m: int, parts: Sequence[int] | None = None) -> np.ndarray:
        return self.restrict(self.members[m], range(len(self.parts)) if parts is None else parts)

    def restrict(self, cm: np.ndarray, parts: Sequence[int]) -> np.ndarray:
        """A copy of per-image confusion `cm` with the images outside `parts` zeroed."""
        return np.where(np.isin(self.part_of, list(parts))[:, None, None], cm, 0)

    def counts(self, cells: np.ndarray) -> np.ndarray:
        """Per-image confusion [n_images, C, C] of confusion cells (image x C x C + truth x C + prediction)."""
        c = self.num_classes
        return np.bincount(cells, minlength=self.n_images * c * c).reshape(self.n_images, c, c)

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for p in self.parts for v in p.values) + sum(p.base.nbytes for p in self.parts)


def read_pixels(
    oofs: Sequence[OofProbs],
    images: Sequence[ImageInfo],
    masks: MaskStore,
    num_classes: int,
    ignore_index: int,
    part_of: np.ndarray,
    log: Log,
) -> OofPixels:
    """One streamed pass over the members' out-of-fold probabilities (BLOCK images at a time)."""
    c, m, n_parts = num_classes, len(oofs), int(part_of.max()) + 1 if len(part_of) else 1
    agreed = np.zeros((len(images), c, c), np.int64)
    alone = np.zeros((m, len(images), c, c), np.int64)
    gathered: list[list[tuple[list[np.ndarray], np.ndarray]]] = [[] for _ in range(n_parts)]
    pixels = 0
    for start in range(0, len(images), BLOCK):
        chunk = images[start : start + BLOCK]
        names = [im.file_name for im in chunk]
        values = [oof.block(names).reshape(len(chunk), c, -1) for oof in oofs]  # [B, C, HW] each
        truth = np.stack([resize_nearest(masks[im.id]) for im in chunk]).reshape(len(chunk), -1)
        preds = [argmax(v, 1) for v in values]  # [B, HW]
        index = np.arange(start, start + len(chunk))[:, None]
        base = (index * c * c + truth.astype(np.int64) * c).astype(np.int64)
        valid = truth != ignore_index
        agree = valid.copy()
        for pred in preds[1:]:
            agree &= pred == preds[0]
        differ = valid & ~agree
        agreed += _counts(base[agree] + preds[0][agree], agreed.shape)
        for k, pred in enumerate(preds):
            alone[k] += _counts(base[differ] + pred[differ], agreed.shape)
        for k in range(n_parts):
            keep = differ & (part_of[index] == k)
            if keep.any():
                gathered[k].append(([np.moveaxis(v, 1, 0)[:, keep] for v in values], base[keep]))
        pixels += int(valid.sum())
    alone += agreed
    parts = [_join(blocks, m, c, oofs) for blocks in gathered]
    share = sum(p.size for p in parts) / max(1, pixels)
    log(f"members disagree on {share:.1%} of {pixels:,} scored out-of-fold pixels; only those are re-scored")
    return OofPixels(c, [oof.unit for oof in oofs], agreed, alone, parts, part_of)


def _counts(cells: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.bincount(cells, minlength=int(np.prod(shape))).reshape(shape)


def _join(blocks: list[tuple[list[np.ndarray], np.ndarray]], m: int, c: int, oofs: Sequence[OofProbs]) -> Part:
    if not blocks:
        return Part([np.zeros((c, 0), oof.dtype) for oof in oofs], np.zeros(0, np.int64))
    values = [np.concatenate([b[0][k] for b in blocks], axis=1) for k in range(m)]
    return Part(values, np.concatenate([b[1] for b in blocks]))
