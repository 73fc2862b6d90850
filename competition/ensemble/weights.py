"""Ensemble weights: `equal`, a list, or `auto` (the candidate with the best out-of-fold ranking mIoU among
every single member, equal weights and a simplex grid, all scored in one streamed pass).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from competition.core.errors import UserError
from competition.core.geometry import resize_nearest
from competition.core.log import Log
from competition.data import ClassTable, DataRoot, ImageInfo, MaskStore
from competition.ensemble.members import Member, OofProbs, blocks, check_classes, oof_images, read_oof
from competition.submit import MeanIoU, Scores, ranking_value

GRID_STEP = 0.1  # simplex grid of candidate weights, up to GRID_MEMBERS members
GRID_MEMBERS = 3
RANDOM_CANDIDATES = 64  # Dirichlet samples of candidate weights beyond GRID_MEMBERS members


def candidate_weights(m: int, seed: int = 0) -> np.ndarray:
    """Candidate weight vectors [K, m] summing to 1, without repeats: equal weights, then each single member
    (rows 1..m), then a simplex grid of step GRID_STEP (up to GRID_MEMBERS members) or Dirichlet samples."""
    rows = [np.full(m, 1 / m), *np.eye(m)]
    if m <= GRID_MEMBERS:
        steps = round(1 / GRID_STEP)
        rows += [np.array(c) / steps for c in itertools.product(range(steps + 1), repeat=m) if sum(c) == steps]
    else:
        rows += list(np.random.default_rng(seed).dirichlet(np.ones(m), RANDOM_CANDIDATES))
    _, first = np.unique(np.round(np.stack(rows), 6), axis=0, return_index=True)
    return np.stack(rows)[np.sort(first)]


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


def blend(probs: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """Weighted sum over the first (member) axis of probabilities [M, ...] -> [...]."""
    return torch.tensordot(torch.from_numpy(weights).float().to(probs.device), probs, dims=1)


def score_weights(
    oofs: Sequence[OofProbs],
    images: Sequence[ImageInfo],
    masks: MaskStore,
    candidates: np.ndarray,
    classes: ClassTable,
    device: torch.device,
) -> list[Scores]:
    """Out-of-fold scores of every candidate weight vector, in one streamed pass over blocks of images."""
    metrics = [MeanIoU(classes.num_classes, classes.ignore_index, device) for _ in candidates]
    for part in blocks(len(images)):
        chunk = images[part]
        names = [im.file_name for im in chunk]
        probs = torch.stack([oof.block(names) for oof in oofs]).to(device)
        target = np.stack([resize_nearest(masks[im.id]) for im in chunk]).astype(np.int64)
        target = torch.from_numpy(target).to(device)
        for weights, metric in zip(candidates, metrics, strict=True):
            metric.update(blend(probs, weights).argmax(-1), target)
    return [metric.compute() for metric in metrics]


@dataclass
class Fit:
    """The chosen weights and the out-of-fold scores of the ensemble and of each member alone."""

    weights: np.ndarray
    miou: float
    member_miou: list[float]
    scores: Scores


def fit_weights(
    members: Sequence[Member], root: DataRoot, classes: ClassTable, spec: str, device: torch.device, log: Log
) -> Fit:
    """Score the candidate weights (or the given ones) and every member out of fold; keep the best."""
    cfg, m = members[0].cfg, len(members)
    oofs = [read_oof(member) for member in members]
    check_classes(
        [(members[0].dir, list(classes.names)), *((mb.dir, o.classes) for mb, o in zip(members, oofs, strict=True))]
    )
    images = oof_images(members, oofs, root)
    given = parse_weights(spec, m)
    candidates = candidate_weights(m) if given is None else np.vstack([given, np.eye(m)])
    log(f"scoring {len(candidates)} weightings of {m} members on {len(images)} out-of-fold images")
    masks = root.masks("train_all", classes, cfg["overlap"], log=log)
    scores = score_weights(oofs, images, masks, candidates, classes, device)
    values = [ranking_value(s, cfg["metric"]) for s in scores]
    best = int(np.nanargmax(values)) if given is None else 0  # ties: the earliest, equal weights first
    return Fit(candidates[best], values[best], values[1 : m + 1], scores[best])
