"""Post-processing fitted out of fold (`--post auto`): class calibration for mIoU, then small-region cleanup,
each kept only where its held-out gain beats the noise. The result is a predict.decide.Decision, saved as
`postprocess.json` beside the probabilities it was fitted on and applied identically to the test set.

Honest selection, as the ensemble weight fit: the out-of-fold images are split into two random halves; each
step is fitted on one half and scored on the other (every image scored by parameters fitted without it).
A step is kept when its held-out gain over the decision before it exceeds Z standard errors (jackknife over
images, ensemble.noise); the kept parameters are then fitted on all out-of-fold images.

- Calibration: per-class offsets on the log-probabilities (background's fixed at 0), coordinate ascent over a
  grid, two rounds, on a regular sample of each image's pixels (every s-th row and column, s chosen so the
  sample stays near SAMPLE_PIXELS). Changing one class's offset only moves pixels between that class and the
  best other class, so each grid value costs one comparison and one bincount of per-image confusion counts.
  A class without truth pixels in the fitted images keeps offset 0.
- Cleanup: per class, the minimum area (from AREAS, 0 = none) of its 8-connected regions. Regions are found
  once under the calibrated decision; removing one moves its pixels to their second-best class, so each
  candidate area is an exact update of per-image confusion counts. Classes are fitted in class order, each
  given the areas already chosen; the held-out score applies the real cleanup (predict.decide.cleanup).

The reported `after` is the held-out score of the last kept step. Cleanup is fitted and scored on top of the
calibration refitted on every image, so when both are kept the calibration part of `after` is in-sample (its
own held-out gain is reported beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from competition.core.geometry import resize_nearest
from competition.core.log import Log
from competition.core.runs import read_config
from competition.data import ClassTable, DataRoot, ImageInfo, MaskStore
from competition.ensemble.member_weights import halves
from competition.ensemble.members import Member, OofProbs, check_classes, oof_images, read_oof
from competition.ensemble.noise import Gain, gain, metric_value
from competition.predict import (
    BLOCK,
    EPS,
    FILE,
    Decision,
    argmax,
    cleanup,
    coefficients,
    mix,
    read_decision,
    run_classes,
    write_decision,
)

Z = 2.0
GRID = np.round(np.arange(-2.0, 2.01, 0.25), 2)  # offsets tried per class (log-probability units)
AREAS = (0, 8, 16, 32, 64, 128, 256, 512, 1024)  # minimum region areas tried per class (256 x 256 pixels)
SAMPLE_PIXELS = 2_000_000  # calibration sample, all images together


@dataclass
class Evidence:
    """What the passes over the out-of-fold probabilities gathered."""

    images: list[ImageInfo]
    part_of: np.ndarray  # [n] half of each image
    plain: np.ndarray  # [n, C, C] confusion of the argmax
    scores: np.ndarray  # [n, C, P] float16 sampled log-probabilities
    truth: np.ndarray  # [n, P] sampled truth


def confusion(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, n: int, c: int, ignore: int) -> np.ndarray:
    """Per-image confusion [n, C, C] of pixels (image index, truth, prediction), ignored truth left out."""
    keep = truth != ignore
    cells = (images[keep] * c + truth[keep].astype(np.int64)) * c + pred[keep]
    return np.bincount(cells, minlength=n * c * c).reshape(n, c, c)


def image_confusion(truth: np.ndarray, pred: np.ndarray, c: int, ignore: int) -> np.ndarray:
    """The confusion [C, C] of one image's pixels (truth [H, W], prediction [H, W])."""
    keep = truth != ignore
    return np.bincount(truth[keep].astype(np.int64) * c + pred[keep], minlength=c * c).reshape(c, c)


