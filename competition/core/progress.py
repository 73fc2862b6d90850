"""Progress a person can follow: tqdm bars with ETA on a terminal (epochs of a run, batches, trials, prediction
batches), none when stderr is not a terminal or under --json, where the one-line-per-step logs say the same.

The switch is the environment variable COMPETITION_PROGRESS (0 = no bars), so worker processes inherit it: the
CLI sets it under --json, a search with several workers for its workers. Log lines go through `write`, so a line
printed while bars are drawn does not break them. `Steps` counts the steps of a long job (epochs of a run,
trials of a search): a bar on a terminal, and an ETA for the log lines everywhere.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

ENV = "COMPETITION_PROGRESS"


@contextlib.contextmanager
def bars_off() -> Iterator[None]:
    """No bars meanwhile, in this process and the processes it starts."""
    before = os.environ.get(ENV)
    os.environ[ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def bars_enabled() -> bool:
    """Bars only on a terminal, and not under --json (nor in a search's worker processes)."""
    if os.environ.get(ENV) == "0":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def progress(iterable: Iterable | None = None, **kw: Any) -> tqdm:
    """A tqdm bar (with ETA) when bars are on, else a silent pass-through."""
    return tqdm(iterable, dynamic_ncols=True, disable=not bars_enabled(), **kw)


def write(msg: str, stream: TextIO) -> None:
    """One log line, above the bars when they are drawn."""
    if bars_enabled():
        tqdm.write(msg, file=stream)
        stream.flush()
    else:
        print(msg, file=stream, flush=True)


def eta(seconds: float) -> str:
    """A duration, short: 45s, 3m05s, 2h07m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Steps:
    """A long job's steps: a bar on a terminal; `eta()` for log lines (from the mean time of the steps so far)."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.done, self.start = total, 0, time.time()
        self.bar = progress(total=total, desc=desc, unit=unit)

    def skip(self, n: int) -> None:
        """Steps that will not run after all (done before a resume, or cut by early stopping)."""
        self.total = max(self.done, self.total - n)
        self.bar.total = self.total
        self.bar.refresh()

    def tick(self) -> None:
        self.done += 1
        self.bar.update(1)

    def eta(self) -> str:
        if not self.done:
            return "?"
        left = (time.time() - self.start) / self.done * max(0, self.total - self.done)
        return eta(left)

    def close(self) -> None:
        self.bar.close()
