"""Reading and validating COCO instance files of a competition dataset.

Every problem is a UserError naming the file and the record, e.g.
`train_all.json: annotation id 17 (image 3): polygon with 2 points; need at least 3`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from competition.core.errors import UserError
from competition.core.fileio import read_user_bytes

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    """One image record: `file_name` is relative to the dataset root and is the submission's image_id."""

    id: int
    file_name: str
    height: int
    width: int


@dataclass
class CocoFile:
    """A validated COCO file: images in file order, categories sorted by id, annotations grouped by image."""

    path: Path
    images: tuple[ImageInfo, ...]
    categories: tuple[dict[str, Any], ...]
    annotations: dict[int, list[dict[str, Any]]] = field(repr=False)
    sha256: str
    by_id: dict[int, ImageInfo] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {im.id: im for im in self.images}

    @property
    def image_ids(self) -> list[int]:
        return [im.id for im in self.images]


def load_coco(path: Path | str, *, need_annotations: bool = True) -> CocoFile:
    """Read and validate a COCO instances file (images, categories and, when needed, annotations)."""
    path = Path(path)
    raw = read_user_bytes(path, "COCO JSON file")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON: {str(e)[:200]}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid COCO file: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with images, categories, annotations")
    for key in ("images", "categories") + (("annotations",) if need_annotations else ()):
        if key not in data:
            raise UserError(f"{path}: missing key '{key}'")
        if not isinstance(data[key], list):
            raise UserError(f"{path}: '{key}' must be a list")

    images = tuple(_image(path, i, rec) for i, rec in enumerate(data["images"]))
    seen: set[int] = set()
    names: dict[str, int] = {}
    for im in images:
        if im.id in seen:
            raise UserError(f"{path}: image id {im.id} ({im.file_name}): duplicate image id")
        if im.file_name in names:  # the file name is the submission's image_id: it must name one image
            raise UserError(
                f"{path}: image id {im.id}: duplicate file_name {im.file_name!r} (also image id {names[im.file_name]})"
            )
        seen.add(im.id)
        names[im.file_name] = im.id

    categories = _categories(path, data["categories"])
    cat_ids = {c["id"] for c in categories}
    sizes = {im.id: (im.height, im.width) for im in images}
    annotations: dict[int, list[dict[str, Any]]] = {im.id: [] for im in images}
    for i, ann in enumerate(data.get("annotations") or []):
        _check_annotation(path, i, ann, cat_ids, sizes)
        annotations[ann["image_id"]].append(ann)
    return CocoFile(path, images, categories, annotations, hashlib.sha256(raw).hexdigest())


def _image(path: Path, i: int, rec: Any) -> ImageInfo:
    if not isinstance(rec, dict):
        raise UserError(f"{path}: images[{i}]: expected an object")
    for key in ("id", "file_name", "height", "width"):
        if key not in rec:
            raise UserError(f"{path}: images[{i}] (id {rec.get('id')}): missing key '{key}'")
    if not isinstance(rec["id"], int) or isinstance(rec["id"], bool):
        raise UserError(f"{path}: images[{i}]: id {rec['id']!r} is not an integer")
    for key in ("height", "width"):
        if not isinstance(rec[key], int) or rec[key] < 1:
            raise UserError(f"{path}: image id {rec['id']}: {key} {rec[key]!r} is not a positive integer")
    name = rec["file_name"]
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: image id {rec['id']}: file_name {name!r} is not a path")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or Path(name).is_absolute():
        raise UserError(f"{path}: image id {rec['id']}: file_name '{name}' escapes the dataset root")
    return ImageInfo(rec["id"], name, rec["height"], rec["width"])


def _categories(path: Path, cats: list[Any]) -> tuple[dict[str, Any], ...]:
    if not cats:
        raise UserError(f"{path}: no categories")
    seen: set[int] = set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise UserError(f"{path}: categories[{i}]: needs an integer 'id' and a string 'name'")
        if c["id"] in seen:
            raise UserError(f"{path}: category id {c['id']} ({c['name']}): duplicate category id")
        seen.add(c["id"])
    return tuple(sorted(({"id": c["id"], "name": c["name"]} for c in cats), key=lambda c: c["id"]))


