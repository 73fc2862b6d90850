"""Lookups by name that refuse to be wrong: a `Table` maps names to builders and an unknown name is one error
line listing the valid names and the closest one (never a silent fallback).

The names of the harness's pluggable kinds are declared here, at the bottom layer, so the settings check
(core.config) and the command line (cli.parser) know them without importing torch or optuna. Each kind's builder
table lives with its builders and is made with `Table(KIND, NAMES[KIND], {...})`, which fails at import when
the builders and the declared names disagree: a new loss, optimiser, schedule, pruner or tracker is its builder
plus its name here, and forgetting either is an import error, not a silent fallback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from competition.core.errors import UsageError, UserError

T = TypeVar("T")

NAMES: dict[str, tuple[str, ...]] = {
    "loss": ("ce", "dice", "focal", "lovasz"),  # train/losses.py LOSSES
    "optimizer": ("adam", "adamw", "sgd"),  # train/optim.py OPTIMIZERS
    "scheduler": ("cosine", "poly", "none"),  # train/optim.py SCHEDULES
    "pruner": ("median", "hyperband", "wilcoxon", "none"),  # search/pruners.py PRUNERS
    "sampler": ("tpe", "gp", "random", "qmc"),  # search/samplers.py SAMPLERS
    "tracker": ("tensorboard", "mlflow", "wandb", "none"),  # train/trackers (the tracker table)
}


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,119}")


def plain_name(name: object, what: str, error: type[UserError] = UsageError) -> str:
    """A name that becomes a file or folder name (a study, run, ensemble, submission, pseudo set, an lb record):
    letters, digits and `. _ + -`, not starting with a dot, at most 120 characters, so whatever it names stays
    inside its folder. The one check of every such name; `error` is UsageError for a name on the command line
    (exit 2), UserError for one read from a file or record (exit 1)."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise error(
            f"{what} {name!r} is not a plain name: use letters, digits and . _ + - only, starting with a letter or "
            "digit, at most 120 characters (it names a file or folder)"
        )
    return name


def did_you_mean(word: str, options: Iterable[str], n: int = 1) -> str:
    """`; did you mean 'x'?` for the closest option(s), or '' when none is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=n)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def tracker_names(value: Any) -> tuple[str, ...]:
    """The backends a tracker setting lists (`tensorboard,wandb`, or a list of names), each once; `none` alone.

    Raises ValueError saying what is wrong (an unknown name with the closest one, a repeat, none with others)."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else None
    if not items or not all(isinstance(item, str) for item in items):
        raise ValueError("no tracker name")
    names = tuple(item.strip() for item in items)
    for name in names:
        if not name:
            raise ValueError("an empty name")
        if name not in NAMES["tracker"]:
            raise ValueError(f"unknown tracker {name!r}{did_you_mean(name, NAMES['tracker'])}")
    if len(set(names)) < len(names):
        raise ValueError("a tracker listed twice")
    if "none" in names and len(names) > 1:
        raise ValueError("none with other trackers")
    return names


class Table(Generic[T]):
    """A read-only name -> builder mapping of one kind; `table[name]` raises UsageError on an unknown name."""

    def __init__(self, kind: str, names: Iterable[str], builders: Mapping[str, T]):
        names = tuple(names)
        if set(names) != set(builders):
            missing, extra = sorted(set(names) - set(builders)), sorted(set(builders) - set(names))
            raise TypeError(f"{kind} table: declared names without a builder {missing}, builders not declared {extra}")
        self.kind = kind
        self.names = names
        self._builders = dict(builders)

    def __getitem__(self, name: str) -> T:
        try:
            return self._builders[name]
        except (KeyError, TypeError):
            raise UsageError(
                f"{self.kind} {name!r}: expected one of {', '.join(self.names)}{did_you_mean(name, self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)
