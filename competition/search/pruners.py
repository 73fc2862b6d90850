"""The pruner table (`--pruner`): how a study stops trials that will not win, and what its trials report.

- `median` (epoch steps): after every epoch a trial reports its running CV mean (finished folds' scores and the
  current fold's best so far) at step `fold * epochs + epoch`; it is stopped when below the median of earlier
  trials at that step (2 start-up trials, a warm-up of a third of fold 0).
- `hyperband` (epoch steps): Optuna's HyperbandPruner over the same steps (resources from a third of a fold to
  every fold).
- `wilcoxon` (image steps): when a fold finishes, the trial reports every validation image's score (step = the
  image's index in train_all, the same in every trial) and is stopped when, paired image by image with the best
  fully trained trial, it is worse with p < 0.1 (one-sided Wilcoxon signed-rank test) and worse on average. After
  fold 1 of 5 that is a test on hundreds of paired images at a fifth of a trial's cost. Inside a fold, a trial
  still predicting (almost) only background after a third of its epochs is stopped too (`hopeless`).
- `none`: every trial trains to its end.

The default trial (trial 0) is never pruned: it is the reference the paired test needs, and a search never ends
without its baseline. Every pruned trial returns an honest partial value (see search/objective.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from competition.core.names import NAMES, Table
from competition.search.trials import best_full

# a trial predicting less foreground than this share of the true foreground has learned nothing yet
HOPELESS_FOREGROUND = 0.05


@dataclass(frozen=True)
class Pruning:
    """A study's pruner and what its trials report: `epochs` (running CV mean per epoch), `images` (per-image
    scores per finished fold) or `nothing`."""

    name: str
    pruner: BasePruner
    reports: str
    stop_hopeless: bool = False  # stop inside a fold a trial that still predicts only background after warm-up


class PairedWilcoxonPruner(BasePruner):
    """Prune when the trial's per-image values are worse than the best fully trained trial's on the same images.

    Unlike Optuna's WilcoxonPruner, the reference is the best *fully trained* trial (a pruned trial ends COMPLETE
    with a partial value that must not become the reference), and the average guard compares the two trials on
    the paired images only (the best trial has all folds' images, the current one only its finished folds')."""

    def __init__(self, p_threshold: float = 0.1, min_pairs: int = 20):
        self.p_threshold = p_threshold
        self.min_pairs = min_pairs

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        best = best_full(study)
        if best is None or best.number == trial.number or best.user_attrs.get("reports") != "images":
            return False
        return paired_p_value(trial.intermediate_values, best.intermediate_values, self.min_pairs) < self.p_threshold


def paired_p_value(mine: dict[int, float], best: dict[int, float], min_pairs: int = 20) -> float:
    """One-sided p-value that `mine` is worse than `best` on their common steps; 1.0 when there are fewer than
    `min_pairs` finite pairs or `mine` is not worse on average."""
    steps = sorted(set(mine) & set(best))
    a = np.array([mine[s] for s in steps], dtype=np.float64)
    b = np.array([best[s] for s in steps], dtype=np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    diff = a[finite] - b[finite]
    if len(diff) < max(2, min_pairs) or diff.mean() >= 0 or not np.any(diff):
        return 1.0
    from scipy.stats import wilcoxon  # scipy: pinned (Optuna's GP and QMC samplers need it too)

    return float(wilcoxon(diff, alternative="less", zero_method="zsplit").pvalue)


def hopeless(row: dict[str, Any], epoch: int, epochs: int) -> bool:
    """A fold past a third of its epochs that still predicts (almost) only background."""
    ratio = row.get("foreground_ratio")
    past_warmup = epoch + 1 >= max(2, math.ceil(epochs / 3))
    return past_warmup and ratio is not None and math.isfinite(ratio) and ratio < HOPELESS_FOREGROUND


def _median(epochs: int, folds: int) -> Pruning:
    return Pruning("median", optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 3)),
                   "epochs")  # fmt: skip


def _hyperband(epochs: int, folds: int) -> Pruning:
    pruner = optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 3), max_resource=folds * epochs)
    return Pruning("hyperband", pruner, "epochs")


def _wilcoxon(epochs: int, folds: int) -> Pruning:
    return Pruning("wilcoxon", PairedWilcoxonPruner(), "images", stop_hopeless=True)


def _none(epochs: int, folds: int) -> Pruning:
    return Pruning("none", optuna.pruners.NopPruner(), "nothing")


PRUNERS: Table[Callable[[int, int], Pruning]] = Table(
    "pruner", NAMES["pruner"], {"median": _median, "hyperband": _hyperband, "wilcoxon": _wilcoxon, "none": _none}
)


def make_pruning(name: str, cfg: dict[str, Any]) -> Pruning:
    """The named pruner for trials of these settings (epochs per fold, folds)."""
    folds = 1 if cfg["split"] == "official" else int(cfg["folds"])
    return PRUNERS[name](int(cfg["epochs"]), folds)
