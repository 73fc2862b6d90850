"""Images decoded once, resized once to the training size, and cached on disk (memory-mapped).

Decoding a JPEG and resizing it used to be repeated for every item of every epoch. The image store holds the
images of one COCO file decoded (PIL, RGB) and resized to the training size exactly as the training
transforms resize them (`v2.Resize(size, antialias=True)` on the uint8 tensor), so an item made from the
store is pixel-for-pixel the item made from the file (`DecodeEachTime` is the same interface without a cache).

Layout: `<cache>/images/<key>/` holds `pixels.u8` (every image back to back, H x W x 3 uint8 each, all of the
one training size) and `index.json` (per image: id, file_name, the blake2b of the file's bytes, the crc32 of
its pixels).
- Key: every image's id and content hash (its file's bytes are read and hashed on every open: about 30 ms for
  trashcan-mini's 19 MB), the size, the cache version, Pillow's and torchvision's versions. A changed file
  changes the key, so a stale entry is never read; the new folder copies each unchanged entry from older
  folders of the same size (its crc32 checked) and decodes only what changed.
- Corruption: each process checks an entry's crc32 the first time it reads it. A bad entry is decoded again
  from its file (whose hash must still match), written back in place and reported on stderr; it is never
  used. A folder whose index or data file is unreadable or of the wrong size is rebuilt.
- Building: under a lock (`images/.build.lock`), into a temporary folder renamed into place, so two
  processes building the same cache at once do the work once and a killed build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from competition.core.errors import UserError
from competition.core.fileio import building_folder, temporary_name
from competition.core.locks import exclusive_lock
from competition.data.coco import ImageInfo, image_path, to_rgb
from competition.data.masks import cache_root

CACHE_VERSION = 2  # 2: 16-bit images scaled as read_image does (1 clipped them)
RESIZE = "torchvision v2.Resize(antialias=True) on uint8 CHW"


def resize_pixels(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to `hw` exactly as the training transforms resize it."""
    image = tv_tensors.Image(torch.from_numpy(np.array(pixels)).permute(2, 0, 1))  # the Dataset's layout
    return np.ascontiguousarray(F.resize(image, list(hw), antialias=True).permute(1, 2, 0).numpy())


def _read(root: Path, image: ImageInfo, source: Path) -> tuple[Path, bytes]:
    p = image_path(root, image, source)
    try:
        return p, p.read_bytes()
    except OSError as e:
        raise UserError(f"{p}: cannot read image (image id {image.id} in {source.name}): {e}") from None


def _decode(p: Path, raw: bytes, image: ImageInfo, source: Path) -> np.ndarray:
    """What `read_image` gives for these bytes: RGB uint8 (grayscale and RGBA converted, 16-bit scaled)."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(to_rgb(img))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UserError(f"{p}: cannot read image (image id {image.id} in {source.name}): {e}") from None


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _crc(pixels: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(pixels)).cast("B"))


def cache_key(ids: Sequence[int], digests: Sequence[str], hw: tuple[int, int]) -> str:
    """Hash of every image's id and content, the size, and what decodes and resizes."""
    settings = {
        "version": CACHE_VERSION,
        "size": list(hw),
        "resize": RESIZE,
        "pillow": PIL.__version__,
        "torchvision": torchvision.__version__,
        "images": [[i, d] for i, d in zip(ids, digests, strict=True)],
    }
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:24]


class DecodeEachTime:
    """`source[image_id] -> (H, W, 3) uint8` at the training size, decoded and resized on every read."""

    def __init__(self, root: Path, source: Path, images: Sequence[ImageInfo], hw: tuple[int, int]):
        self.root, self.source, self.hw = Path(root), Path(source), tuple(hw)
        self.by_id = {im.id: im for im in images}

    def __getitem__(self, image_id: int) -> np.ndarray:
        info = self.by_id[image_id]
        p, raw = _read(self.root, info, self.source)
        return resize_pixels(_decode(p, raw, info, self.source), self.hw)


class ImageStore(DecodeEachTime):
    """`store[image_id] -> (H, W, 3) uint8`, a read-only view of the memory-mapped cache, its crc32 checked
    on the first read in each process. The map is opened lazily, so a store can go to DataLoader workers."""

    def __init__(self, folder: Path, root: Path, source: Path, images: Sequence[ImageInfo]):
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        super().__init__(root, source, images, tuple(index["size"]))
        self.rows = index["images"]  # [id, file_name, digest, crc32]
        self.slot = {row[0]: n for n, row in enumerate(self.rows)}
        self.entry = self.hw[0] * self.hw[1] * 3
        self._data: np.memmap | None = None
        self._checked: set[int] = set()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, image_id: int) -> np.ndarray:
        if self._pid != os.getpid():  # a forked worker checks for itself
            self._data, self._checked, self._pid = None, set(), os.getpid()
        if self._data is None:
            self._data = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r")
        n = self.slot[image_id]
        pixels = self._data[n * self.entry : (n + 1) * self.entry].reshape(*self.hw, 3)
        if n not in self._checked:
            if _crc(pixels) != self.rows[n][3]:
                pixels = self._repair(n)
            self._checked.add(n)
        return pixels

    def _repair(self, n: int) -> np.ndarray:
        """Decode entry n again from its file (unchanged since the build), write it back, report it."""
        image_id, name, digest, crc = self.rows[n]
        info = self.by_id[image_id]
        p, raw = _read(self.root, info, self.source)
        if _digest(raw) != digest:
            raise UserError(f"{p}: changed since the image cache {self.folder} was built; run the command again")
        pixels = resize_pixels(_decode(p, raw, info, self.source), self.hw)
        fd = os.open(self.folder / "pixels.u8", os.O_WRONLY)
        try:
            os.pwrite(fd, pixels.tobytes(), n * self.entry)
        finally:
            os.close(fd)
        same = "" if _crc(pixels) == crc else " (its checksum differs from the index's: decoder changed?)"
        print(
            f"image cache {self.folder}: entry {name} was corrupt; decoded again and rewritten{same}", file=sys.stderr
        )
        return pixels

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None, "_checked": set()}


