"""Hard voting: the pixel-wise majority of existing submission CSVs, ties to the earliest CSV (read row by row,
BLOCK images at a time: memory does not grow with the test set)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from competition.core.errors import UserError
from competition.core.log import Log
from competition.core.runs import new_run_id, now
from competition.data import DataRoot, resolve_data_root
from competition.predict import BLOCK
from competition.submit import SUBMISSIONS, check_name, iter_submission, save_submission


def majority(votes: np.ndarray) -> np.ndarray:
    """Pixel-wise majority of label maps [K, ...]; a tie goes to the earliest map holding a tied value."""
    support = (votes[:, None] == votes[None]).sum(1)  # [K, ...]: how many maps agree with map k
    first = (support == support.max(0)).argmax(0)
    return np.take_along_axis(votes, first[None], 0)[0]


def vote_csvs(
    csvs: Sequence[Path],
    data: str | None = None,
    name: str | None = None,
    out_dir: Path = SUBMISSIONS,
    log: Log = print,
) -> dict[str, Any]:
    """Hard-vote ensemble of submission CSVs (each validated against test.json) -> a new CSV."""
    if len(csvs) < 2:
        raise UserError("ensemble --from-csv: give at least two CSV files")
    name = check_name(name or new_run_id("ensemble"))
    root = DataRoot(resolve_data_root(data, log), check_images=False)
    ids = [im.file_name for im in root.coco("test").images]
    num_classes = root.classes().num_classes
    rows = [iter_submission(path, ids, num_classes) for path in csvs]  # each checked first
    log(f"voting {len(csvs)} CSVs pixel by pixel over {len(ids)} test images")
    csv = out_dir / f"{name}.csv"
    result = {
        "csv": str(csv),
        "members": [str(p) for p in csvs],
        "weights": [1 / len(csvs)] * len(csvs),
        "oof_miou": None,
        "member_oof_miou": [],
    }
    masks = (mask for votes in _blocks(rows, len(ids)) for mask in majority(votes))
    save_submission(csv, ids, masks, num_classes, {**result, "method": "majority", "date": now()})
    log(f"submission: {csv}")
    return result


def _blocks(rows: list[Iterator[np.ndarray]], n: int) -> Iterator[np.ndarray]:
    """Votes [K, b, 256, 256] of BLOCK images at a time from K row iterators."""
    for start in range(0, n, BLOCK):
        count = min(BLOCK, n - start)
        yield np.stack([np.stack([next(r) for _ in range(count)]) for r in rows])