def second_best_map(scores: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Per pixel [H, W], the best class other than its decision `top` (scores [C, H, W])."""
    others = scores.copy()
    np.put_along_axis(others, top[None].astype(np.int64), -np.inf, axis=0)
    return argmax(others, 0)


class OofStream:
    """The blended out-of-fold probabilities of members (with weights), BLOCK images at a time."""

    def __init__(self, members: Sequence[Member], weights: np.ndarray, root: DataRoot, classes: ClassTable):
        self.oofs: list[OofProbs] = [read_oof(m) for m in members]
        tables = [(m.dir, o.classes) for m, o in zip(members, self.oofs, strict=True)]
        check_classes([(members[0].dir, list(classes.names)), *tables])
        self.images = oof_images(members, self.oofs, root)
        self.coefs = coefficients(weights, [o.unit for o in self.oofs])
        self.masks: MaskStore = root.masks("train_all", classes, members[0].cfg["overlap"])

    def __iter__(self):
        for start in range(0, len(self.images), BLOCK):
            chunk = self.images[start : start + BLOCK]
            names = [im.file_name for im in chunk]
            probs = mix([o.block(names) for o in self.oofs], self.coefs)
            truth = np.stack([resize_nearest(self.masks[im.id]) for im in chunk])
            yield start, probs, truth


def sample_step(n_images: int, side: int = 256) -> int:
    """Every s-th row and column, s in 1, 2, 4, ... so the calibration sample stays near SAMPLE_PIXELS."""
    s = 1
    while n_images * (side // s) ** 2 > SAMPLE_PIXELS and s < side // 16:
        s *= 2
    return s


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


def fit_offsets(scores: np.ndarray, truth: np.ndarray, classes: ClassTable, metric: str) -> np.ndarray:
    """Per-class offsets (GRID) maximising the ranking mIoU of sampled pixels (scores [n, C, P], truth [n, P]),
    by coordinate ascent, two rounds, background fixed at 0.

    For class k the other offsets fixed, a pixel is k exactly when margin = score_k - max_{c != k}(score_c +
    offset_c) exceeds -offset_k, else its best other class. Binning the pixels by the grid value at which they
    turn to k gives, in two bincounts, the per-image confusion of every grid value at once (cumulative sums)."""
    n, c, p = scores.shape
    flat = np.moveaxis(scores, 1, 0).reshape(c, -1).astype(np.float32)  # [C, n P]
    t = truth.reshape(-1).astype(np.int64)
    keep = t != classes.ignore_index
    flat, t = flat[:, keep], t[keep]
    base = (np.repeat(np.arange(n), p)[keep] * c + t) * c  # the confusion cell of prediction 0
    present = np.bincount(t, minlength=c) > 0
    offsets = np.zeros(c, np.float32)
    grid = np.sort(GRID).astype(np.float32)
    cells = n * c * c
    top = argmax(flat, 0).astype(np.int64)  # the decision under the current offsets, kept up to date
    top_val = flat.max(0)
    for _ in range(2):
        for k in range(1, c):
            if not present[k]:  # no truth pixels: left alone
                continue
            other, other_val = top.copy(), top_val.copy()  # the best class other than k, and its score
            here = np.nonzero(top == k)[0]
            if len(here):
                rest = flat[:, here] + offsets[:, None]
                rest[k] = -np.inf
                other[here], other_val[here] = argmax(rest, 0), rest.max(0)
            margin = flat[k] - other_val
            # the pixel is k for every grid value g > -margin: it turns to k from grid index `turn` on
            turn = np.searchsorted(grid, -margin, side="right")
            as_k = np.bincount(turn * cells + base + k, minlength=(len(grid) + 1) * cells)
            as_other = np.bincount(turn * cells + base + other, minlength=(len(grid) + 1) * cells)
            as_k = as_k.reshape(len(grid) + 1, n, c, c)
            as_other = as_other.reshape(len(grid) + 1, n, c, c)
            # at grid index j: pixels with turn <= j are k, the others their best other class
            k_part = np.cumsum(as_k, 0)[: len(grid)]
            other_part = as_other.sum(0)[None] - np.cumsum(as_other, 0)[: len(grid)]
            values = ranking_values(k_part + other_part, metric)
            best = max(range(len(grid)), key=lambda j: (round(float(values[j]), 9), -abs(float(grid[j]))))
            offsets[k] = grid[best]
            is_k = flat[k] + offsets[k] > other_val
            top, top_val = np.where(is_k, k, other), np.where(is_k, flat[k] + offsets[k], other_val)
    return offsets


def gather(stream: OofStream, classes: ClassTable) -> Evidence:
    """Pass 1: the argmax's confusion and the calibration sample."""
    n, c = len(stream.images), classes.num_classes
    s = sample_step(n)
    side = 256 // s
    plain = np.zeros((n, c, c), np.int64)
    scores = np.zeros((n, c, side * side), np.float16)
    truth = np.zeros((n, side * side), np.uint8)
    for start, probs, t in stream:
        b = len(probs)
        index = np.repeat(np.arange(start, start + b), t[0].size)
        plain += confusion(index, t.reshape(-1), argmax(probs, 1).reshape(-1), n, c, classes.ignore_index)
        sampled = probs[:, :, ::s, ::s]
        scores[start : start + b] = np.log(sampled + np.float32(EPS)).reshape(b, c, -1)
        truth[start : start + b] = t[:, ::s, ::s].reshape(b, -1)
    return Evidence(stream.images, halves(n), plain, scores, truth)


@dataclass
class Regions:
    """Connected regions of the calibrated decision: image, class and area of each, and the sparse counts of
    (region, truth, second-best class) of their pixels."""

    image: np.ndarray
    klass: np.ndarray
    area: np.ndarray
    entry_region: np.ndarray
    entry_cell: np.ndarray  # truth x C + second-best class
    entry_count: np.ndarray

    def delta(self, chosen: np.ndarray, n: int, c: int) -> np.ndarray:
        """Per-image confusion change [n, C, C] of removing the regions `chosen` (bool per region)."""
        take = chosen[self.entry_region]
        region, cell, count = self.entry_region[take], self.entry_cell[take], self.entry_count[take]
        img, truth, alt = self.image[region], cell // c, cell % c
        delta = np.zeros(n * c * c, np.int64)
        np.add.at(delta, (img * c + truth) * c + alt, count)
        np.add.at(delta, (img * c + truth) * c + self.klass[region], -count)
        return delta.reshape(n, c, c)


def find_regions(stream: OofStream, base: Decision, classes: ClassTable) -> tuple[np.ndarray, Regions]:
    """Pass 2: the confusion [n, C, C] of `base` and the regions of its decisions."""
    n, c, ignore = len(stream.images), classes.num_classes, classes.ignore_index
    cm = np.zeros((n, c, c), np.int64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "klass", "area", "er", "ec", "cnt")}
    next_region = 0
    for start, probs, truth in stream:
        scores = base.scores(probs)
        masks = argmax(scores, 1)
        for b in range(len(masks)):
            i, mask, t = start + b, masks[b], truth[b]
            cm[i] = image_confusion(t, mask, c, ignore)
            alt_all = second_best_map(scores[b], mask).astype(np.int64)
            for k in np.unique(mask):
                count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == k).view(np.uint8), connectivity=8)
                pix = (labels > 0) & (t != ignore)
                region = labels[pix].astype(np.int64) - 1 + next_region
                keys, counts = np.unique((region * c + t[pix].astype(np.int64)) * c + alt_all[pix], return_counts=True)
                parts["er"].append(keys // (c * c))
                parts["ec"].append(keys % (c * c))
                parts["cnt"].append(counts)
                parts["image"].append(np.full(count - 1, i))
                parts["klass"].append(np.full(count - 1, int(k)))
                parts["area"].append(stats[1:, cv2.CC_STAT_AREA].astype(np.int64))
                next_region += count - 1
    join = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}
    return cm, Regions(join["image"], join["klass"], join["area"], join["er"], join["ec"], join["cnt"])


