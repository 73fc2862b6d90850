"""Publishing a submission: `submissions/<name>.csv`, checked before it replaces anything, with a `.json`
sidecar saying what made it; names that are safe as file and folder names; the competition's class values."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from competition.core.fileio import file_sha256, temporary_name, write_json
from competition.core.names import plain_name
from competition.data import ClassTable
from competition.submit.check import check_submission
from competition.submit.encoding import write_submission

SUBMISSIONS = Path("submissions")


def check_name(name: str) -> str:
    """A submission (or ensemble) name given with --name, which becomes a file and folder name."""
    return plain_name(name, "--name")


def submission_values(classes: ClassTable, full: ClassTable) -> np.ndarray:
    """Lookup table: class value of `classes` -> the competition's value (`full`, every category kept)."""
    lut = np.arange(classes.num_classes, dtype=np.uint8)
    for category, value in classes.value_of.items():
        full_value = full.value_of[category]
        if value < classes.num_classes and full.names[full_value] == classes.names[value]:
            lut[value] = full_value
    return lut


def save_submission(
    path: Path, image_ids: Sequence[str], masks: Iterable[np.ndarray], num_classes: int, sidecar: dict[str, Any]
) -> Path:
    """Write the CSV under a temporary name, check it, then replace `path`; and its `.json` sidecar (with the
    CSV's SHA-256, by which `lb` knows a renamed copy).

    A CSV that fails the check is a bug: it raises and leaves any existing file as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write_submission(tmp, image_ids, masks)
        problems = check_submission(tmp, image_ids, num_classes)
        if problems:
            raise RuntimeError(f"{path}: the written submission is invalid: {problems[0]}")
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(path.with_suffix(".json"), {**sidecar, "sha256": digest})
    return path
