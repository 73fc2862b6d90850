"""Exact mean IoU from confusion matrices: per-image mIoU (the run A leaderboard) and dataset mIoU.

IoU of class c = |pred=c AND gt=c| / |pred=c OR gt=c|. A class with an empty union (absent from both the
prediction and the truth) is NaN and skipped by the mean; a class predicted but absent from the truth
scores 0.
Pixels whose truth is `ignore_index` are not scored. Nothing here averages per-batch scores: the dataset
confusion matrix and the per-image mIoUs are accumulated exactly, so any batching gives the same result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor


def _validate(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise ValueError unless pred and target are same-shaped integer label maps with valid values."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError(f"expected integer label maps, got {pred.dtype} and {target.dtype}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is a class value in [0, {num_classes})")
    bad_pred = (pred < 0) | (pred >= num_classes)
    bad_target = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad_pred.any() | bad_target.any()):  # one device sync for both checks
        if bool(bad_pred.any()):
            raise ValueError(f"pred value {int(pred[bad_pred][0])} is outside [0, {num_classes})")
        raise ValueError(
            f"target value {int(target[bad_target][0])} is outside [0, {num_classes}) and not {ignore_index}"
        )


def per_image_confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Confusion matrices [B, C, C] (int64; rows = truth, columns = prediction) of label maps [B, ...]."""
    _validate(pred, target, num_classes, ignore_index)
    batch, cc = pred.shape[0], num_classes * num_classes
    pred = pred.reshape(batch, -1).long()
    target = target.reshape(batch, -1).long()
    offset = torch.arange(batch, device=pred.device).unsqueeze(1) * cc
    # Ignored pixels go to one extra bin that is dropped: masking without a boolean index (no device sync).
    index = torch.where(target == ignore_index, batch * cc, offset + target * num_classes + pred)
    counts = torch.bincount(index.flatten(), minlength=batch * cc + 1)
    return counts[:-1].reshape(batch, num_classes, num_classes)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Confusion matrix [C, C] (int64; rows = truth, columns = prediction) of label maps of any shape."""
    return per_image_confusion(pred.reshape(1, -1), target.reshape(1, -1), num_classes, ignore_index)[0]


def iou_from_confusion(cm: Tensor) -> Tensor:
    """Per-class IoU [..., C] (float64) of confusion matrices [..., C, C]; NaN where the union is empty."""
    cm = cm.double()
    tp = cm.diagonal(dim1=-2, dim2=-1)
    union = cm.sum(-1) + cm.sum(-2) - tp
    return tp / union


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass
class Scores:
    """The scores of a set of images. NaN where nothing was scored (no image, or only ignored pixels)."""

    miou_image: float  # mean over images of each image's mIoU: the run A leaderboard
    miou_dataset: float  # mean over classes of the IoU of the whole set's confusion matrix
    per_class: list[float | None]  # dataset IoU of each class; None where the class is absent everywhere
    pixel_accuracy: float
    n_images: int  # images with at least one scored pixel (those counted in miou_image)
    # pixels predicted as foreground (any class but 0) / pixels that are foreground; NaN without foreground.
    # Near 0: the model predicts (almost) only background.
    foreground_ratio: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores: NaN written as None."""
        return {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


class MeanIoU:
    """Accumulates the dataset confusion matrix and the per-image mIoUs over batches of label maps (and, with
    `keep_images`, every image's confusion matrix, on the CPU, for per-image scores)."""

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu", keep_images: bool = False
    ):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        self.kept: list[Tensor] | None = [] if keep_images else None
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=self.device)
        self._image_miou_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._image_count = torch.zeros((), dtype=torch.int64, device=self.device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true label maps [B, H, W] (any device; computed where they are)."""
        self.add(per_image_confusion(pred, target, self.num_classes, self.ignore_index))

    def add(self, cms: Tensor) -> None:
        """Add per-image confusion matrices [B, C, C] (rows = truth, columns = prediction)."""
        image_miou = iou_from_confusion(cms).nanmean(dim=-1)  # NaN for images with only ignored pixels
        if self.kept is not None:
            self.kept.append(cms.cpu())
        self.confusion += cms.sum(0).to(self.device)
        self._image_miou_sum += image_miou.nansum().to(self.device)
        self._image_count += (~image_miou.isnan()).sum().to(self.device)

    def image_confusions(self) -> Tensor:
        """Every added image's confusion matrix [n, C, C], in the order added (needs keep_images)."""
        assert self.kept is not None, "MeanIoU(keep_images=True) keeps them"
        empty = torch.zeros(0, self.num_classes, self.num_classes, dtype=torch.int64)
        return torch.cat(self.kept) if self.kept else empty

    def compute(self) -> Scores:
        """The scores of everything added so far."""
        iou = iou_from_confusion(self.confusion)
        n_images = int(self._image_count)
        total = int(self.confusion.sum())
        return Scores(
            miou_image=float(self._image_miou_sum) / n_images if n_images else math.nan,
            miou_dataset=float(iou.nanmean()),
            per_class=[_nan_to_none(v) for v in iou.tolist()],
            pixel_accuracy=int(self.confusion.trace()) / total if total else math.nan,
            n_images=n_images,
            foreground_ratio=foreground_ratio(self.confusion),
        )


def foreground_ratio(cm: Tensor) -> float:
    """Predicted foreground pixels over true foreground pixels of a confusion matrix (class 0 = background)."""
    true_fg = int(cm[1:].sum())
    return int(cm[:, 1:].sum()) / true_fg if true_fg else math.nan


def ranking_miou(cms: Tensor, metric: str) -> float:
    """The ranking mIoU of per-image confusion counts [n, C, C], as MeanIoU accumulates it: `image` = the mean
    over images with a scored pixel of each image's mIoU, `dataset` = the mIoU of their sum."""
    if metric == "image":
        return float(iou_from_confusion(cms).nanmean(-1).nanmean())
    return float(iou_from_confusion(cms.sum(0)).nanmean())


def leave_one_out(cms: Tensor, metric: str) -> Tensor:
    """The ranking mIoU without each image in turn [n] (float64), of images that each have a scored pixel."""
    if metric == "image":
        per_image = iou_from_confusion(cms).nanmean(-1)
        return (per_image.sum() - per_image) / max(1, len(cms) - 1)
    return iou_from_confusion(cms.sum(0) - cms).nanmean(-1)


def image_values(cms: Tensor, metric: str) -> Tensor:
    """Each image's share of the ranking mIoU [n] (float64; NaN for an image without a scored pixel), values
    whose mean is the metric: `image` = the image's mIoU; `dataset` = its jackknife pseudo-value
    n * mIoU - (n - 1) * mIoU without it (their mean is the jackknife estimate of the set's dataset mIoU). Paired
    image by image, they compare two models on the same images (search's Wilcoxon pruner)."""
    scored = cms.sum((1, 2)) > 0
    values = torch.full((len(cms),), math.nan, dtype=torch.float64)
    if metric == "image":
        values[scored] = iou_from_confusion(cms[scored]).nanmean(-1)
        return values
    kept, n = cms[scored], int(scored.sum())
    if n:
        values[scored] = n * ranking_miou(kept, "dataset") - (n - 1) * leave_one_out(kept, "dataset")
    return values


def ranking_value(scores: Scores, metric: str) -> float:
    return scores.miou_image if metric == "image" else scores.miou_dataset
