"""Exact mIoU: hand-worked cases, agreement with torchmetrics, batching invariance, real masks.

How torchmetrics (1.9) relates to ours, verified below: `multiclass_jaccard_index(average="macro")` gives a
weight of 0 to a class whose union is empty (absent from both prediction and truth), i.e. it skips it exactly
as our nanmean does; with `average="none"` that class reads 0.0 (zero_division) where ours is NaN. It computes
in float32, so agreement is to ~1e-6. An image with only ignored pixels is NaN in torchmetrics' macro too;
we leave such images out of the per-image mean.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_jaccard_index

from competition.submit import MeanIoU, Scores, confusion_matrix, iou_from_confusion, per_image_confusion
from tests.conftest import REAL_GT

IGNORE = 255


def tm_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, average: str = "macro") -> torch.Tensor:
    return multiclass_jaccard_index(pred, target, num_classes=num_classes, average=average, ignore_index=IGNORE)


def scores_of(batches: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> Scores:
    metric = MeanIoU(num_classes, ignore_index=IGNORE)
    for pred, target in batches:
        metric.update(pred, target)
    return metric.compute()


def random_maps(seed: int, n: int, num_classes: int, h: int = 24, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random truth, a prediction that agrees on ~60% of pixels, ~5% ignored truth pixels.

    Each image uses a random subset of the classes, so classes are absent from some images (and from the set
    when `num_classes` exceeds the labels drawn).
    """
    g = torch.Generator().manual_seed(seed)
    drawn = min(num_classes, 5)
    coarse = torch.randint(0, drawn, (n, h // 4, w // 4), generator=g)
    target = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    noise = torch.randint(0, drawn, (n, h, w), generator=g)
    pred = torch.where(torch.rand(n, h, w, generator=g) < 0.6, target, noise)
    target = torch.where(torch.rand(n, h, w, generator=g) < 0.05, IGNORE, target)
    return pred, target


# --- hand-worked cases ------------------------------------------------------------------------------------


def test_hand_worked_iou_and_absent_class_skipped():
    # truth [[0 0]  pred [[0 1]
    #        [1 1]]       [1 1]]
    # class 0: TP 1, union {(0,0),(0,1)} = 2 -> 1/2; class 1: TP 2, union 3 -> 2/3;
    # class 2: absent from both -> NaN, skipped: mIoU = (1/2 + 2/3) / 2 = 7/12 (not (7/6)/3, not (7/6+1)/3).
    target = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]  # rows = truth, columns = prediction
    iou = iou_from_confusion(cm)
    assert iou.dtype == torch.float64
    assert iou[:2].tolist() == [1 / 2, 2 / 3] and math.isnan(iou[2])
    s = scores_of([(pred, target)], 3)
    assert s.miou_image == pytest.approx(7 / 12) and s.miou_dataset == pytest.approx(7 / 12)
    assert s.per_class == [pytest.approx(1 / 2), pytest.approx(2 / 3), None]
    assert s.pixel_accuracy == 3 / 4 and s.n_images == 1


def test_false_positive_class_scores_zero():
    # truth all 0, pred has one pixel of class 2: class 0 TP 3 / union 4 = 3/4; class 1 absent (skipped);
    # class 2 predicted but not in truth: TP 0 / union 1 = 0. mIoU = (3/4 + 0) / 2 = 3/8.
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.tensor([[[0, 0], [0, 2]]])
    s = scores_of([(pred, target)], 3)
    assert s.per_class == [0.75, None, 0.0]
    assert s.miou_image == s.miou_dataset == 3 / 8


def test_ignored_pixels_do_not_count():
    # truth [[0 255]  pred [[0 0]   pixel (0,1) is ignored whatever is predicted there.
    #        [1 1  ]]       [1 0]]
    # class 0: TP 1, union {(0,0),(1,1)} = 2 -> 1/2; class 1: TP 1, union {(1,0),(1,1)} = 2 -> 1/2.
    target = torch.tensor([[[0, IGNORE], [1, 1]]])
    pred = torch.tensor([[[0, 0], [1, 0]]])
    s = scores_of([(pred, target)], 2)
    assert s.per_class == [0.5, 0.5] and s.miou_dataset == 0.5 and s.pixel_accuracy == 2 / 3
    assert confusion_matrix(pred, target, 2).sum() == 3
    # an image with only ignored pixels contributes nothing to the per-image mean
    only_ignored = torch.full((1, 2, 2), IGNORE)
    s2 = scores_of([(pred, target), (pred, only_ignored)], 2)
    assert s2.n_images == 1 and s2.miou_image == 0.5 and s2.to_dict() == s.to_dict()


def test_per_image_and_dataset_miou_differ():
    # image A: truth all 0, pred all 0 -> IoU0 = 1, image mIoU 1.
    # image B: truth [[0 0] [0 1]], pred all 0 -> IoU0 = 3/4, IoU1 = 0/1 = 0, image mIoU 3/8.
    # per-image mIoU = (1 + 3/8) / 2 = 11/16 = 0.6875.
    # dataset: IoU0 = TP 7 / union 8 = 7/8, IoU1 = 0 / 1 = 0 -> dataset mIoU = 7/16 = 0.4375.
    target = torch.tensor([[[0, 0], [0, 0]], [[0, 0], [0, 1]]])
    pred = torch.zeros(2, 2, 2, dtype=torch.long)
    s = scores_of([(pred, target)], 2)
    assert s.miou_image == 11 / 16 and s.miou_dataset == 7 / 16 and s.n_images == 2
    # Per-batch averaging (batches [A], [B]) would give (1 + 3/8) / 2 = 11/16 as "dataset" mIoU: it does not.
    split = scores_of([(pred[:1], target[:1]), (pred[1:], target[1:])], 2)
    assert split == s


def test_accumulating_batches_equals_one_big_batch():
    pred, target = random_maps(seed=1, n=7, num_classes=6)
    whole = scores_of([(pred, target)], 6)
    pieces = scores_of([(pred[:2], target[:2]), (pred[2:3], target[2:3]), (pred[3:], target[3:])], 6)
    assert pieces.miou_dataset == whole.miou_dataset and pieces.per_class == whole.per_class
    assert pieces.miou_image == pytest.approx(whole.miou_image, abs=1e-12) and pieces.n_images == 7
    per_batch_mean = np.mean([scores_of([b], 6).miou_dataset for b in [(pred[:2], target[:2]), (pred[2:], target[2:])]])
    assert per_batch_mean != pytest.approx(whole.miou_dataset, abs=1e-6)


def test_per_image_confusion_sums_to_dataset_confusion():
    pred, target = random_maps(seed=2, n=5, num_classes=5)
    cms = per_image_confusion(pred, target, 5)
    assert cms.shape == (5, 5, 5) and cms.dtype == torch.int64
    for i in range(5):
        assert torch.equal(cms[i], confusion_matrix(pred[i], target[i], 5))
    assert torch.equal(cms.sum(0), confusion_matrix(pred, target, 5))
    assert cms.sum() == (target != IGNORE).sum()


def test_uint8_inputs_and_validation():
    pred, target = random_maps(seed=3, n=2, num_classes=5)
    assert torch.equal(confusion_matrix(pred.byte(), target.byte(), 5), confusion_matrix(pred, target, 5))
    with pytest.raises(ValueError, match="pred value 5"):
        confusion_matrix(torch.full((2, 2), 5), torch.zeros(2, 2, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="pred value -1"):
        confusion_matrix(torch.full((2, 2), -1), torch.zeros(2, 2, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="target value 7"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), 5)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="ignore_index 0"):
        confusion_matrix(pred, target, 5, ignore_index=0)


def test_scores_to_dict():
    empty = MeanIoU(3).compute()
    assert math.isnan(empty.miou_image) and empty.n_images == 0
    d = empty.to_dict()
    assert set(d) == {"miou_image", "miou_dataset", "per_class", "pixel_accuracy", "n_images", "foreground_ratio"}
    assert d["miou_image"] is None and d["per_class"] == [None, None, None] and d["foreground_ratio"] is None
    json.dumps(d, allow_nan=False)


def test_foreground_ratio_counts_predicted_over_true_foreground():
    """Predicted non-background pixels over true non-background pixels, ignored pixels left out."""
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 255]])
    everything_background = torch.zeros_like(target)
    metric = MeanIoU(3)
    metric.update(everything_background[None], target[None])
    assert metric.compute().foreground_ratio == 0.0
    pred = torch.tensor([[1, 0, 0, 1], [2, 0, 0, 2]])  # 4 foreground predictions on scored pixels
    metric = MeanIoU(3)
    metric.update(pred[None], target[None])
    true_fg = int(((target != 0) & (target != 255)).sum())
    pred_fg = int(((pred != 0) & (target != 255)).sum())
    assert metric.compute().foreground_ratio == pytest.approx(pred_fg / true_fg) == pytest.approx(3 / 5)


