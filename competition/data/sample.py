"""A synthetic dataset in exactly the competition's layout, for trying the harness without the real data.

`write_sample_dataset(root)` writes images split across `batch_01_vt/`, `batch_02_vt/` and `batch_03/`,
`train_all.json` with the organisers' 80/20 `train.json` / `val.json` split, `test.json` (images only),
`sample_submission.csv` (one empty row per test image, CRLF as the real file), and `test_gt.json`: the test
annotations, which the real competition never gave out, so that a submission made on the sample data can be
scored.

Design (version SAMPLE_VERSION; the cache folder of the generated sample is named after it). Scenes look like
the competition's: several big objects of several classes per image (about 3 classes besides background on
average, background usually under half of the pixels), so the per-image mIoU of the leaderboard rewards
finding the objects rather than predicting background everywhere. The categories are run A's (0 UNKNOWN ...
10 Clothing) with the competition's imbalance: Paper and Plastic bag dominate, UNKNOWN, Battery and Clothing are
rare. Each class has its own look (LOOKS): a saturated colour, a texture (plain, stripes, checks or dots with
periods that survive the quick profile's 2x downscale) and a shape family with its own aspect ratios, so a
small network can tell the classes apart at 64 px. Backgrounds vary from image to image (desaturated tone,
smooth blotches, sometimes a faint floor pattern), and objects and background get pixel noise and a random
lighting gradient.

Annotations are polygons (some in two parts), compressed RLE and uncompressed RLE; image ids skip a few
numbers; a few images are not square; a few images are empty and many have overlapping objects. Each object's
pixels are painted through exactly its annotation mask, in ascending category id, so the run A overlap rule
(higher class wins) reproduces the painted labels. Everything is deterministic from the seed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from competition.core.errors import UserError

SAMPLE_VERSION = 2  # bump whenever the generated data changes: cached samples of other versions are not reused

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
CLASS_WEIGHTS = (0.03, 0.12, 0.21, 0.07, 0.07, 0.07, 0.11, 0.08, 0.16, 0.04, 0.04)


class Look(NamedTuple):
    """How objects of one category are drawn."""

    colour: tuple[int, int, int]  # base RGB
    texture: str  # plain | stripes | checks | dots
    period: int  # pattern period in px at 128 px image size (scaled with the image)
    angle: int  # stripe angle in degrees
    contrast: int  # pattern amplitude in grey levels: + lightens, - darkens the dots
    shape: str  # blob (perturbed circle) | ellipse | rect (rotated rectangle)
    aspect: tuple[float, float]  # range of the minor / major axis ratio
    scale: float  # object size relative to the others


# Every class differs from every other in colour and from most in texture or shape; patterns have periods of
# at least 10 px, 5 px at the quick profile's 64 px. Backgrounds are desaturated, objects are not.
LOOKS: dict[int, Look] = {
    0: Look((55, 55, 60), "checks", 16, 0, 30, "rect", (0.6, 1.0), 1.0),
    1: Look((130, 80, 40), "stripes", 14, 45, 55, "blob", (1.0, 1.0), 1.0),
    2: Look((240, 238, 228), "stripes", 10, 0, 45, "rect", (0.6, 0.9), 1.0),
    3: Look((215, 60, 190), "checks", 16, 0, 40, "rect", (0.5, 0.8), 1.0),
    4: Look((60, 195, 215), "stripes", 10, 90, 45, "ellipse", (0.5, 0.8), 1.0),
    5: Look((50, 185, 80), "stripes", 16, 135, 50, "ellipse", (0.35, 0.6), 1.0),
    6: Look((40, 80, 225), "dots", 12, 0, -60, "ellipse", (0.4, 0.7), 1.0),
    7: Look((250, 170, 215), "dots", 14, 0, -50, "rect", (0.7, 1.0), 1.0),
    8: Look((215, 35, 40), "plain", 0, 0, 0, "blob", (1.0, 1.0), 1.1),
    9: Look((240, 215, 25), "stripes", 12, 90, 50, "rect", (0.35, 0.5), 1.0),
    10: Look((130, 45, 175), "checks", 12, 0, 40, "blob", (1.0, 1.0), 1.1),
}
BATCHES = ("batch_01_vt", "batch_02_vt", "batch_03")
HEADER = "image_id,PredictionString"
INFO = {
    "description": f"synthetic sample dataset (competition layout) v{SAMPLE_VERSION}",
    "version": "2.0",
    "year": 2021,
}
LICENSES = [{"id": 0, "name": "synthetic, no restrictions", "url": ""}]

OBJECT_COUNT_WEIGHTS = (0.03, 0.12, 0.45, 0.4)  # images with 0, 1, 2, 3 objects
RADIUS_RANGE = (0.28, 0.4)  # object radius / shorter image side, for images of up to 3 objects
FORMAT_WEIGHTS = (0.76, 0.12, 0.12)  # polygon, compressed RLE, uncompressed RLE
SHAPE_WEIGHTS = (0.84, 0.08, 0.08)  # square, landscape (height 3/4), portrait (width 3/4)
OVERLAP_PROB = 0.3  # chance that a second or later object is placed on top of an earlier one
CANDIDATES = 12  # other objects go to the best spread of this many random centres
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
        pixels *= _lighting(rng, height, width)[..., None]
        path = out / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width, "license": 0})
    return images, anns


def _objects(
    rng: np.random.Generator, classes: list[int], height: int, width: int
) -> list[tuple[int, list[list[float]]]]:
    """Category and polygon parts of each object: big objects spread over the image, some placed over an
    earlier one. Images with more than 3 objects get smaller ones, so that objects cover a similar share."""
    size = min(height, width)
    shrink = np.sqrt(3 / max(3, len(classes)))
    placed = np.zeros((0, 3))  # centre x, centre y, radius of each object so far
    objects = []
    for category_id in classes:
        look = LOOKS[category_id]
        radius = size * rng.uniform(*RADIUS_RANGE) * shrink * look.scale
        if len(placed) and rng.random() < OVERLAP_PROB:
            cx, cy, r = placed[rng.integers(len(placed))]
            angle = rng.uniform(0, 2 * np.pi)
            distance = rng.uniform(0.4, 0.9) * (r + radius)
            cx, cy = cx + distance * np.cos(angle), cy + distance * np.sin(angle)
        else:  # the random centre farthest from the edges of the objects placed so far
            candidates = rng.uniform(0.15, 0.85, (CANDIDATES, 2)) * (width, height)
            gap = np.hypot(*(candidates[:, None, :] - placed[None, :, :2]).transpose(2, 0, 1)) - placed[:, 2]
            cx, cy = candidates[int(np.argmax(gap.min(axis=1, initial=np.inf)))]
        cx, cy = float(np.clip(cx, 0.1 * width, 0.9 * width)), float(np.clip(cy, 0.1 * height, 0.9 * height))
        placed = np.vstack([placed, (cx, cy, radius)])
        parts = [_polygon(rng, look, cx, cy, radius, height, width)]
        if rng.random() < TWO_PART_PROB:
            angle = rng.uniform(0, 2 * np.pi)
            px = float(np.clip(cx + 1.5 * radius * np.cos(angle), 0.1 * width, 0.9 * width))
            py = float(np.clip(cy + 1.5 * radius * np.sin(angle), 0.1 * height, 0.9 * height))
            parts.append(_polygon(rng, look, px, py, 0.45 * radius, height, width))
        objects.append((category_id, parts))
    return objects


def _polygon(
    rng: np.random.Generator, look: Look, cx: float, cy: float, radius: float, height: int, width: int
) -> list[float]:
    """A flat [x1, y1, ...] polygon in the image of the look's shape family, area about that of a circle of
    `radius`, at a random rotation."""
    rotation = rng.uniform(0, np.pi)
    aspect = rng.uniform(*look.aspect)
    rx, ry = radius / np.sqrt(aspect), radius * np.sqrt(aspect)  # semi-axes: the area does not depend on aspect
    if look.shape == "rect":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        x, y = 0.886 * rx * np.sign(np.cos(t)), 0.886 * ry * np.sign(np.sin(t))  # 0.886 = sqrt(pi / 4)
    else:
        t = np.linspace(0, 2 * np.pi, int(rng.integers(16, 28)), endpoint=False)
        r = np.ones_like(t)
        if look.shape == "blob":  # a few low harmonics of the radius
            for harmonic in (2, 3, 5):
                r *= 1 + rng.uniform(-0.18, 0.18) * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
        x, y = rx * r * np.cos(t), ry * r * np.sin(t)
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
    """A desaturated scene (float RGB): random grey, beige or bluish tone, smooth blotches, half the time a
    faint floor pattern (planks or tiles), pixel noise."""
    size = min(height, width)
    base = rng.uniform(75, 170) + rng.uniform(-12, 12, 3)
    coarse = rng.normal(0, 20, (4, 4, 1)) + rng.normal(0, 5, (4, 4, 3))  # mostly brightness, little colour
    smooth = np.einsum("ya,abc,xb->yxc", _interpolation(height, 4), coarse, _interpolation(width, 4))
    pattern = np.zeros((height, width))
    if rng.random() < 0.5:
        period = size * rng.uniform(0.2, 0.4)
        texture = ("stripes", "checks")[rng.integers(2)]
        pattern = _pattern(rng, texture, period, rng.uniform(0, 180), height, width)
    return base + smooth + rng.uniform(4, 10) * pattern[..., None] + rng.normal(0, 6, (height, width, 3))


def _interpolation(n: int, m: int) -> np.ndarray:
    """The (n, m) matrix that linearly interpolates m coarse samples to n points."""
    position = np.linspace(0, m - 1, n)
    return np.clip(1 - np.abs(position[:, None] - np.arange(m)[None, :]), 0, None)


def _pattern(
    rng: np.random.Generator, texture: str, period: float, angle: float, height: int, width: int
) -> np.ndarray:
    """A (height, width) pattern in [-1, 1] at a random phase: stripes, checks, dots (1 on dots, else 0) or
    plain (zeros)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if texture == "stripes":
        theta = np.deg2rad(angle + rng.uniform(-10, 10))
        phase = rng.uniform(0, 2 * np.pi)
        return np.sign(np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + phase))
    if texture == "checks":
        ox, oy = rng.uniform(0, period, 2)
        return ((x + ox) // period + (y + oy) // period) % 2 * 2 - 1
    if texture == "dots":
        ox, oy = rng.uniform(0, period, 2)
        near = np.hypot((x + ox) % period - period / 2, (y + oy) % period - period / 2)
        return (near < 0.3 * period).astype(np.float64)
    return np.zeros((height, width))


def _texture(rng: np.random.Generator, category_id: int, height: int, width: int) -> np.ndarray:
    """The category's look (float RGB, whole image): its colour with jitter, its pattern, pixel noise."""
    look = LOOKS[category_id]
    period = max(3.0, look.period * min(height, width) / 128)
    pattern = _pattern(rng, look.texture, period, look.angle, height, width)
    tint = np.asarray(look.colour) + rng.uniform(-15, 15, 3)
    return tint + look.contrast * pattern[..., None] + rng.normal(0, 5, (height, width, 3))


def _lighting(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A multiplicative linear lighting gradient over the image, up to +-12% at the edges."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((x - width / 2) * np.cos(theta) + (y - height / 2) * np.sin(theta)) / max(height, width)
    return 1 + rng.uniform(0, 0.24) * ramp


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
