"""Post-processing fitted out of fold (`--post auto`): class calibration for mIoU, then a dense CRF, then
small-region cleanup, each kept only where its held-out gain beats the noise. The result is a
predict.decide.Decision, saved as `postprocess.json` beside the probabilities it was fitted on and applied
identically to the test set. `--post auto:STEPS` fits only the steps named (e.g. auto:calibration,cleanup).

Honest selection, as the ensemble weight fit: the out-of-fold images are split into two random halves; each
step is fitted on one half and scored on the other (every image scored by parameters fitted without it).
A step is kept when its held-out gain over the decision before it exceeds Z standard errors (jackknife over
images, ensemble.noise); the kept parameters are then fitted on all out-of-fold images.

- Calibration: per-class offsets on the log-probabilities (background's fixed at 0), coordinate ascent over a
  grid, two rounds, on a regular sample of each image's pixels (every s-th row and column, s chosen so the
  sample stays near SAMPLE_PIXELS). Changing one class's offset only moves pixels between that class and the
  best other class, so each grid value costs one comparison and one bincount of per-image confusion counts.
  A class without truth pixels in the fitted images keeps offset 0.
- Dense CRF (ensemble.postcrf): one of a few parameter sets or none, on an even subset of the images.
- Cleanup (ensemble.postclean): per class, the minimum area of its 8-connected regions.

The reported `after` is the held-out score of the last kept step. Each step is fitted and scored on top of the
steps before it refitted on every image, so when several are kept the earlier parts of `after` are in-sample
(their own held-out gains are reported beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.core.errors import UsageError
from competition.core.geometry import resize_nearest
from competition.core.log import Log
from competition.core.runs import read_config
from competition.data import ClassTable, DataRoot, ImageInfo, MaskStore
from competition.ensemble.member_weights import halves
from competition.ensemble.members import Member, OofProbs, check_classes, oof_images, read_oof
from competition.ensemble.noise import Gain, gain, metric_value, ranking_values
from competition.ensemble.postclean import AREAS, Regions, find_regions, fit_areas, held_out_cleanup, image_confusion
from competition.ensemble.postcrf import fit_crf
from competition.predict import (
    BLOCK,
    CRF_INSTALL,
    EPS,
    FILE,
    Decision,
    argmax,
    coefficients,
    crf_available,
    crf_processes,
    grid_images,
    mix,
    read_decision,
    run_classes,
    write_decision,
)

__all__ = ["AREAS", "Regions", "confusion", "fit_areas", "fit_offsets", "fit_post", "image_confusion", "ranking_values",
           "run_post"]  # fmt: skip

Z = 2.0
STEPS = ("calibration", "crf", "cleanup")  # in the order they are fitted and applied
GRID = np.round(np.arange(-2.0, 2.01, 0.25), 2)  # offsets tried per class (log-probability units)
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


class OofStream:
    """The blended out-of-fold probabilities of members (with weights), BLOCK images at a time."""

    def __init__(self, members: Sequence[Member], weights: np.ndarray, root: DataRoot, classes: ClassTable):
        self.oofs: list[OofProbs] = [read_oof(m) for m in members]
        tables = [(m.dir, o.classes) for m, o in zip(members, self.oofs, strict=True)]
        check_classes([(members[0].dir, list(classes.names)), *tables])
        self.images = oof_images(members, self.oofs, root)
        self.coefs = coefficients(weights, [o.unit for o in self.oofs])
        self.masks: MaskStore = root.masks("train_all", classes, members[0].cfg["overlap"])
        self.root = root
        self._pixels = None

    def pixels(self, names: Sequence[str]) -> np.ndarray:
        """The images [B, 256, 256, 3] of these out-of-fold rows (for the CRF), cached on first use."""
        if self._pixels is None:
            self._pixels = grid_images(self.root, "train_all")
        return self._pixels(names)

    def scores(self, decision: Decision, start: int, probs: np.ndarray) -> np.ndarray:
        """`decision`'s calibrated scores of the block of rows from `start` (with their images when it has a CRF)."""
        names = [im.file_name for im in self.images[start : start + len(probs)]]
        return decision.scores(probs, self.pixels(names) if decision.needs_images else None)

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


