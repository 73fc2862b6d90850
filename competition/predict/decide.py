"""How probabilities become class decisions: a plain argmax, or a post-processing fitted out of fold
(`postprocess.json`, fitted by competition.ensemble.postfit) applied identically to out-of-fold and test
probabilities.

Three steps, each optional, in this order:
- class calibration: per-class offsets added to the log-probabilities before the argmax,
  decision = argmax_c(log(p_c + EPS) + offset_c). mIoU weighs a class's false positives and false negatives
  equally; a plain argmax under-predicts rare classes, and a positive offset moves pixels to them.
- dense CRF (predict.crf): the calibrated scores as unaries, the image as the appearance kernel's features;
  the calibrated scores become log(Q + EPS) of its marginals Q. Needs the images of the rows (`images`).
- small-region cleanup: per class c with min_area[c] > 0, every 8-connected region of c smaller than that
  (pixels of the 256 x 256 grid) is given, pixel by pixel, to the best other class (calibrated scores).

All on the 256 x 256 submission grid, in numpy/OpenCV (the CRF in C++), per block of images: no Python loop
over pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from competition.core.errors import UserError
from competition.core.fileio import read_user_text, write_json
from competition.predict.crf import CrfParams, parse_params, refine, require
from competition.predict.probs import EPS, argmax

FILE = "postprocess.json"
VERSION = 1


@dataclass(frozen=True)
class Decision:
    """Offsets per class (None: none), dense CRF parameters (None: none) and minimum region areas per class
    (None or 0: no cleanup), with the out-of-fold report of how they were chosen."""

    classes: tuple[str, ...]
    offsets: tuple[float, ...] | None = None
    min_area: tuple[int, ...] | None = None
    report: dict[str, Any] = field(default_factory=dict, compare=False)
    crf: CrfParams | None = None

    @property
    def is_plain(self) -> bool:
        return self.offsets is None and self.crf is None and not any(self.min_area or ())

    @property
    def needs_images(self) -> bool:
        return self.crf is not None

    def describe(self) -> str:
        if self.is_plain:
            return "argmax"
        steps = []
        if self.offsets is not None:
            moved = [f"{n} {o:+.2f}" for n, o in zip(self.classes, self.offsets, strict=True) if o]
            steps.append("class offsets " + (", ".join(moved) or "all 0"))
        if self.crf is not None:
            steps.append(self.crf.describe())
        if any(self.min_area or ()):
            areas = [f"{n} <{a}px" for n, a in zip(self.classes, self.min_area or (), strict=True) if a]
            steps.append("cleanup " + ", ".join(areas))
        return "; ".join(steps)

    def scores(self, probs: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
        """Calibrated scores [B, C, H, W] (float32) of probabilities [B, C, H, W]; after the CRF when there is
        one (`images` [B, H, W, 3] uint8, the rows' images on the grid)."""
        scores = np.log(np.asarray(probs, np.float32) + np.float32(EPS))
        if self.offsets is not None:
            scores += np.asarray(self.offsets, np.float32)[None, :, None, None]
        if self.crf is not None:
            if images is None:
                raise ValueError("a decision with a dense CRF needs the images of its rows")
            scores = np.log(refine(scores, images, self.crf) + np.float32(EPS))
        return scores

    def masks(self, probs: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
        """Class decisions [B, H, W] (uint8) of probabilities [B, C, H, W] (`images`: see scores)."""
        if self.is_plain:
            return argmax(probs, 1)
        scores = self.scores(probs, images)
        masks = argmax(scores, 1)
        if any(self.min_area or ()):
            for b in range(len(masks)):
                masks[b] = cleanup(masks[b], scores[b], self.min_area or ())
        return masks

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "classes": list(self.classes),
            "offsets": None if self.offsets is None else list(self.offsets),
            "min_area": None if self.min_area is None else list(self.min_area),
            "crf": None if self.crf is None else self.crf.to_dict(),
            "eps": EPS,
            "report": self.report,
        }


def small_regions(mask: np.ndarray, c: int, min_area: int) -> np.ndarray:
    """Pixels [H, W] bool of the 8-connected regions of class c smaller than min_area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask == c).view(np.uint8), connectivity=8)
    small = np.zeros(n, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < min_area
    return small[labels]


def second_best(scores: np.ndarray, c: int) -> np.ndarray:
    """Per pixel [H, W], the best class other than c (scores [C, H, W])."""
    others = scores.copy()
    others[c] = -np.inf
    return argmax(others, 0)


def cleanup(mask: np.ndarray, scores: np.ndarray, min_area: Sequence[int]) -> np.ndarray:
    """`mask` [H, W] with the small regions of each class (in class order) given to the best other class."""
    mask = mask.copy()
    for c, area in enumerate(min_area):
        if area and (mask == c).any():
            small = small_regions(mask, c, int(area))
            if small.any():
                mask[small] = second_best(scores, c)[small]
    return mask


def write_decision(path: Path, decision: Decision) -> Path:
    return write_json(path, decision.to_dict())


def read_decision(path: Path, classes: Sequence[str]) -> Decision:
    """A postprocess.json for these classes; UserError naming the file when it is not one."""
    text = read_user_text(path, "post-processing file", 1 << 20)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UserError(f"{path}: not a post-processing file ({str(e)[:80]})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise UserError(f"{path}: not a post-processing file of version {VERSION} (fit one with --post auto)")
    if data.get("classes") != list(classes):
        raise UserError(f"{path}: fitted for classes {data.get('classes')}, not {list(classes)}")
    n = len(classes)
    offsets, areas = data.get("offsets"), data.get("min_area")
    ok_offsets = offsets is None or (
        isinstance(offsets, list) and len(offsets) == n and all(_finite(v) for v in offsets)
    )
    ok_areas = areas is None or (
        isinstance(areas, list) and len(areas) == n and all(isinstance(v, int) and v >= 0 for v in areas)
    )
    if not ok_offsets or not ok_areas or data.get("eps") != EPS:
        raise UserError(f"{path}: offsets or min_area are not {n} numbers, or another EPS; fit it again")
    crf = parse_params(data.get("crf"))
    if data.get("crf") is not None and crf is None:
        raise UserError(f"{path}: crf is not a set of {len(CrfParams.__dataclass_fields__)} positive numbers")
    if crf is not None:
        require()  # a file asking for the CRF is refused where it cannot run, never applied without it
    return Decision(
        tuple(classes),
        None if offsets is None else tuple(float(v) for v in offsets),
        None if areas is None else tuple(int(v) for v in areas),
        data.get("report") or {},
        crf,
    )


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