# --- agreement with torchmetrics --------------------------------------------------------------------------


def assert_matches_torchmetrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    """Dataset mIoU = torchmetrics macro on the whole set; per-image mIoU = mean of torchmetrics per image."""
    s = scores_of([(pred[i : i + 3], target[i : i + 3]) for i in range(0, len(pred), 3)], num_classes)
    assert s.miou_dataset == pytest.approx(float(tm_iou(pred, target, num_classes)), abs=1e-6)
    per_class = tm_iou(pred, target, num_classes, average="none")
    for ours, theirs in zip(s.per_class, per_class.tolist(), strict=True):
        assert theirs == 0.0 if ours is None else ours == pytest.approx(theirs, abs=1e-6)
    per_image = torch.stack([tm_iou(p[None], t[None], num_classes) for p, t in zip(pred, target, strict=True)])
    scored = ~per_image.isnan()
    assert s.n_images == int(scored.sum())
    assert s.miou_image == pytest.approx(float(per_image[scored].double().mean()), abs=1e-6)


def test_torchmetrics_macro_skips_a_class_absent_from_both():
    # class 3 never occurs: torchmetrics macro = mean over classes 0-2, as ours; "none" reports it as 0.
    target = torch.tensor([[[0, 0], [1, 2]]])
    pred = torch.tensor([[[0, 1], [1, 2]]])
    expected = (1 / 2 + 1 / 2 + 1) / 3
    assert float(tm_iou(pred, target, 4)) == pytest.approx(expected)
    assert scores_of([(pred, target)], 4).miou_dataset == pytest.approx(expected)
    assert tm_iou(pred, target, 4, average="none")[3] == 0.0


