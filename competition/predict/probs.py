"""Stored class probabilities: uint8 arrays [n_images, n_classes, 256, 256] in .npy files (a probability p is
stored as round(255 p), half the bytes of float16; the argmax is kept exactly, see `quantise`), memory-mapped,
each with a JSON manifest (`<name>.json`: images in order, class names, dtype, members). Files written as
float16 by earlier versions still load.

They are what ensembling needs (out-of-fold probabilities to fit weights, test probabilities to average).
Writers stream blocks of images to disk and publish the file under its final name only when complete.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError, first_line
from competition.core.fileio import read_json, temporary_name, write_json
from competition.core.geometry import SUBMISSION_SIZE

LEVELS = 255  # a stored uint8 value v means probability v / LEVELS
EPS = 1e-3  # added to probabilities before a log, as in the decisions (a stored uint8 step is 1/255 ~ 0.004)
DTYPES = {"uint8": 1 / LEVELS, "float16": 1.0}  # stored dtype -> probability per stored unit


def manifest_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def argmax(scores: np.ndarray, axis: int) -> np.ndarray:
    """Index (uint8) of the largest value along `axis`, the first on ties (a running maximum: faster than
    np.argmax along a non-last axis)."""
    planes = np.moveaxis(scores, axis, 0)
    best = planes[0].copy()
    index = np.zeros(best.shape, np.uint8)
    for c in range(1, len(planes)):
        better = planes[c] > best
        np.maximum(best, planes[c], out=best)
        index[better] = c
    return index


def quantise(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Probabilities [B, C, ...] in [0, 1] as uint8 round(255 p), with each pixel's top class raised one level
    where rounding tied it with an earlier class: the argmax of the stored values is the argmax of the
    probabilities (the first of exact ties). CUDA tensors are quantised on the GPU."""
    if isinstance(probs, torch.Tensor) and probs.device.type != "cpu":
        return quantise_tensor(probs)
    p = probs.detach().float().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float32)
    q = np.rint(p * np.float32(LEVELS)).astype(np.uint8)  # rounding keeps order: q[top] >= every other q
    top = argmax(p, 1)
    moved = np.nonzero(argmax(q, 1) != top)  # an earlier class rounded to the same level
    q[(moved[0], top[moved], *moved[1:])] += 1  # q[top] < 255 there: its rival shares at most 1 - p[top]
    return q


def quantise_tensor(probs: torch.Tensor) -> np.ndarray:
    """`quantise` with torch operations on the tensor's device (the numpy path is faster on a CPU)."""
    p = probs.detach().float()
    q = p.mul(LEVELS).round_().to(torch.int16)
    top = p.argmax(1, keepdim=True)
    q.scatter_add_(1, top, (q.argmax(1, keepdim=True) != top).to(torch.int16))
    return q.to(torch.uint8).cpu().numpy()


class ProbsWriter:
    """Append probabilities block by block (plain file writes: memory stays one block); `close()` publishes
    the array and its manifest."""

    def __init__(self, path: Path, images: list[str], classes: list[str], **meta: Any):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_name(self.path)
        self.shape = (len(images), len(classes), SUBMISSION_SIZE, SUBMISSION_SIZE)
        check_free_space(self.path, int(np.prod(self.shape)))
        self.file = None
        try:
            self.file = open(self.tmp, "wb")  # noqa: SIM115 (closed by close() or abort())
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
            np.lib.format.write_array_header_1_0(self.file, {**header, "shape": self.shape})
        except BaseException as e:  # e.g. a full disk: no half file is left behind
            self._fail(e)
        self.manifest = {
            "images": images,
            "classes": classes,
            "shape": list(self.shape),
            "dtype": "uint8",
            "levels": LEVELS,
            **meta,
        }
        self.filled = 0

    def write(self, probs: torch.Tensor | np.ndarray) -> None:
        """Next block of probabilities [B, C, 256, 256] in image order (quantised to uint8 here)."""
        block = quantise(probs)
        if block.shape[1:] != self.shape[1:] or self.filled + len(block) > self.shape[0]:
            raise ValueError(f"{self.path}: block {block.shape} does not fit {self.shape} after {self.filled} rows")
        try:
            self.file.write(np.ascontiguousarray(block).tobytes())
        except BaseException as e:  # a full disk mid-file: no half file is left behind
            self._fail(e)
        self.filled += len(block)

    def close(self) -> Path:
        self.file.close()
        if self.filled != self.shape[0]:
            self.abort()
            raise RuntimeError(f"{self.path}: wrote {self.filled} of {self.shape[0]} images")
        os.replace(self.tmp, self.path)
        write_json(manifest_path(self.path), self.manifest)
        return self.path

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tmp.unlink(missing_ok=True)

    def _fail(self, error: BaseException) -> None:
        """Remove the temporary file and re-raise `error`, an OSError naming the file it was writing."""
        self.abort()
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror, str(self.path)) from None
        raise error