def image_store(
    root: Path,
    source: Path,
    images: Sequence[ImageInfo],
    hw: tuple[int, int],
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ImageStore:
    """The cached images of `images` at size `hw`, building (or mending) the cache first when needed."""
    root, source, hw = Path(root), Path(source), (int(hw[0]), int(hw[1]))
    base = (cache_dir or cache_root()) / "images"
    digests = [_digest(_read(root, im, source)[1]) for im in images]
    folder = base / cache_key([im.id for im in images], digests, hw)
    if _valid(folder, images, digests, hw):
        return ImageStore(folder, root, source, images)
    with exclusive_lock(base / ".build.lock"):
        if not _valid(folder, images, digests, hw):  # else another process built it while this one waited
            if folder.exists():
                if log:
                    log(f"image cache {folder}: index or data unreadable or of the wrong size; rebuilding it")
                _remove(folder)
            _build(folder, root, source, images, digests, hw, log)
    return ImageStore(folder, root, source, images)


def _valid(folder: Path, images: Sequence[ImageInfo], digests: Sequence[str], hw: tuple[int, int]) -> bool:
    try:
        index = json.loads((folder / "index.json").read_text())
        size = (folder / "pixels.u8").stat().st_size
    except (OSError, ValueError):
        return False
    try:
        same = index["version"] == CACHE_VERSION and index["size"] == list(hw)
        rows = index["images"]
        same = same and [[r[0], r[2]] for r in rows] == [[im.id, d] for im, d in zip(images, digests, strict=True)]
        return same and all(isinstance(r[3], int) for r in rows) and size == len(rows) * hw[0] * hw[1] * 3
    except (TypeError, KeyError, IndexError, ValueError):
        return False


def _remove(folder: Path) -> None:
    aside = temporary_name(folder.with_name(folder.name + "-damaged"))
    os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _donors(base: Path, hw: tuple[int, int]) -> dict[str, tuple[Path, int, int]]:
    """Entries of other cache folders of this size: content digest -> (data file, offset, crc32)."""
    found: dict[str, tuple[Path, int, int]] = {}
    entry = hw[0] * hw[1] * 3
    for index_file in base.glob("*/index.json"):
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(index, dict) and index.get("version") == CACHE_VERSION and index.get("size") == list(hw):
            for n, row in enumerate(index.get("images", [])):
                found.setdefault(row[2], (index_file.parent / "pixels.u8", n * entry, row[3]))
    return found


def _reuse(donor: tuple[Path, int, int] | None, entry: int) -> bytes | None:
    if donor is None:
        return None
    try:
        with open(donor[0], "rb") as f:
            f.seek(donor[1])
            data = f.read(entry)
    except OSError:
        return None
    return data if len(data) == entry and zlib.crc32(data) == donor[2] else None


def _build(
    folder: Path,
    root: Path,
    source: Path,
    images: Sequence[ImageInfo],
    digests: Sequence[str],
    hw: tuple[int, int],
    log: Callable[[str], None] | None,
) -> None:
    donors = _donors(folder.parent, hw)
    entry = hw[0] * hw[1] * 3
    with building_folder(folder) as tmp:
        rows, decoded = [], 0
        with open(tmp / "pixels.u8", "wb") as f:
            for im, digest in zip(images, digests, strict=True):
                data = _reuse(donors.get(digest), entry)
                if data is None:
                    p, raw = _read(root, im, source)
                    if _digest(raw) != digest:
                        raise UserError(f"{p}: changed while the image cache was being built; run the command again")
                    data = resize_pixels(_decode(p, raw, im, source), hw).tobytes()
                    decoded += 1
                f.write(data)
                rows.append([im.id, im.file_name, digest, zlib.crc32(data)])
        meta = {"version": CACHE_VERSION, "size": list(hw), "resize": RESIZE, "source": str(source)}
        (tmp / "index.json").write_text(json.dumps({**meta, "images": rows}))
    if log:
        reused = len(images) - decoded
        log(f"image cache: {len(images)} images of {source.name} at {hw[0]}x{hw[1]} ({decoded} decoded, "
            f"{reused} reused) -> {folder}")  # fmt: skip
