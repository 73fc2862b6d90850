"""Scores of per-image confusion counts, and whether a difference between two weightings beats the noise.

The ranking mIoU (`metric`): `image` = the mean over images of each image's mIoU, `dataset` = the mIoU of the
summed confusion matrix (competition.submit.metric defines both; images without a scored pixel do not count).
The spread of a difference is its jackknife standard error over images (leave one image out; for the
per-image mIoU this is the usual standard error of a mean of paired per-image differences).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU [..., C] of confusion matrices [..., C, C] (float64); NaN where a class is in neither."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    union = cm.sum(-1) + cm.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / union


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    count = (~np.isnan(x)).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.nansum(x, axis) / count, np.nan)


def metric_value(cm: np.ndarray, metric: str) -> float:
    """The ranking mIoU of per-image confusion counts [n, C, C]."""
    if metric == "image":
        return float(_nanmean(_nanmean(class_iou(cm), -1), 0))
    return float(_nanmean(class_iou(cm.sum(0)), -1))


def leave_one_out(cm: np.ndarray, metric: str) -> np.ndarray:
    """The ranking mIoU without each image in turn [n], of images that each have a scored pixel."""
    if metric == "image":
        per_image = _nanmean(class_iou(cm), -1)
        return (per_image.sum() - per_image) / max(1, len(cm) - 1)
    return _nanmean(class_iou(cm.sum(0) - cm), -1)


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
    diff = leave_one_out(cm_a, metric) - leave_one_out(cm_b, metric)
    se = float(np.sqrt((n - 1) / n * ((diff - diff.mean()) ** 2).sum())) if n > 1 else float("nan")
    return Gain(metric_value(cm_a, metric) - metric_value(cm_b, metric), se)