def fit_areas(regions: Regions, cm: np.ndarray, images: np.ndarray, metric: str) -> np.ndarray:
    """Minimum areas per class (AREAS) maximising the ranking mIoU on `images` (bool per image)."""
    n, c, _ = cm.shape
    inside = images[regions.image]
    chosen = np.zeros(len(regions.area), bool)
    areas = np.zeros(c, np.int64)
    base = np.where(images[:, None, None], cm, 0)
    for k in range(c):
        candidates = (regions.klass == k) & inside
        if not candidates.any():
            continue
        values = []
        for a in AREAS:
            trial = chosen | (candidates & (regions.area < a))
            values.append(float(ranking_values(base + regions.delta(trial, n, c), metric)))
        best = max(range(len(AREAS)), key=lambda j: (round(values[j], 9), -AREAS[j]))
        areas[k] = AREAS[best]
        chosen |= candidates & (regions.area < areas[k])
    return areas


def held_out_cleanup(
    stream: OofStream, base: Decision, fits: Sequence[np.ndarray], part_of: np.ndarray, c: int, ignore: int
) -> np.ndarray:
    """Pass 3: the confusion [n, C, C] of the real cleanup, each image with the areas fitted on the other half."""
    n = len(stream.images)
    cm = np.zeros((n, c, c), np.int64)
    for start, probs, truth in stream:
        scores = base.scores(probs)
        masks = argmax(scores, 1)
        for b in range(len(masks)):
            i = start + b
            areas = fits[1 - part_of[i]]
            mask = cleanup(masks[b], scores[b], areas) if areas.any() else masks[b]
            cm[i] = image_confusion(truth[b], mask, c, ignore)
    return cm


