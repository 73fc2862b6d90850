"""Atomic file writes: every output goes to a temporary name in the same folder, then os.replace.

A killed process (Ctrl-C, kill -9, power loss) leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


def temporary_name(path: Path) -> Path:
    """A sibling name unique to this process (`.NAME.PID@HOST.tmp`), so concurrent writers never share a
    temporary file. Temporary siblings of the same name left by dead processes of this machine (kill -9, power
    loss) are removed on the way; those of other machines (a shared runs folder) are left to their owners."""
    path = Path(path)
    remove_dead_temporaries(path)
    return path.with_name(f".{path.name}.{os.getpid()}@{_HOST}.tmp")


_HOST = socket.gethostname().replace("/", "_")


def remove_dead_temporaries(path: Path) -> None:
    """Delete `.NAME.PID@HOST.tmp` siblings of `path` whose process (on this host) no longer exists."""
    folder = path.parent
    if not folder.is_dir():
        return
    for tmp in folder.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid, _, host = tmp.name[len(path.name) + 2 : -len(".tmp")].partition("@")
        if host == _HOST and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path | str, data: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's content, read in blocks (a submission's key; a cache entry's checksum)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_json(path: Path | str) -> Any:
    """Read a JSON file the harness wrote (not user input: errors here are bugs or corruption)."""
    return json.loads(Path(path).read_text())


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


@contextlib.contextmanager
def building_folder(folder: Path, published: str | None = "index.json") -> Iterator[Path]:
    """A fresh temporary folder beside `folder` to fill; renamed to `folder` when the block succeeds, removed
    in any case. If another process published an identical `folder` (with its `published` file, for content-keyed
    caches) first, theirs is kept; with `published=None` that is an error."""
    folder = Path(folder)
    tmp = temporary_name(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            os.rename(tmp, folder)
        except OSError:
            if published is None or not (folder / published).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