def parse_steps(spec: str) -> tuple[str, ...] | None:
    """`auto` -> None (every step; the CRF where installed), `auto:a,b` -> those steps (UsageError otherwise)."""
    if spec == "auto":
        return None
    names = tuple(x.strip() for x in spec.split(":", 1)[1].split(",") if x.strip())
    unknown = [x for x in names if x not in STEPS]
    if unknown or not names:
        raise UsageError(f"--post {spec}: steps are {', '.join(STEPS)} (e.g. auto:calibration,cleanup)")
    return names


def fit_post(
    members: Sequence[Member],
    weights: np.ndarray,
    root: DataRoot,
    classes: ClassTable,
    log: Log,
    steps: Sequence[str] | None = None,
) -> Decision:
    """The post-processing that survives the held-out test, fitted on every out-of-fold image. `steps`: the
    steps to fit (None: all; the CRF only where pydensecrf2 is installed, and saying so where not)."""
    metric = members[0].cfg["metric"]
    stream = OofStream(members, np.asarray(weights, np.float64), root, classes)
    n = len(stream.images)
    if n < 4:
        log("post-processing: fewer than 4 out-of-fold images; plain argmax")
        return Decision(tuple(classes.names), report={"reason": "fewer than 4 out-of-fold images"})
    ev = gather(stream, classes)
    log(f"post-processing: {n} out-of-fold images (halves {np.bincount(ev.part_of).tolist()}), "
        f"calibration sample {ev.scores.shape[2]:,} pixels per image")  # fmt: skip
    report: dict = {"metric": metric, "z": Z, "images": n, "before": metric_value(ev.plain, metric)}
    wanted = set(STEPS if steps is None else steps)
    report["steps"] = [x for x in STEPS if x in wanted]
    with crf_processes() if "crf" in wanted and crf_available() else nullcontext():  # ended before returning
        return _fit_steps(stream, ev, classes, metric, wanted, report, log)


def _fit_steps(
    stream: OofStream, ev: Evidence, classes: ClassTable, metric: str, wanted: set, report: dict, log: Log
) -> Decision:
    """The steps asked for, each on top of those kept before it: the final decision, with the report."""
    base, after = Decision(tuple(classes.names)), ev.plain
    if "calibration" in wanted:
        base, after = calibrate(stream, ev, classes, metric, report, log)
    else:
        report["calibration"] = {"kept": False, "skipped": "not asked for"}
    crf = None
    if "crf" in wanted:  # on the decision so far
        bases = [base] + ([Decision(base.classes)] if base.offsets is not None else [])
        fit = fit_crf(stream, bases, ev.part_of, classes, metric, Z, log)
        report["crf"] = fit.extra
        if fit.step is not None:
            report["crf"] |= _step(fit.step, fit.kept, metric_value(fit.after, metric), classes, fit.before, fit.after)
        crf = fit.params
        if fit.kept and base.offsets is not None and fit.offsets is None:  # better on the plain scores
            report["calibration"]["dropped"] = "the dense CRF scored higher on the plain scores"
            log("  calibration: dropped (the dense CRF scored higher on the plain scores)")
        base = Decision(base.classes, fit.offsets if fit.kept else base.offsets, crf=crf)
    else:
        report["crf"] = {"kept": False, "skipped": "not asked for"}
    decision, base_cm = base, None
    if "cleanup" in wanted:  # on the decision so far
        decision, base_cm, cleaned = clean(stream, base, ev.part_of, classes, metric, report, log)
        if decision.min_area is not None:
            after = cleaned
    else:
        report["cleanup"] = {"kept": False, "skipped": "not asked for"}
    if decision.min_area is None and crf is not None:  # the CRF was the last kept step: score it on every image
        after = base_cm if base_cm is not None else confusions(stream, decision, classes)
    report["after"] = metric_value(after, metric)
    log(
        f"  out-of-fold {metric} mIoU {report['before']:.4f} -> {report['after']:.4f} (held out): {decision.describe()}"
    )
    return Decision(decision.classes, decision.offsets, decision.min_area, report, decision.crf)


