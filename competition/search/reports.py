"""What a trial tells its study while it trains, and when it stops: the training run's hooks (train.hooks) for
one trial, reporting what its pruner reads (search/pruners.py) and raising `StopTrial` with an honest partial
value when the trial is pruned.

- every epoch: the `epochs` trained so far (the search's cost, whatever the pruner), and for the epoch-step
  pruners the running CV mean at step `fold * epochs + epoch`;
- every finished fold: its score (`fold_scores`), and for the image-step pruner each validation image's score
  at step = its index in train_all.

The value a pruned trial returns (it ends COMPLETE, so the sampler learns from it): after whole folds, its paired
estimate, the best fully trained trial's CV mean plus the mean difference between the two on the folds both
finished; inside a fold, its running CV mean (the in-fold hopeless stop: the best's CV plus the gap of the two
running means over the same folds, since early folds can score above the CV mean). Each is what the trial would
most likely have scored, not a placeholder. The in-fold stop takes a trial that still predicts only background
*and* whose running CV mean is below the best fully trained trial's on the same folds: under the per-image mIoU
a background-only model can be the best configuration of a short budget (images of small objects score high
without them), and then it is not hopeless.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from competition.search.pruners import Pruning, hopeless, paired_p_value
from competition.search.trials import best_full


class StopTrial(optuna.TrialPruned):
    """The trial is pruned: `value` is its partial value, `folds` the folds it finished."""

    def __init__(self, reason: str, value: float, folds: int):
        super().__init__(reason)
        self.reason, self.value, self.folds = reason, value, folds


def fold_count(cfg: dict[str, Any]) -> int:
    """How many folds a trial of these settings trains."""
    if cfg["split"] == "official" or cfg.get("fold") is not None:
        return 1
    return int(cfg["folds"])


class TrialReports:
    """The hooks of one trial's training run (`epoch`, `fold`); `prunable` is False for the default trial."""

    def __init__(self, trial: optuna.Trial, pruning: Pruning, cfg: dict[str, Any], prunable: bool):
        self.trial, self.pruning, self.prunable = trial, pruning, prunable
        self.per_fold = int(cfg["epochs"])
        self.folds = fold_count(cfg)
        self.epochs = 0
        self.fold_scores: dict[int, float] = {}
        self.images: dict[int, float] = {}  # the image steps reported
        trial.set_user_attr("reports", pruning.reports)

    def epoch(self, fold: int, epoch: int, running_mean: float, row: dict[str, Any]) -> None:
        self.epochs += 1
        self.trial.set_user_attr("epochs", self.epochs)
        if not math.isfinite(float(row.get("miou_image", 0.0))):  # an epoch without validation (val_every)
            return
        where = f"fold {fold} epoch {epoch + 1}"
        if self.pruning.reports == "epochs":
            self.trial.report(running_mean, fold * self.per_fold + epoch)
            if self.prunable and self.trial.should_prune():
                raise StopTrial(
                    f"running CV mean {running_mean:.4f} after {where}", running_mean, len(self.fold_scores)
                )
        if self.pruning.stop_hopeless and self.prunable and hopeless(row, epoch, self.per_fold):
            best = best_full(self.trial.study)
            theirs = self._fold_mean(best, fold)
            if theirs is not None and running_mean < theirs:  # background only *and* behind: nothing to learn
                ratio = float(row["foreground_ratio"])
                estimate = float(best.value) + running_mean - theirs  # paired over the same folds, as below
                raise StopTrial(
                    f"still predicts only background after {where} (foreground on {ratio:.1%} of the true "
                    f"foreground), running CV mean {running_mean:.4f} below trial {best.number}'s {theirs:.4f}; "
                    f"estimated CV {estimate:.4f}",
                    estimate,
                    len(self.fold_scores),
                )

    @staticmethod
    def _fold_mean(best: optuna.trial.FrozenTrial | None, fold: int) -> float | None:
        """The mean of a trial's fold scores on folds 0..fold (None without them): what a running CV mean
        after `fold` is compared with."""
        scores = (best.user_attrs.get("fold_scores") or {}) if best is not None else {}
        known = [float(scores[str(f)]) for f in range(fold + 1) if str(f) in scores]
        return float(np.mean(known)) if len(known) == fold + 1 else None

    def fold(self, fold: int, result: dict[str, Any]) -> None:
        self.fold_scores[fold] = float(result["miou"])
        self.trial.set_user_attr("fold_scores", {str(k): v for k, v in self.fold_scores.items()})
        if self.pruning.reports != "images":
            return
        scores = result.get("image_scores") or {"steps": [], "values": []}  # older folds have none
        for step, value in zip(scores["steps"], scores["values"], strict=True):
            if value is not None and math.isfinite(value):
                self.trial.report(float(value), int(step))
                self.images[int(step)] = float(value)
        if not self.prunable or len(self.fold_scores) >= self.folds or not self.trial.should_prune():
            return
        best = best_full(self.trial.study)
        p = paired_p_value(self.images, best.intermediate_values) if best is not None else math.nan
        value = self.paired_estimate()
        raise StopTrial(
            f"worse than trial {best.number if best else '?'} image by image after {len(self.fold_scores)} of "
            f"{self.folds} folds (p={p:.3g} on {len(self.images)} images); estimated CV {value:.4f}",
            value,
            len(self.fold_scores),
        )

    def paired_estimate(self) -> float:
        """The best fully trained trial's CV mean plus this trial's mean difference to it on the folds both
        finished; the mean of this trial's finished folds when there is no such trial."""
        own = float(np.mean(list(self.fold_scores.values())))
        best = best_full(self.trial.study)
        theirs = (best.user_attrs.get("fold_scores") or {}) if best is not None else {}
        common = [f for f in self.fold_scores if str(f) in theirs]
        if not common:
            return own
        gap = float(np.mean([self.fold_scores[f] - float(theirs[str(f)]) for f in common]))
        return float(best.value) + gap
