"""Scores of per-image confusion counts, and whether a difference between two weightings beats the noise.

The ranking mIoU (`metric`): `image` = the mean over images of each image's mIoU, `dataset` = the mIoU of the
summed confusion matrix (competition.submit.metric defines both; images without a scored pixel do not count).
The spread of a difference is its jackknife standard error over images (leave one image out; for the
per-image mIoU this is the usual standard error of a mean of paired per-image differences).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from competition.submit import leave_one_out, ranking_miou


def metric_value(cm: np.ndarray, metric: str) -> float:
    """The ranking mIoU of per-image confusion counts [n, C, C] (submit.metric's definition)."""
    return ranking_miou(torch.from_numpy(cm), metric)


@dataclass(frozen=True)
class Gain:
    """Score of weighting a minus that of weighting b on the same images, and its jackknife standard error."""

    gain: float
    se: float

    def beats(self, z: float) -> bool:
        """Positive and more than z standard errors."""
        return self.gain > 0 and self.gain > z * self.se

    def to_dict(self) -> dict[str, float]:
        return {"gain": self.gain, "se": self.se}

    def __str__(self) -> str:
        return f"{self.gain:+.4f} ± {self.se:.4f}"


def gain(cm_a: np.ndarray, cm_b: np.ndarray, metric: str) -> Gain:
    """The paired difference of two weightings' per-image confusion counts on the same images (those with a
    scored pixel)."""
    scored = cm_a.sum((1, 2)) > 0
    cm_a, cm_b, n = cm_a[scored], cm_b[scored], int(scored.sum())
    a, b = torch.from_numpy(cm_a), torch.from_numpy(cm_b)
    diff = (leave_one_out(a, metric) - leave_one_out(b, metric)).numpy()
    se = float(np.sqrt((n - 1) / n * ((diff - diff.mean()) ** 2).sum())) if n > 1 else float("nan")
    return Gain(metric_value(cm_a, metric) - metric_value(cm_b, metric), se)


def ranking_values(cms: np.ndarray, metric: str) -> np.ndarray:
    """The ranking mIoU of each stack of per-image confusion counts [..., n, C, C] (numpy, float64), as
    submit.metric.ranking_miou defines it: `image` = the mean over images with a scored pixel of each image's
    mIoU over the classes present in its truth or prediction; `dataset` = the mIoU of their sum."""
    cms = cms.astype(np.float64)
    if metric != "image":
        cms = cms.sum(-3, keepdims=True)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    union = cms.sum(-1) + cms.sum(-2) - tp
    present = union > 0
    per_image = np.where(present, tp / np.where(present, union, 1), 0).sum(-1)
    counted = present.sum(-1)
    scored = counted > 0
    per_image = np.where(scored, per_image / np.maximum(counted, 1), 0)
    return per_image.sum(-1) / np.maximum(scored.sum(-1), 1)
