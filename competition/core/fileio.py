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
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from competition.core.errors import UserError


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


def user_file(path: Path | str, what: str = "file", limit: int | None = None) -> Path:
    """`path` when it names a regular, readable file of at most `limit` bytes (a dataset's JSON, --config,
    --space, --gt, a CSV the user named); one UserError naming it when it is missing, a folder, not a regular
    file (a FIFO or device is never opened, so never a hang), unreadable, or too large."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path}: not a regular file (a pipe, socket or device), so not a {what}")
    if limit is not None and info.st_size > limit:
        raise UserError(f"{path}: {info.st_size:,} bytes, larger than any {what} should be ({limit:,} at most)")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: cannot read the {what} (permission denied)")
    return path


def read_user_bytes(path: Path | str, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a file the user named, checked by user_file first."""
    try:
        with open(user_file(path, what, limit), "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from None


def read_user_text(path: Path | str, what: str = "file", limit: int | None = None) -> str:
    """read_user_bytes decoded as UTF-8 (a byte-order mark allowed); other bytes are one UserError with the
    offset of the first bad byte."""
    raw = read_user_bytes(path, what, limit)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None


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