def calibrate(stream: OofStream, ev: Evidence, classes: ClassTable, metric: str, report: dict, log: Log):
    """The calibration step: the decision with its offsets (or plain, when not kept) and the held-out
    confusion [n, C, C] after it (the argmax's when not kept)."""
    c, ignore = classes.num_classes, classes.ignore_index
    half_offsets = [fit_offsets(ev.scores[ev.part_of == h], ev.truth[ev.part_of == h], classes, metric) for h in (0, 1)]
    held = np.zeros_like(ev.plain)
    other_half = np.stack(half_offsets)[1 - ev.part_of]  # [n, C]: each image's offsets, fitted without it
    for start, probs, truth in stream:
        b = len(probs)
        scores = np.log(probs + np.float32(EPS)) + other_half[start : start + b, :, None, None]
        pred = argmax(scores, 1)
        for j in range(b):
            held[start + j] = image_confusion(truth[j], pred[j], c, ignore)
    step = gain(held, ev.plain, metric)
    kept = step.beats(Z)
    fitted = fit_offsets(ev.scores, ev.truth, classes, metric)  # on every image; used only if kept
    base = Decision(tuple(classes.names), tuple(float(v) for v in fitted) if kept else None)
    report["calibration"] = _step(step, kept, metric_value(held, metric), classes, ev.plain, held)
    report["calibration"] |= {"fitted": [float(v) for v in fitted], "half_fits": [h.tolist() for h in half_offsets]}
    log(f"  calibration: held-out gain {step} -> {'kept' if kept else 'not kept'} ({base.describe()})")
    return base, (held if kept else ev.plain)


def clean(stream: OofStream, base: Decision, part_of: np.ndarray, classes: ClassTable, metric: str, report, log):
    """The cleanup step on top of `base`: the decision with it (or `base`, when not kept), the confusion of
    `base` and the held-out confusion after the cleanup, both [n, C, C]."""
    n, c, ignore = len(stream.images), classes.num_classes, classes.ignore_index
    base_cm, regions = find_regions(stream, base, classes)
    fits = [fit_areas(regions, base_cm, part_of == h, metric) for h in (0, 1)]
    cleaned = held_out_cleanup(stream, base, fits, part_of, c, ignore)
    step = gain(cleaned, base_cm, metric)
    kept = step.beats(Z)
    fitted = fit_areas(regions, base_cm, np.ones(n, bool), metric)
    report["cleanup"] = _step(step, kept, metric_value(cleaned, metric), classes, base_cm, cleaned)
    report["cleanup"] |= {"fitted": [int(a) for a in fitted], "half_fits": [[int(a) for a in f] for f in fits]}
    log(f"  cleanup: held-out gain {step} -> {'kept' if kept else 'not kept'}")
    decision = Decision(base.classes, base.offsets, tuple(int(a) for a in fitted) if kept else None, crf=base.crf)
    return decision, base_cm, cleaned


def confusions(stream: OofStream, decision: Decision, classes: ClassTable) -> np.ndarray:
    """The confusion [n, C, C] of a decision on every out-of-fold image."""
    cm = np.zeros((len(stream.images), classes.num_classes, classes.num_classes), np.int64)
    for start, probs, truth in stream:
        pred = argmax(stream.scores(decision, start, probs), 1)
        for j in range(len(probs)):
            cm[start + j] = image_confusion(truth[j], pred[j], classes.num_classes, classes.ignore_index)
    return cm


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
    folder/postprocess.json; auto:STEPS only those steps) or a postprocess.json FILE (fitted earlier, e.g. on
    a larger ensemble)."""
    if spec in (None, "none"):
        return None
    if spec == "auto" or spec.startswith("auto:"):
        steps = parse_steps(spec)
        if steps is not None and "crf" in steps and not crf_available():
            raise UsageError(f"--post {spec}: the dense CRF needs pydensecrf2, which is not installed: {CRF_INSTALL}")
        decision = fit_post(members, weights, root, classes, log, steps)
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
