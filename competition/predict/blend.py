"""Weighted averages of stored probabilities and their argmax: the one definition that `predict`, ensemble
weight fitting and ensemble prediction share, so a mixture scored out of fold is the mixture submitted.

A mixture is computed elementwise in float32, member by member in order (`mix`): the same numbers in any
block shape or layout. The argmax keeps the first of tied classes, as numpy's does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import numpy as np

from competition.predict.crf import processes as crf_processes
from competition.predict.decide import Decision
from competition.predict.probs import StoredProbs, argmax

BLOCK = 16  # images per streamed block: memory stays one block whatever the number of images


def coefficients(weights: Sequence[float] | np.ndarray, units: Sequence[float]) -> np.ndarray:
    """Per-member factors (float32) that turn stored values into weighted probabilities: weight x unit."""
    return (np.asarray(weights, np.float64) * np.asarray(units, np.float64)).astype(np.float32)


def mix(values: Sequence[np.ndarray], coefs: np.ndarray) -> np.ndarray:
    """Sum over members of coefs[m] * values[m] (float32), accumulated in member order."""
    total = np.multiply(values[0], coefs[0], dtype=np.float32)
    for value, coef in zip(values[1:], coefs[1:], strict=True):
        total += np.multiply(value, coef, dtype=np.float32)
    return total


def blended_masks(
    members: Sequence[StoredProbs],
    weights: Sequence[float] | np.ndarray,
    lut: np.ndarray | None = None,
    decision: Decision | None = None,
    pixels: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Masks [256, 256] of the weighted average of members' probabilities: their argmax, or `decision`'s
    post-processing (predict.decide) when given; through `lut` when given; image by image, reading BLOCK
    images at a time. `pixels(file_names)`: the images on the grid, for a decision with a dense CRF."""
    coefs = coefficients(weights, [m.unit for m in members])
    plain = decision is None or decision.is_plain
    if decision is not None and decision.needs_images and pixels is None:
        raise ValueError("a decision with a dense CRF needs the images (pixels)")
    names = members[0].images
    with crf_processes() if decision is not None and decision.needs_images else nullcontext():
        yield from _blocks(members, coefs, lut, decision, pixels, names, plain)


def _blocks(members, coefs, lut, decision, pixels, names, plain) -> Iterator[np.ndarray]:
    for start in range(0, len(members[0]), BLOCK):
        rows = slice(start, start + BLOCK)
        if plain and len(members) == 1:  # a positive factor changes no argmax: skip the float copy
            masks = argmax(members[0].read(rows), 1)
        elif plain:
            masks = argmax(mix([m.read(rows) for m in members], coefs), 1)
        else:
            images = pixels(names[rows]) if decision.needs_images else None
            masks = decision.masks(mix([m.read(rows) for m in members], coefs), images)
        yield from (masks if lut is None else lut[masks])
