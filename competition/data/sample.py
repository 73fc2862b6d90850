"""A synthetic dataset in exactly the competition's layout, for trying the harness without the real data.

`write_sample_dataset(root)` writes images split across `batch_01_vt/`, `batch_02_vt/` and `batch_03/`,
`train_all.json` with the organisers' 80/20 `train.json` / `val.json` split, `test.json` (images only),
`sample_submission.csv` (one empty row per test image, CRLF as the real file), and `test_gt.json`: the test
annotations, which the real competition never gave out, so that a submission made on the sample data can be
scored.

The categories are run A's (0 UNKNOWN ... 10 Clothing), with imbalanced frequencies and a rare UNKNOWN. Each
class has its own colour and texture, so a small network learns it in a few epochs. Annotations are polygons
(some in two parts), compressed RLE and uncompressed RLE; image ids skip a few numbers; a few images are not
square; some images are empty and many have overlapping objects. Each object's pixels are painted through
exactly its annotation mask, in ascending category id, so the run A overlap rule (higher class wins)
reproduces the painted labels. Everything is deterministic from the seed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from competition.core.errors import UserError

NAMES = (
    "UNKNOWN",
    "General trash",
    "Paper",
    "Paper pack",
    "Metal",
    "Glass",
    "Plastic",
    "Styrofoam",
    "Plastic bag",
    "Battery",
    "Clothing",
)
CATEGORIES = tuple({"id": i, "name": name, "supercategory": name} for i, name in enumerate(NAMES))
# Relative object frequency per category id (run A's order of magnitude: Paper and Plastic bag dominate).
CLASS_WEIGHTS = (0.02, 0.12, 0.25, 0.05, 0.05, 0.05, 0.12, 0.08, 0.19, 0.03, 0.04)
# Look of each category id: base RGB colour, texture ("plain", "stripes" or "checker"), period px, angle deg.
APPEARANCE: dict[int, tuple[tuple[int, int, int], str, int, int]] = {
    0: ((35, 35, 35), "checker", 6, 0),
    1: ((110, 70, 40), "stripes", 6, 45),
    2: ((235, 235, 215), "plain", 0, 0),
    3: ((205, 175, 110), "stripes", 8, 0),
    4: ((150, 165, 190), "stripes", 4, 90),
    5: ((50, 170, 90), "plain", 0, 0),
    6: ((40, 100, 225), "plain", 0, 0),
    7: ((240, 190, 210), "checker", 4, 0),
    8: ((215, 50, 45), "plain", 0, 0),
    9: ((235, 205, 30), "stripes", 10, 90),
    10: ((140, 50, 165), "stripes", 5, 135),
}
BATCHES = ("batch_01_vt", "batch_02_vt", "batch_03")
HEADER = "image_id,PredictionString"
INFO = {"description": "synthetic sample dataset (competition layout)", "version": "1.0", "year": 2021}
LICENSES = [{"id": 0, "name": "synthetic, no restrictions", "url": ""}]

OBJECT_COUNT_WEIGHTS = (0.08, 0.22, 0.3, 0.25, 0.15)  # images with 0, 1, 2, 3, 4 objects
FORMAT_WEIGHTS = (0.76, 0.12, 0.12)  # polygon, compressed RLE, uncompressed RLE
SHAPE_WEIGHTS = (0.84, 0.08, 0.08)  # square, landscape (height 3/4), portrait (width 3/4)
OVERLAP_PROB = 0.45  # chance that a second or later object is placed on top of an earlier one
TWO_PART_PROB = 0.1  # chance that a polygon object has a second, smaller part
MIN_PER_CLASS = 3  # every category appears at least this often in train_all
VAL_FRACTION = 0.2
ID_GAP_EVERY = 9  # image ids skip one number after every 9 images: never rely on contiguous ids


def write_sample_dataset(root: Path, *, seed: int = 0, n_train: int = 72, n_test: int = 24, size: int = 128) -> Path:
    """Write the synthetic dataset to `root` (created, or empty) atomically; return `root`."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root}: already exists and is not empty")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_all(tmp, np.random.default_rng(seed), n_train, n_test, size)
        try:
            os.replace(tmp, root)
        except OSError:
            raise UserError(f"{root}: already exists and is not empty") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_all(out: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int) -> None:
    """Generate images and annotations and write every file of the layout into `out`."""
    n_total = n_train + n_test
    file_names = _file_names(rng, n_total)
    train_ids = _image_ids(0, n_train)
    test_ids = _image_ids(train_ids[-1] + 1 if train_ids else 0, n_test)
    train_images, train_anns = _make_split(out, rng, train_ids, file_names[:n_train], size, MIN_PER_CLASS)
    test_images, test_anns = _make_split(
        out, rng, test_ids, file_names[n_train:], size, 0, first_ann_id=len(train_anns)
    )
    val_ids = set(rng.choice(train_ids, size=round(VAL_FRACTION * n_train), replace=False).tolist())
    _write_coco(out / "train_all.json", train_images, train_anns)
    _write_coco(out / "train.json", *_subset(train_images, train_anns, set(train_ids) - val_ids))
    _write_coco(out / "val.json", *_subset(train_images, train_anns, val_ids))
    _write_coco(out / "test.json", test_images, [])
    _write_coco(out / "test_gt.json", test_images, test_anns)
    rows = [HEADER] + [f"{im['file_name']}," for im in test_images]
    (out / "sample_submission.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())


def _image_ids(start: int, n: int) -> list[int]:
    """`n` increasing ids from `start` that skip one number after every ID_GAP_EVERY."""
    return [start + k + k // ID_GAP_EVERY for k in range(n)]


def _file_names(rng: np.random.Generator, n: int) -> list[str]:
    """A file name per image, train and test images shuffled together across the batch folders."""
    names = [""] * n
    for position, index in enumerate(rng.permutation(n)):
        batch = position * len(BATCHES) // n
        first = -(-batch * n // len(BATCHES))  # first position of this batch
        names[index] = f"{BATCHES[batch]}/{position - first:04d}.jpg"
    return names


def _assign(rng: np.random.Generator, n: int, weights: tuple[float, ...], minimum: int) -> list[int]:
    """`n` shuffled labels in proportion to `weights`, each at least `minimum` times where `n` allows."""
    p = np.asarray(weights) / sum(weights)
    labels = np.repeat(np.arange(len(weights)), np.maximum(minimum, np.floor(n * p).astype(int)))[:n]
    drawn = rng.choice(len(weights), size=n - len(labels), p=p)
    return rng.permutation(np.concatenate([labels, drawn])).astype(int).tolist()


def _make_split(
    out: Path,
    rng: np.random.Generator,
    ids: list[int],
    file_names: list[str],
    size: int,
    min_per_class: int,
    first_ann_id: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Draw, paint and save the images of one split; return their COCO image and annotation records."""
    n = len(ids)
    shapes = _assign(rng, n, SHAPE_WEIGHTS, 1)
    counts = _assign(rng, n, OBJECT_COUNT_WEIGHTS, 1)
    classes = iter(_assign(rng, sum(counts), CLASS_WEIGHTS, min_per_class))
    formats = iter(_assign(rng, sum(counts), FORMAT_WEIGHTS, 1))
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for image_id, file_name, shape, count in zip(ids, file_names, shapes, counts, strict=True):
        short = size * 3 // 4
        height, width = {0: (size, size), 1: (short, size), 2: (size, short)}[shape]
        pixels = _background(rng, height, width)
        objects = _objects(rng, [next(classes) for _ in range(count)], height, width)
        painted = []
        for category_id, polygons in objects:
            ann, mask = _annotation(polygons, next(formats), height, width)
            anns.append({"id": first_ann_id + len(anns), "image_id": image_id, "category_id": category_id, **ann})
            painted.append((category_id, mask))
        for category_id, mask in sorted(painted, key=lambda p: p[0]):  # stable: ties keep drawing order
            on = mask.astype(bool)
            pixels[on] = _texture(rng, category_id, height, width)[on]
        path = out / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width, "license": 0})
    return images, anns


def _objects(
    rng: np.random.Generator, classes: list[int], height: int, width: int
) -> list[tuple[int, list[list[float]]]]:
    """Category and polygon parts of each object; some objects are placed over an earlier one."""
    size = min(height, width)
    placed: list[tuple[float, float, float]] = []  # centre x, centre y, radius
    objects = []
    for category_id in classes:
        radius = size * rng.uniform(0.1, 0.24)
        if placed and rng.random() < OVERLAP_PROB:
            cx, cy, r = placed[rng.integers(len(placed))]
            angle = rng.uniform(0, 2 * np.pi)
            distance = rng.uniform(0.3, 0.8) * (r + radius)
            cx, cy = cx + distance * np.cos(angle), cy + distance * np.sin(angle)
        else:
            cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        cx, cy = float(np.clip(cx, 0.1 * width, 0.9 * width)), float(np.clip(cy, 0.1 * height, 0.9 * height))
        placed.append((cx, cy, radius))
        parts = [_polygon(rng, cx, cy, radius, height, width)]
        if rng.random() < TWO_PART_PROB:
            angle = rng.uniform(0, 2 * np.pi)
            px, py = cx + 1.6 * radius * np.cos(angle), cy + 1.6 * radius * np.sin(angle)
            px, py = (
                float(np.clip(px, 0.1 * width, 0.9 * width)),
                float(np.clip(py, 0.1 * height, 0.9 * height)),
            )
            parts.append(_polygon(rng, px, py, 0.45 * radius, height, width))
        objects.append((category_id, parts))
    return objects


def _polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, height: int, width: int) -> list[float]:
    """A flat [x1, y1, ...] polygon in the image: a perturbed circle, an ellipse or a rotated rectangle."""
    kind = rng.integers(3)
    rotation = rng.uniform(0, np.pi)
    if kind == 2:  # rotated rectangle
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        rx, ry = radius, radius * rng.uniform(0.4, 1.0)
        x, y = rx * np.sign(np.cos(t)), ry * np.sign(np.sin(t))
    else:
        t = np.linspace(0, 2 * np.pi, int(rng.integers(14, 26)), endpoint=False)
        r = np.full_like(t, radius)
        if kind == 0:  # perturbed circle: a few low harmonics of the radius
            for harmonic in (2, 3, 5):
                r *= 1 + rng.uniform(-0.15, 0.15) * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
        aspect = rng.uniform(0.5, 1.0) if kind == 1 else 1.0
        x, y = r * np.cos(t), aspect * r * np.sin(t)
    xs = np.clip(cx + x * np.cos(rotation) - y * np.sin(rotation), 0, width)
    ys = np.clip(cy + x * np.sin(rotation) + y * np.cos(rotation), 0, height)
    return [round(float(v), 1) for v in np.stack([xs, ys], axis=1).ravel()]


def _annotation(polygons: list[list[float]], fmt: int, height: int, width: int) -> tuple[dict[str, Any], np.ndarray]:
    """The COCO segmentation, area, bbox and iscrowd of an object in format `fmt`, and its binary mask."""
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    mask = mask_utils.decode(rle)
    if fmt == 0:
        segmentation: Any = polygons
    elif fmt == 1:
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    else:
        segmentation = {"size": [height, width], "counts": _uncompressed_counts(mask)}
    bbox = [int(v) for v in mask_utils.toBbox(rle)]
    ann = {"segmentation": segmentation, "area": int(mask.sum()), "bbox": bbox, "iscrowd": int(fmt == 2)}
    return ann, mask


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of the column-major pixels, starting with a run of zeros."""
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, desaturated noisy texture (float RGB) with a random base colour."""
    base = rng.uniform(70, 170) + rng.uniform(-15, 15, 3)
    coarse = rng.normal(0, 25, (4, 4, 3))
    rows, cols = _interpolation(height, 4), _interpolation(width, 4)
    smooth = np.einsum("ya,abc,xb->yxc", rows, coarse, cols)
    return base + smooth + rng.normal(0, 5, (height, width, 3))


def _interpolation(n: int, m: int) -> np.ndarray:
    """The (n, m) matrix that linearly interpolates m coarse samples to n points."""
    position = np.linspace(0, m - 1, n)
    return np.clip(1 - np.abs(position[:, None] - np.arange(m)[None, :]), 0, None)


def _texture(rng: np.random.Generator, category_id: int, height: int, width: int) -> np.ndarray:
    """The category's colour and pattern (float RGB, whole image), with jitter of colour, phase and noise."""
    colour, kind, period, angle = APPEARANCE[category_id]
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == "stripes":
        theta = np.deg2rad(angle + rng.uniform(-10, 10))
        wave = np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
        shade = 1 + 0.25 * np.sign(wave)
    elif kind == "checker":
        offset = rng.integers(period, size=2)
        shade = 1 + 0.3 * (((x + offset[0]) // period + (y + offset[1]) // period) % 2 * 2 - 1)
    else:
        shade = np.ones((height, width))
    tint = np.asarray(colour) + rng.uniform(-12, 12, 3)
    return tint * shade[..., None] + rng.normal(0, 4, (height, width, 3))


def _subset(
    images: list[dict[str, Any]], anns: list[dict[str, Any]], keep: set[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The images whose id is in `keep` and their annotations, in the original order."""
    return [im for im in images if im["id"] in keep], [a for a in anns if a["image_id"] in keep]


def _write_coco(path: Path, images: list[dict[str, Any]], anns: list[dict[str, Any]]) -> None:
    """Write a COCO instances file with the run A categories."""
    data = {
        "info": INFO,
        "licenses": LICENSES,
        "images": images,
        "categories": list(CATEGORIES),
        "annotations": anns,
    }
    path.write_text(json.dumps(data))
