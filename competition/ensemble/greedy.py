"""Greedy forward selection of ensemble members with replacement (Caruana et al., 2004), scored exactly.

Start from the best member; at each step add the member whose addition most raises the ranking mIoU of the
part's images; stop when no addition raises it, or after STEPS additions. The weights are the counts.

Each step touches only the pixels whose argmax an addition can change. In units of 1/255 of a probability a
member adds 0..255 to each class, so a pixel whose top class leads the runner-up by more than MARGIN keeps its
argmax whichever member is added, and keeps it for at least floor((lead - MARGIN) / MARGIN) more additions:
it is not looked at again until then. Sums of counts x uint8 values are exact in float32.
"""

from __future__ import annotations

import numpy as np

from competition.ensemble.noise import metric_value
from competition.ensemble.pixels import OofPixels, chunks
from competition.predict import LEVELS, argmax, coefficients, mix

STEPS = 25  # additions at most: weights are multiples of 1/26 or finer
MARGIN = LEVELS + 1.0  # above the most one member can add to a class (255), with room for float16 rounding


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest and the second largest value along axis 0 of [C, n]."""
    top = scores[0].copy()
    second = np.full_like(top, -np.inf)
    for row in scores[1:]:
        np.maximum(second, np.minimum(top, row), out=second)
        np.maximum(top, row, out=top)
    return top, second


def greedy(pixels: OofPixels, part: int, metric: str, start: int, steps: int = STEPS) -> np.ndarray:
    """Member counts [M] chosen greedily on the images of `part`, starting from member `start`."""
    p, m = pixels.parts[part], len(pixels.units)
    factors = coefficients(np.ones(m), np.asarray(pixels.units) * LEVELS)  # stored value -> units of 1/255
    counts = np.zeros(m, np.int64)
    counts[start] = 1
    pred = np.concatenate([argmax(p.values[start][:, s], 0) for s in chunks(p.size)]) if p.size else np.zeros(0)
    cm = pixels.member_confusion(start, [part])
    score = metric_value(cm, metric)
    due = np.ones(p.size, np.int64)  # the count total at which each pixel must be looked at again
    for total in range(1, steps + 1):
        look = np.flatnonzero(due <= total)
        active, candidates = [], [[] for _ in range(m)]
        for s in chunks(len(look)):
            idx = look[s]
            values = [v[:, idx] for v in p.values]
            sums = mix(values, coefficients(counts, np.asarray(pixels.units) * LEVELS))
            top, second = top_two(sums)
            lead = top - second
            close = lead <= MARGIN
            due[idx[~close]] = total + np.maximum(1, np.floor((lead[~close] - MARGIN) / MARGIN)).astype(np.int64)
            active.append(idx[close])
            for k in range(m):
                candidates[k].append(argmax(sums[:, close] + values[k][:, close] * factors[k], 0))
        act = np.concatenate(active) if active else np.zeros(0, np.int64)
        if not len(act):
            break  # no addition can change a pixel
        rest = cm - pixels.counts(p.base[act] + pred[act])
        best = None
        for k in range(m):
            new = np.concatenate(candidates[k])
            cand_cm = rest + pixels.counts(p.base[act] + new)
            value = metric_value(cand_cm, metric)
            if value > score and (best is None or value > best[0]):
                best = (value, k, new, cand_cm)
        if best is None:
            break
        score, k, new, cm = best
        counts[k] += 1
        pred[act] = new
        due[act] = total + 1
    return counts
