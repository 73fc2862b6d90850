"""Who owns a trial or a run folder: OS file locks that die with their process.

A search process holds an exclusive `flock` on its own owner file (`runs/.owners/<host>-<pid>-<hex>.lock`) for
its whole life, and records that file in every trial it runs. A trial left RUNNING is orphaned only when its
owner file can be locked by someone else: the kernel releases the lock when the owner exits in any way
(Ctrl-C, kill -9, a crash), and never while it lives, however long its trial takes. A trial of another host
cannot be judged this way; server databases judge those by Optuna's heartbeat.

A run folder is locked (`<run>/.lock`) while a process trains in it, so a second process can never resume a
folder whose owner still lives. A cache being built is locked (`exclusive_lock`), so a second builder waits and
then uses the first one's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from competition.core.errors import UserError


class OwnerLock:
    """This process's owner file, locked until the process ends (or `release`)."""

    def __init__(self, runs_dir: Path):
        folder = Path(runs_dir) / ".owners"
        folder.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname()
        self.path = (folder / f"{self.host}-{os.getpid()}-{secrets.token_hex(3)}.lock").resolve()
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def info(self) -> dict[str, Any]:
        """What a trial records about its owner (JSON)."""
        return {"host": self.host, "pid": os.getpid(), "lock": str(self.path)}

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def claim_if_dead(owner: dict[str, Any] | None) -> Iterator[bool]:
    """Yield True when `owner` (an OwnerLock.info()) is certainly gone, holding its lock meanwhile, so two
    processes never both act on the same dead owner; False when it lives or lives on another host."""
    if not owner or owner.get("host") != socket.gethostname():
        yield False
        return
    try:
        fd = os.open(owner["lock"], os.O_RDWR)
    except FileNotFoundError:  # removed by its owner at exit, or by whoever handled its orphans
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        Path(owner["lock"]).unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold `<run_dir>/.lock` while training in it; UserError when another live process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir}: another process is training this run now; wait for it or stop it") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing), waiting for any other holder first; the kernel
    releases it if this process dies, so a killed holder never blocks the next one. For one-time builds (the
    image cache) and read-modify-write of small shared files (leaderboard scores)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
