"""The dense CRF step of `--post auto` (predict.crf): one of a few parameter sets (predict.CRF_GRID) or none,
chosen out of fold on top of the decision before it (the calibration, or the plain scores where the CRF does
better without it), kept only where its held-out gain beats Z standard errors, as the other steps.

A CRF costs about 0.1 s per image and candidate on one core, so the step is fitted on at most CRF_IMAGES
out-of-fold images spread evenly over them (every candidate on every one, in processes); only per-image
confusion counts come back. Each half of those images picks the candidate best for it; the other half is
scored with that pick (every image scored by a choice made without it), and the gain with its jackknife SE
is the paired difference to the decision without CRF on the same images. The kept candidate is the best on
all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from competition.core.log import Log
from competition.data import ClassTable
from competition.ensemble.noise import Gain, gain, metric_value
from competition.predict import CRF_GRID, CRF_INSTALL, CrfParams, Decision, argmax, crf_available, crf_confusions

CRF_IMAGES = 240


@dataclass
class CrfFit:
    """The step's outcome: the kept candidate (or None), its held-out gain, the confusions [m, C, C] before and
    after (held out) on the fitted images, and what the report adds."""

    params: CrfParams | None
    step: Gain | None = None
    kept: bool = False
    before: np.ndarray | None = None
    after: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    offsets: tuple[float, ...] | None = None  # the calibration under the CRF: the chosen base's


def crf_subset(n: int, limit: int = CRF_IMAGES) -> np.ndarray:
    """Indices of at most `limit` images spread evenly over n."""
    return np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))


def fit_crf(
    stream, bases: list[Decision], part_of: np.ndarray, classes: ClassTable, metric: str, z: float, log: Log
) -> CrfFit:
    """The CRF option that survives the held-out test (or None), with what the report needs. An option is a
    candidate of the grid on one of `bases`: the decision so far (bases[0], what the gain is measured against)
    and, where that is calibrated, the plain argmax's scores too: the CRF removes the doubtful small blobs that
    the calibration suppresses by lowering whole classes, and on the plain scores it may do better alone."""
    if not crf_available():
        log(f"  dense CRF: not fitted: pydensecrf2 is not installed ({CRF_INSTALL})")
        return CrfFit(None, extra={"kept": False, "skipped": f"pydensecrf2 is not installed: {CRF_INSTALL}"})
    n, c, ignore = len(stream.images), classes.num_classes, classes.ignore_index
    subset = crf_subset(n)
    wanted = np.zeros(n, bool)
    wanted[subset] = True
    grid = list(CRF_GRID)
    options = [(b, g) for b in range(len(bases)) for g in range(len(grid))]
    before = np.zeros((len(subset), c, c), np.int64)
    each = np.zeros((len(subset), len(options), c, c), np.int64)
    done = 0
    for start, probs, truth in stream:
        rows = np.nonzero(wanted[start : start + len(probs)])[0]
        if not len(rows):
            continue
        pixels = stream.pixels([stream.images[start + r].file_name for r in rows])
        for b, base in enumerate(bases):
            scores = base.scores(probs[rows])
            found = crf_confusions(scores, pixels, truth[rows], grid, ignore)
            each[done : done + len(rows), b * len(grid) : (b + 1) * len(grid)] = found
            if b == 0:
                pred = argmax(scores, 1)
                for j, r in enumerate(rows):
                    keep = truth[r] != ignore
                    cells = truth[r][keep].astype(np.int64) * c + pred[j][keep]
                    before[done + j] = np.bincount(cells, minlength=c * c).reshape(c, c)
        done += len(rows)
    halves = part_of[subset]
    values = [metric_value(each[:, o], metric) for o in range(len(options))]
    picks = []
    for h in (0, 1):
        side = halves == h
        scored = [metric_value(each[side, o], metric) for o in range(len(options))] if side.any() else [0.0]
        picks.append(int(np.argmax(scored)))
    held = each[np.arange(len(subset)), np.asarray(picks)[1 - halves]]
    step = gain(held, before, metric)
    kept = step.beats(z)
    best = int(np.argmax(values))
    on, params = bases[options[best][0]], grid[options[best][1]]
    names = ["the decision so far", "the plain argmax"]
    extra = {
        "images": int(len(subset)),
        "before_on_images": metric_value(before, metric),
        "grid": [p.to_dict() for p in grid],
        "bases": names[: len(bases)],
        "grid_miou": [values[b * len(grid) : (b + 1) * len(grid)] for b in range(len(bases))],
        "half_fits": [list(options[k]) for k in picks],
        "fitted": params.to_dict(),
        "fitted_on": names[options[best][0]],
    }
    log(
        f"  dense CRF: {len(subset)} images x {len(options)} options, held-out gain {step} -> "
        f"{'kept' if kept else 'not kept'} (best {params.describe()} on {names[options[best][0]]})"
    )
    return CrfFit(params if kept else None, step, kept, before, held, extra, on.offsets if kept else bases[0].offsets)
