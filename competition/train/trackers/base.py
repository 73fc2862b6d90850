"""The tracker of one training run, and `Trackers`, which hands every call to each chosen backend.

The training loop calls, in this order:
- `epoch(fold, row)` after every epoch, with its metrics.csv row (fold, epoch, losses, scores, lr, seconds);
- `images(fold, paths, step)` once a fold is done, with its overlay PNGs (step = the kept checkpoint's epoch);
- `fold_done(fold, result)` after that, with the fold's result.json;
- `finish(results, mean, std)` at the end of a run (its files are written by then);
- or `end(status)` instead when the run stopped early: "KILLED" (pruned, interrupted) or "FAILED" (an error).

A backend is a subclass made with `(cfg, run_dir, info, log)` that overrides what it records (every method is a
no-op here: this class itself is the `none` tracker). `require()` raises a one-line UserError when the backend's
optional package is missing; `open` raises TrackerError when its store cannot be opened (the run fails before
training). A write failing later is the backend's to report as one warning line: the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from competition.core.errors import UserError
from competition.core.log import Log

STATUSES = ("KILLED", "FAILED")


class TrackerError(UserError):
    """A tracker's store could not be opened (the run is marked failed with this reason)."""


class BestEffort:
    """A remote backend's writes once it is open: the first that fails is one warning line, and the run goes on
    without that backend (`broken`): its folder keeps everything."""

    def __init__(self, log: Log, backend: str, where: str, say: Callable[[BaseException], str]):
        self.log, self.backend, self.where, self.say = log, backend, where, say  # say: an error's masked line
        self.broken = False

    def __call__(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.broken:
            return
        try:
            call(*args, **kwargs)
        except Exception as e:
            self.broken = True
            self.log(f"warning: {self.backend}: logging to {self.where} failed ({self.say(e)}); the run goes on "
                     f"without it, its folder keeps everything")  # fmt: skip


class Tracker:
    """One training run as one backend records it; every method does nothing unless overridden."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, info: dict[str, Any], log: Log):
        """Open the backend's run (`info` is run.json: a resume finds its ids there); TrackerError if it cannot."""

    @classmethod
    def require(cls, setting: str) -> None:
        """A one-line UserError naming `setting` when the backend's optional package is missing."""

    def epoch(self, fold: int, row: dict[str, Any]) -> None:
        """After every epoch: its metrics.csv row."""

    def images(self, fold: int, paths: list[Path], step: int) -> None:
        """Once a fold is done: its overlay PNGs (image | truth | prediction), `step` the kept epoch."""

    def fold_done(self, fold: int, result: dict[str, Any]) -> None:
        """After a fold's images: its result."""

    def finish(self, results: list[dict[str, Any]], mean: float, std: float) -> None:
        """The end of a complete run: the folds' results, the CV mean and standard deviation."""

    def end(self, status: str) -> None:
        """The run stopped before its end: KILLED (pruned, interrupted) or FAILED (an error)."""


class Trackers(Tracker):
    """The chosen backends of a run, each called in turn (none for tracker=none)."""

    def __init__(self, backends: list[Tracker]):
        self.backends = list(backends)

    def epoch(self, fold: int, row: dict[str, Any]) -> None:
        for backend in self.backends:
            backend.epoch(fold, row)

    def images(self, fold: int, paths: list[Path], step: int) -> None:
        for backend in self.backends:
            backend.images(fold, paths, step)

    def fold_done(self, fold: int, result: dict[str, Any]) -> None:
        for backend in self.backends:
            backend.fold_done(fold, result)

    def finish(self, results: list[dict[str, Any]], mean: float, std: float) -> None:
        for backend in self.backends:
            backend.finish(results, mean, std)

    def end(self, status: str) -> None:
        assert status in STATUSES, status
        for backend in self.backends:
            backend.end(status)