@pytest.mark.parametrize("num_classes", [2, 5, 8])  # 8: classes 5-7 absent from the whole set
def test_random_maps_match_torchmetrics(num_classes):
    pred, target = random_maps(seed=num_classes, n=10, num_classes=num_classes)
    assert_matches_torchmetrics(pred, target, num_classes)


def test_every_class_present_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (6, 16, 16), generator=g)
    pred = torch.randint(0, 4, (6, 16, 16), generator=g)
    target[:, 0, 0] = IGNORE
    assert_matches_torchmetrics(pred, target, 4)


def render_gt(coco, image_id: int, value_of: dict[int, int]) -> np.ndarray:
    """Run A's rule: np.maximum of each annotation's mask times its class value."""
    im = coco.imgs[image_id]
    mask = np.zeros((im["height"], im["width"]), dtype=np.uint8)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
        mask = np.maximum(coco.annToMask(ann) * value_of[ann["category_id"]], mask)
    return mask


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy 2 copy-keyword warning
def test_real_masks_match_torchmetrics():
    if not REAL_GT.exists():
        pytest.skip(f"real ground truth not present at {REAL_GT}")
    from pycocotools.coco import COCO

    coco = COCO(str(REAL_GT))
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    value_of = {c["id"]: 1 + i for i, c in enumerate(cats)}
    num_classes = 1 + len(cats)
    rng = np.random.default_rng(0)
    ids = [i for i in sorted(coco.imgs) if coco.getAnnIds(imgIds=i)][:8]
    sizes = {(coco.imgs[i]["height"], coco.imgs[i]["width"]) for i in ids}
    ids = [i for i in ids if (coco.imgs[i]["height"], coco.imgs[i]["width"]) == min(sizes)]
    truths, preds = [], []
    for image_id in ids:
        gt = render_gt(coco, image_id, value_of)
        pred = np.roll(gt, shift=(3, -4), axis=(0, 1))  # a misaligned prediction
        y, x = rng.integers(0, gt.shape[0] // 2), rng.integers(0, gt.shape[1] // 2)
        pred[y : y + 40, x : x + 60] = rng.integers(0, num_classes)  # a wrongly labelled region
        gt[:2] = IGNORE  # an unlabelled border
        truths.append(gt)
        preds.append(pred)
    assert len(ids) >= 2
    assert_matches_torchmetrics(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(truths)), num_classes)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_inputs_give_the_same_scores():
    pred, target = random_maps(seed=4, n=6, num_classes=5)
    on_cpu = scores_of([(pred, target)], 5)
    for device in ("cpu", "cuda"):
        metric = MeanIoU(5, ignore_index=IGNORE, device=device)
        metric.update(pred.cuda(), target.cuda())
        assert metric.confusion.device.type == device
        assert metric.compute() == on_cpu
