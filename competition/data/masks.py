"""Semantic masks from COCO annotations, rendered once with pycocotools and cached on disk.

Overlap policies (which object is on top where annotations overlap):
- `max` (run A, default): the higher category rank wins, i.e. `mask = np.maximum(annToMask(ann) * value, mask)`.
- `small-on-top` (run B): objects with shorter first polygons (`len(segmentation[0])`) are painted last, so
  smaller objects lie on top; RLE objects have no vertex list and lie underneath every polygon.
The painting order is decided on the original categories; the value painted is the class table's
(kept value, merge target's value, or ignore_index), so remapping classes only relabels objects.

The cache key is the annotation file's content hash plus every setting that changes a pixel; the cache is a
folder with one flat uint8 file (all masks back to back) and an index, memory-mapped when read. Later epochs
and runs never call pycocotools again. The index records the mask file's size and SHA-256, checked whenever a
store is opened: a damaged entry (a bad disk, a hand edit, a truncated copy) is rendered again, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from competition.core.fileio import building_folder, file_sha256, temporary_name
from competition.data.classes import ClassTable
from competition.data.coco import CocoFile

OVERLAPS = ("max", "small-on-top")
CACHE_VERSION = 2  # 2: the index holds the mask file's size and checksum


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Binary mask (uint8, height x width) of one annotation: polygons, compressed or uncompressed RLE."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle)


def paint_order(anns: list[dict[str, Any]], classes: ClassTable, overlap: str) -> list[dict[str, Any]]:
    """Annotations in painting order: the last one painted is on top (sorts are stable)."""
    if overlap == "max":
        return sorted(anns, key=lambda a: classes.rank_of[a["category_id"]])
    if overlap == "small-on-top":

        def size(a: dict[str, Any]) -> float:
            seg = a["segmentation"]
            return len(seg[0]) if isinstance(seg, list) else float("inf")

        return sorted(anns, key=size, reverse=True)
    raise ValueError(f"unknown overlap policy {overlap!r}; expected one of {OVERLAPS}")


def render_mask(
    anns: list[dict[str, Any]], height: int, width: int, classes: ClassTable, overlap: str = "max"
) -> np.ndarray:
    """The semantic mask (uint8) of one image: background 0, class values, ignore_index."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for ann in paint_order(anns, classes, overlap):
        mask[annotation_mask(ann, height, width).astype(bool)] = classes.value_of[ann["category_id"]]
    return mask


def cache_key(coco: CocoFile, classes: ClassTable, overlap: str) -> str:
    """Content hash of the annotation file and every setting that changes a pixel."""
    settings = {
        "version": CACHE_VERSION,
        "file": coco.sha256,
        "overlap": overlap,
        "values": sorted(classes.value_of.items()),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


class MaskStore:
    """Read-only access to the cached masks of one annotation file: `store[image_id] -> uint8 array`.

    The memory map is opened lazily, so a store can be sent to DataLoader worker processes.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        self._where = {int(i): (o, h, w) for i, o, h, w in index["images"]}
        self._data: np.memmap | None = None

    def __contains__(self, image_id: int) -> bool:
        return image_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, image_id: int) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.folder / "masks.u8", dtype=np.uint8, mode="r")
        offset, h, w = self._where[image_id]
        return np.asarray(self._data[offset : offset + h * w]).reshape(h, w)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}


def cache_root() -> Path:
    """`$COMPETITION_CACHE`, else `.cache/` in the working directory."""
    return Path(os.environ.get("COMPETITION_CACHE", ".cache"))


def mask_store(
    coco: CocoFile, classes: ClassTable, overlap: str = "max", cache_dir: Path | None = None, log=None
) -> MaskStore:
    """The cached masks of `coco` under these settings, rendering them first if this is the first time."""
    folder = (cache_dir or cache_root()) / "masks" / cache_key(coco, classes, overlap)
    if (folder / "index.json").exists() or folder.exists():
        problem = cache_problem(folder)
        if problem is None:
            return MaskStore(folder)
        if log:
            log(f"mask cache {folder} is damaged ({problem}); rendering it again")
        discard(folder)
    if log:
        log(f"rendering {len(coco.images)} masks of {coco.path.name} (overlap={overlap}) -> {folder}")
    with building_folder(folder) as tmp:
        rows, offset = [], 0
        with open(tmp / "masks.u8", "wb") as f:
            for im in coco.images:
                mask = render_mask(coco.annotations[im.id], im.height, im.width, classes, overlap)
                f.write(mask.tobytes())
                rows.append([im.id, offset, im.height, im.width])
                offset += mask.size
        meta = {
            "source": str(coco.path),
            "sha256": coco.sha256,
            "overlap": overlap,
            "classes": classes.to_dict(),
        }
        meta |= {"bytes": offset, "masks_sha256": file_sha256(tmp / "masks.u8")}
        (tmp / "index.json").write_text(json.dumps({**meta, "images": rows}))
    return MaskStore(folder)


def cache_problem(folder: Path) -> str | None:
    """Why the cache entry in `folder` cannot be trusted, or None when its index and checksum hold."""
    try:
        index = json.loads((folder / "index.json").read_text())
        size = (folder / "masks.u8").stat().st_size
    except (OSError, ValueError) as e:
        return f"unreadable: {type(e).__name__}"
    if not isinstance(index, dict) or "masks_sha256" not in index:
        return "index without a checksum"
    if size != index.get("bytes"):
        return f"mask file has {size} bytes, its index says {index.get('bytes')}"
    if file_sha256(folder / "masks.u8") != index["masks_sha256"]:
        return "checksum mismatch"
    return None


def discard(folder: Path) -> None:
    """Move a damaged entry aside (atomic, so no reader sees half of it), then delete it."""
    aside = temporary_name(folder).with_suffix(".damaged")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(aside, ignore_errors=True)
