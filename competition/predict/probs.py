"""Stored class probabilities: float16 arrays [n_images, n_classes, 256, 256] in .npy files, memory-mapped,
each with a JSON manifest (`<name>.json`: images in order, class names, members).

They are what ensembling needs (out-of-fold probabilities to fit weights, test probabilities to average).
Writers stream blocks of images to disk and publish the file under its final name only when complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError
from competition.core.fileio import read_json, temporary_name, write_json
from competition.core.geometry import SUBMISSION_SIZE


def manifest_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


class ProbsWriter:
    """Append probabilities block by block; `close()` publishes the array and its manifest."""

    def __init__(self, path: Path, images: list[str], classes: list[str], **meta: Any):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_name(self.path)
        shape = (len(images), len(classes), SUBMISSION_SIZE, SUBMISSION_SIZE)
        check_free_space(self.path, int(np.prod(shape)) * 2)
        try:
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float16, shape=shape)
        except BaseException as e:  # e.g. a full disk: no half file is left behind
            self.tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.filename is None:
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            raise
        self.manifest = {
            "images": images,
            "classes": classes,
            "shape": list(shape),
            "dtype": "float16",
            **meta,
        }
        self.filled = 0

    def write(self, probs: torch.Tensor | np.ndarray) -> None:
        """Next block of probabilities [B, C, 256, 256] in image order."""
        if isinstance(probs, torch.Tensor):
            probs = probs.detach().to("cpu", torch.float16).numpy()
        self.array[self.filled : self.filled + len(probs)] = probs
        self.filled += len(probs)

    def close(self) -> Path:
        if self.filled != len(self.array):
            raise RuntimeError(f"{self.path}: wrote {self.filled} of {len(self.array)} images")
        self.array.flush()
        del self.array
        os.replace(self.tmp, self.path)
        write_json(manifest_path(self.path), self.manifest)
        return self.path

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def check_free_space(path: Path, needed: int) -> None:
    """A UserError when the disk cannot hold `needed` more bytes. The memory-mapped file is sparse, so a full
    disk would otherwise kill the process with SIGBUS in the middle of writing."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise UserError(
            f"{path}: needs {needed / 2**30:.2f} GiB for probabilities but only {free / 2**30:.2f} GiB is free "
            "there (old search trials? see search --keep-oof, or train with --set save_oof=false)"
        )


def write_probs(path: Path, images: list[str], classes: list[str], **meta: Any) -> ProbsWriter:
    return ProbsWriter(path, images, classes, **meta)


def read_probs(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The memory-mapped float16 array and its manifest; missing or inconsistent files are UserErrors."""
    path = Path(path)
    if not path.exists() or not manifest_path(path).exists():
        raise UserError(f"{path}: probabilities not found (missing .npy or its .json manifest)")
    try:
        manifest = read_json(manifest_path(path))
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:  # truncated or corrupt: a killed copy, a damaged disk
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path}: unreadable probabilities (truncated or corrupt: {first}); recompute them") from None
    if (
        not isinstance(manifest, dict)
        or list(array.shape) != manifest.get("shape")
        or len(manifest.get("images", ())) != array.shape[0]
    ):
        raise UserError(f"{path}: array shape {array.shape} does not match its manifest {manifest.get('shape')}")
    return array, manifest
