"""Ensemble weights: `equal`, a list, or `auto`, scored on the members' out-of-fold probabilities.

`auto` guards against fitting fold noise. The out-of-fold images are split into two random halves; on each
half the best member is picked and greedy selection (ensemble.greedy) fits weights, and both are scored on the
other half. From these held-out scores (every image scored by weights fitted without it), equal weights are
kept unless the best member beats them by more than Z standard errors, and greedy weights (the mean of the two
halves' fits) are taken only if they beat that choice by more than Z standard errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError
from competition.core.log import Log
from competition.data import ClassTable, DataRoot
from competition.ensemble.greedy import greedy
from competition.ensemble.members import Member, check_classes, oof_images, read_oof
from competition.ensemble.noise import gain, metric_value
from competition.ensemble.pixels import OofPixels, read_pixels
from competition.submit import MeanIoU, Scores, ranking_value

Z = 2.0  # standard errors a held-out gain must exceed to replace the simpler weighting
SPLIT_SEED = 0


def parse_weights(spec: str, m: int) -> np.ndarray | None:
    """`--weights`: None for auto, 1/m each for equal, or m non-negative numbers normalised to sum 1."""
    if spec == "auto":
        return None
    if spec == "equal":
        return np.full(m, 1 / m)
    try:
        weights = np.array([float(w) for w in spec.split(",")])
    except ValueError:
        raise UserError(f"--weights {spec!r}: expected auto, equal or {m} comma-separated numbers") from None
    if len(weights) != m or (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() == 0:
        raise UserError(f"--weights {spec!r}: expected {m} non-negative numbers, not all zero (one per member)")
    return weights / weights.sum()


def halves(n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """A random split of n images into two halves: the half (0 or 1) of each."""
    return (np.random.default_rng(seed).permutation(n) % 2).astype(np.int64)


@dataclass
class Fit:
    """The chosen weights, the out-of-fold scores of the ensemble and of each member alone, and how `auto`
    chose (empty for given weights)."""

    weights: np.ndarray
    miou: float
    member_miou: list[float]
    scores: Scores
    selection: dict[str, Any] = field(default_factory=dict)


def scores_of(cm: np.ndarray, classes: ClassTable) -> Scores:
    """The scores (submit.metric) of per-image confusion counts."""
    metric = MeanIoU(classes.num_classes, classes.ignore_index)
    metric.add(torch.from_numpy(cm))
    return metric.compute()


def choose(pixels: OofPixels, metric: str, log: Log) -> tuple[np.ndarray, dict[str, Any]]:
    """Equal weights, the best member or greedy weights, by their held-out scores (see the module doc)."""
    m = len(pixels.units)
    equal = np.full(m, 1 / m)
    whole = [metric_value(pixels.member_confusion(k), metric) for k in range(m)]
    if min(np.bincount(pixels.part_of, minlength=2)) < 2:
        log("too few out-of-fold images to check a fit on held-out images: equal weights")
        return equal, {"method": "equal", "reason": "fewer than 4 out-of-fold images"}
    held = {"equal": pixels.confusion(equal), "best member": 0, "greedy": 0}
    fitted = []
    for part in (0, 1):
        other = [1 - part]
        best = int(np.argmax([metric_value(pixels.member_confusion(k, [part]), metric) for k in range(m)]))
        counts = greedy(pixels, part, metric, best)
        fitted.append(counts / counts.sum())
        held["best member"] = held["best member"] + pixels.member_confusion(best, other)
        held["greedy"] = held["greedy"] + pixels.confusion(fitted[-1], other)
    gains = {
        "best member - equal": gain(held["best member"], held["equal"], metric),
        "greedy - equal": gain(held["greedy"], held["equal"], metric),
        "greedy - best member": gain(held["greedy"], held["best member"], metric),
    }
    method = "best member" if gains["best member - equal"].beats(Z) else "equal"
    if gains[f"greedy - {method}"].beats(Z):
        method = "greedy"
    weights = {"equal": equal, "best member": np.eye(m)[int(np.argmax(whole))], "greedy": np.mean(fitted, 0)}[method]
    heldout = {name: metric_value(cm, metric) for name, cm in held.items()}
    log(
        "held out (each half scored with what the other half chose): "
        + ", ".join(f"{name} {value:.4f}" for name, value in heldout.items())
        + "; "
        + ", ".join(f"{name} {g}" for name, g in gains.items())
        + f" (± 1 SE) -> {method} (a gain must exceed {Z:g} SE)"
    )
    report = {
        "method": method,
        "z": Z,
        "heldout_miou": heldout,
        "gains": {name: g.to_dict() for name, g in gains.items()},
        "greedy_weights": [w.tolist() for w in fitted],
        "halves": np.bincount(pixels.part_of, minlength=2).tolist(),
    }
    return weights, report


def fit_weights(members: Sequence[Member], root: DataRoot, classes: ClassTable, spec: str, log: Log) -> Fit:
    """The weights (`spec`: auto, equal or a list) and the out-of-fold scores of the ensemble and members."""
    cfg, m = members[0].cfg, len(members)
    oofs = [read_oof(member) for member in members]
    check_classes(
        [(members[0].dir, list(classes.names)), *((mb.dir, o.classes) for mb, o in zip(members, oofs, strict=True))]
    )
    images = oof_images(members, oofs, root)
    given = parse_weights(spec, m)
    log(f"reading the out-of-fold probabilities of {m} members on {len(images)} images")
    masks = root.masks("train_all", classes, cfg["overlap"], log=log)
    pixels = read_pixels(oofs, images, masks, classes.num_classes, classes.ignore_index, halves(len(images)), log)
    member_miou = [ranking_value(scores_of(pixels.member_confusion(k), classes), cfg["metric"]) for k in range(m)]
    weights, selection = (given, {}) if given is not None else choose(pixels, cfg["metric"], log)
    scores = scores_of(pixels.confusion(weights), classes)
    return Fit(weights, ranking_value(scores, cfg["metric"]), member_miou, scores, selection)