def check_free_space(path: Path, needed: int) -> None:
    """A UserError when the disk cannot hold `needed` more bytes, before anything is written."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise UserError(
            f"{path}: needs {needed / 2**30:.2f} GiB for probabilities but only {free / 2**30:.2f} GiB is free "
            "there (old search trials? see search --keep-oof, or train with --set save_oof=false)"
        )


def write_probs(path: Path, images: list[str], classes: list[str], **meta: Any) -> ProbsWriter:
    return ProbsWriter(path, images, classes, **meta)


@dataclass
class StoredProbs:
    """A probability file: the memory-mapped array [n, C, 256, 256] as stored (uint8, or float16 in files of
    earlier versions) and its manifest. `unit` is the probability of one stored unit (1/255 or 1)."""

    path: Path
    array: np.ndarray
    manifest: dict[str, Any]

    @property
    def unit(self) -> float:
        return DTYPES[self.manifest.get("dtype", "float16")]

    @property
    def images(self) -> list[str]:
        return self.manifest["images"]

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    def __len__(self) -> int:
        return len(self.array)

    def read(self, rows: slice | int) -> np.ndarray:
        """Stored values of a contiguous range of images [b, C, 256, 256] (or one image), read from the file
        rather than through the memory map, so that streaming a large file keeps memory at one block."""
        one = isinstance(rows, (int, np.integer))
        start, stop, step = slice(rows, rows + 1).indices(len(self)) if one else rows.indices(len(self))
        if step != 1:
            raise ValueError(f"{self.path}: rows {rows} are not contiguous")
        inner = self.array.shape[1:]
        count = max(0, stop - start) * int(np.prod(inner))
        with open(self.path, "rb") as f:
            f.seek(self.array.offset + start * int(np.prod(inner)) * self.array.itemsize)
            values = np.fromfile(f, self.array.dtype, count=count).reshape(-1, *inner)
        return values[0] if one else values

    def probabilities(self, rows: slice | int = slice(None)) -> np.ndarray:
        """The probabilities of these images as float32 [b, C, 256, 256]."""
        values = self.read(rows).astype(np.float32)
        return values if self.unit == 1.0 else values * np.float32(self.unit)


def read_probs(path: Path) -> StoredProbs:
    """A stored probability file, memory-mapped; missing or inconsistent files are UserErrors."""
    path = Path(path)
    if not path.exists() or not manifest_path(path).exists():
        raise UserError(f"{path}: probabilities not found (missing .npy or its .json manifest)")
    try:
        manifest = read_json(manifest_path(path))
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:  # truncated or corrupt: a killed copy, a damaged disk
        first = first_line(e, 160)
        raise UserError(f"{path}: unreadable probabilities (truncated or corrupt: {first}); recompute them") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: its manifest {manifest_path(path).name} is not a JSON object; recompute them")
    if list(array.shape) != manifest.get("shape") or len(manifest.get("images", ())) != array.shape[0]:
        raise UserError(f"{path}: array shape {array.shape} does not match its manifest {manifest.get('shape')}")
    dtype = manifest.get("dtype", "float16")
    if dtype not in DTYPES or array.dtype != np.dtype(dtype):
        raise UserError(f"{path}: stored as {array.dtype}, its manifest says {dtype}; expected uint8 or float16")
    return StoredProbs(path, array, manifest)