def fit_post(members: Sequence[Member], weights: np.ndarray, root: DataRoot, classes: ClassTable, log: Log) -> Decision:
    """The post-processing that survives the held-out test, fitted on every out-of-fold image."""
    metric, c, ignore = members[0].cfg["metric"], classes.num_classes, classes.ignore_index
    stream = OofStream(members, np.asarray(weights, np.float64), root, classes)
    n = len(stream.images)
    if n < 4:
        log("post-processing: fewer than 4 out-of-fold images; plain argmax")
        return Decision(tuple(classes.names), report={"reason": "fewer than 4 out-of-fold images"})
    ev = gather(stream, classes)
    log(f"post-processing: {n} out-of-fold images (halves {np.bincount(ev.part_of).tolist()}), "
        f"calibration sample {ev.scores.shape[2]:,} pixels per image")  # fmt: skip
    report: dict = {"metric": metric, "z": Z, "images": n, "before": metric_value(ev.plain, metric)}
    # calibration
    half_offsets = [fit_offsets(ev.scores[ev.part_of == h], ev.truth[ev.part_of == h], classes, metric) for h in (0, 1)]
    held = np.zeros_like(ev.plain)
    other_half = np.stack(half_offsets)[1 - ev.part_of]  # [n, C]: each image's offsets, fitted without it
    for start, probs, truth in stream:
        b = len(probs)
        scores = np.log(probs + np.float32(EPS)) + other_half[start : start + b, :, None, None]
        pred = argmax(scores, 1)
        for j in range(b):
            held[start + j] = image_confusion(truth[j], pred[j], c, ignore)
    calibration = gain(held, ev.plain, metric)
    keep_cal = calibration.beats(Z)
    fitted = fit_offsets(ev.scores, ev.truth, classes, metric)  # on every image; used only if kept
    offsets = fitted if keep_cal else None
    base = Decision(tuple(classes.names), None if offsets is None else tuple(float(v) for v in offsets))
    report["calibration"] = _step(calibration, keep_cal, metric_value(held, metric), classes, ev.plain, held)
    report["calibration"] |= {"fitted": [float(v) for v in fitted], "half_fits": [h.tolist() for h in half_offsets]}
    log(f"  calibration: held-out gain {calibration} -> {'kept' if keep_cal else 'not kept'} ({base.describe()})")
    # cleanup, on the decision so far
    base_cm, regions = find_regions(stream, base, classes)
    fits = [fit_areas(regions, base_cm, ev.part_of == h, metric) for h in (0, 1)]
    cleaned = held_out_cleanup(stream, base, fits, ev.part_of, c, ignore)
    cleanup_gain = gain(cleaned, base_cm, metric)
    keep_clean = cleanup_gain.beats(Z)
    fitted_areas = fit_areas(regions, base_cm, np.ones(n, bool), metric)
    areas = fitted_areas if keep_clean else None
    report["cleanup"] = _step(cleanup_gain, keep_clean, metric_value(cleaned, metric), classes, base_cm, cleaned)
    report["cleanup"] |= {"fitted": [int(a) for a in fitted_areas], "half_fits": [[int(a) for a in f] for f in fits]}
    decision = Decision(base.classes, base.offsets, None if areas is None else tuple(int(a) for a in areas))
    log(f"  cleanup: held-out gain {cleanup_gain} -> {'kept' if keep_clean else 'not kept'}")
    after = cleaned if keep_clean else (held if keep_cal else ev.plain)
    report["after"] = metric_value(after, metric)
    log(
        f"  out-of-fold {metric} mIoU {report['before']:.4f} -> {report['after']:.4f} (held out): {decision.describe()}"
    )
    return Decision(decision.classes, decision.offsets, decision.min_area, report)


def _step(g: Gain, kept: bool, value: float, classes: ClassTable, before: np.ndarray, after: np.ndarray) -> dict:
    return {"gain": g.gain, "se": g.se, "kept": kept, "held_out_miou": value,
            "per_class_before": class_iou(before), "per_class_after": class_iou(after),
            "classes": list(classes.names)}  # fmt: skip


def class_iou(cm: np.ndarray) -> list[float | None]:
    """Dataset IoU of each class from per-image confusion counts (None where a class is absent)."""
    total = cm.sum(0)
    inter = np.diag(total).astype(np.float64)
    union = total.sum(0) + total.sum(1) - np.diag(total)
    return [float(i / u) if u else None for i, u in zip(inter, union, strict=True)]


def choose_post(
    spec: str | None,
    members: Sequence[Member],
    weights: np.ndarray,
    root: DataRoot,
    classes: ClassTable,
    folder: Path,
    log: Log,
) -> Decision | None:
    """`--post`: none (the argmax), auto (fitted here on the members' out-of-fold probabilities, saved as
    folder/postprocess.json) or a postprocess.json FILE (fitted earlier, e.g. on a larger ensemble)."""
    if spec in (None, "none"):
        return None
    if spec == "auto":
        decision = fit_post(members, weights, root, classes, log)
        write_decision(Path(folder) / FILE, decision)
        log(f"post-processing: {Path(folder) / FILE}")
        return decision
    decision = read_decision(Path(spec), classes.names)
    log(f"post-processing from {spec}: {decision.describe()}")
    return decision


def run_post(spec: str | None, run_dir: Path, data: str | None, log: Log) -> Decision | None:
    """`predict RUN --post ...`: the run's decision (auto: fitted on its own out-of-fold probabilities)."""
    if spec in (None, "none"):
        return None
    cfg = read_config(run_dir)
    root = DataRoot(Path(data or cfg["data"]), check_images=False)
    classes = run_classes(run_dir, cfg, root)
    return choose_post(spec, [Member(Path(run_dir), cfg)], np.ones(1), root, classes, run_dir, log)