def _check_annotation(path: Path, i: int, ann: Any, cat_ids: set[int], sizes: dict[int, tuple[int, int]]) -> None:
    if not isinstance(ann, dict):
        raise UserError(f"{path}: annotations[{i}]: expected an object")
    where = f"{path}: annotation id {str(ann.get('id', f'[{i}]'))[:40]} (image {str(ann.get('image_id'))[:40]})"
    for key in ("image_id", "category_id", "segmentation"):
        if key not in ann:
            raise UserError(f"{where}: missing key '{key}'")
    for key in ("image_id", "category_id"):  # a list or an object where an id belongs is no id (nor hashable)
        if not isinstance(ann[key], (int, str)) or isinstance(ann[key], bool):
            raise UserError(f"{where}: {key} {str(ann[key])[:40]!r} is not an id")
    if ann["image_id"] not in sizes:
        raise UserError(f"{where}: unknown image_id {ann['image_id']!r}")
    if ann["category_id"] not in cat_ids:
        raise UserError(f"{where}: unknown category_id {ann['category_id']!r}")
    seg = ann["segmentation"]
    height, width = sizes[ann["image_id"]]
    if isinstance(seg, list):
        if not seg:
            raise UserError(f"{where}: empty segmentation")
        reach = 2 * max(height, width)  # pycocotools clips to the image; far-off or NaN values exhaust memory
        for poly in seg:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                raise UserError(f"{where}: polygon must be a flat list of numbers [x1, y1, x2, y2, ...]")
            if len(poly) < 6 or len(poly) % 2:
                raise UserError(f"{where}: polygon with {len(poly) / 2:g} points; need at least 3 (x, y) pairs")
            bad = next((v for v in poly if not (math.isfinite(v) and -reach <= v <= reach)), None)
            if bad is not None:
                raise UserError(f"{where}: polygon coordinate {bad!r} is not a finite number near the image")
    elif isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise UserError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        if not isinstance(seg["size"], list) or seg["size"] != [height, width]:
            hw = [height, width]
            raise UserError(f"{where}: RLE size {seg['size']} differs from the image's [height, width] {hw}")
        problem = _rle_problem(seg["counts"], height * width)
        if problem:
            raise UserError(f"{where}: RLE counts {problem}")
    else:
        raise UserError(f"{where}: segmentation must be a polygon list or an RLE object")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rle_problem(counts: Any, pixels: int) -> str | None:
    """Why RLE `counts` (a list of run lengths, or COCO's compressed string) cannot cover `pixels` pixels, or
    None. pycocotools decodes malformed counts into garbage without a word, so they are checked here."""
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "must be non-negative integers"
        runs = counts
    elif isinstance(counts, str) and counts:
        runs = _decode_counts(counts)
        if runs is None:
            return "is not a valid compressed RLE string"
    else:
        return "must be a list of run lengths or a non-empty compressed string"
    total = sum(runs)
    return None if total == pixels else f"cover {total} pixels, the image has {pixels}"


def _decode_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString); None when malformed."""
    runs: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text) or not 48 <= ord(text[p]) < 112:
                return None
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return runs


def image_path(root: Path, image: ImageInfo, source: Path) -> Path:
    """The image's file, guaranteed inside `root` (symlinks resolved)."""
    root_resolved = root.resolve()
    p = (root / image.file_name).resolve()
    if root_resolved != p and root_resolved not in p.parents:
        raise UserError(f"{source}: image id {image.id}: file_name '{image.file_name}' escapes the dataset root")
    return p


def check_image_files(root: Path, coco: CocoFile) -> None:
    """Each image exists inside the root, is a readable image, and has the size the JSON says."""
    for im in coco.images:
        p = image_path(root, im, coco.path)
        if not p.is_file():
            raise UserError(f"{p}: missing image file (image id {im.id} in {coco.path.name})")
        try:
            with Image.open(p) as img:
                width, height = img.size
                turned = img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise UserError(f"{p}: cannot read image (image id {im.id} in {coco.path.name}): {e}") from None
        if (height, width) != (im.height, im.width):
            hint = "; its EXIF orientation turns it, but annotations refer to the stored pixels" if turned else ""
            raise UserError(
                f"{p}: image is {width}x{height} but {coco.path.name} says {im.width}x{im.height} (image id {im.id})"
                + hint
            )


def decode_image_files(root: Path, coco: CocoFile) -> None:
    """Every image decoded in full once (data-info): a truncated or corrupt file is found now, not when a
    training or prediction worker reaches it."""
    for im in coco.images:
        read_image(root, im, coco.path)


def read_image(root: Path, image: ImageInfo, source: Path) -> Image.Image:
    """Decode an image as RGB (grayscale and RGBA are converted); a corrupt file is a UserError."""
    p = image_path(root, image, source)
    try:
        with Image.open(p) as img:
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UserError(f"{p}: cannot read image (image id {image.id} in {source.name}): {e}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: grayscale and RGBA converted; 16-bit and 32-bit images scaled to 0..255 by their type's
    range (PIL's own conversion would clip every value over 255 to white). EXIF orientation is not applied:
    annotations refer to the pixels as stored, as pycocotools reads them."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if values.max() <= 1.0 else top
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return img.convert("RGB")
