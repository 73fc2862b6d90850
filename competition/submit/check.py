"""Checking a submission CSV against the competition's rules, and reading a valid one back.

Problems are reported by file line number (the header is line 1), at most MAX_PROBLEMS of them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from competition.core.errors import UserError
from competition.core.fileio import user_file
from competition.submit.encoding import HEADER, parse_prediction, short_text

MAX_PROBLEMS = 20


def _scan(
    path: Path | str, image_ids: Sequence[str], num_classes: int, keep: bool
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every problem of the CSV at `path`, and (if `keep`) the parsed mask of each valid row by image id."""
    name = str(path)
    problems: list[str] = []
    masks: dict[str, np.ndarray] = {}
    expected = set(image_ids)
    first_line: dict[str, int] = {}
    csv.field_size_limit(2**31 - 1)  # a PredictionString is ~130 KB, over the csv module's default limit
    try:
        with open(user_file(path, "submission CSV"), newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return [f"{name}: empty file, expected the header {','.join(HEADER)}"], masks
            if header != HEADER:
                found = short_text(",".join(header))
                problems.append(f"{name} line 1: header {found!r}, expected {','.join(HEADER)!r}")
            for row in reader:
                if not row:
                    continue
                image_id = row[0]
                where = f"{name} line {reader.line_num} (image_id {short_text(image_id)})"
                if image_id not in expected:
                    problems.append(f"{where}: not a test image (extra row)")
                    continue
                if image_id in first_line:
                    problems.append(f"{where}: duplicate of line {first_line[image_id]}")
                    continue
                first_line[image_id] = reader.line_num
                if len(row) != 2:
                    problems.append(f"{where}: {len(row)} fields, expected 2 ({','.join(HEADER)})")
                    continue
                mask, problem = parse_prediction(row[1], num_classes)
                if problem:
                    problems.append(f"{where}: {problem}")
                elif keep:
                    masks[image_id] = mask
    except UserError as e:
        return [str(e)], masks
    except FileNotFoundError:
        return [f"{name}: file not found"], masks
    except OSError as e:
        return [f"{name}: cannot read the submission CSV ({e.strerror or e})"], masks
    except (UnicodeDecodeError, csv.Error) as e:
        return [*problems, f"{name}: not a readable CSV ({e})"], masks
    return problems + _set_problems(name, image_ids, first_line), masks


def _set_problems(name: str, image_ids: Sequence[str], first_line: dict[str, int]) -> list[str]:
    """Missing test images and rows out of test.json order (`first_line`: image id -> line, file order)."""
    problems = []
    missing = [i for i in image_ids if i not in first_line]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        problems.append(f"{name}: {len(missing)} test images have no row: {shown}")
    in_test_order = [i for i in image_ids if i in first_line]
    for found, wanted in zip(first_line, in_test_order, strict=True):
        if found != wanted:
            problems.append(
                f"{name} line {first_line[found]} (image_id {found}): rows are not in test.json order "
                f"(expected image_id {wanted} here)"
            )
            break
    return problems


def check_submission(path: Path | str, image_ids: Sequence[str], num_classes: int) -> list[str]:
    """The problems of a submission CSV for these test images (in test.json order); empty if it is valid.

    At most MAX_PROBLEMS messages, then one saying how many more there are.
    """
    problems = _scan(path, image_ids, num_classes, keep=False)[0]
    if len(problems) > MAX_PROBLEMS:
        return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return problems


def read_submission(path: Path | str, image_ids: Sequence[str], num_classes: int) -> np.ndarray:
    """The masks [N, 256, 256] (uint8) of a valid submission, in `image_ids` order; UserError if invalid."""
    problems, masks = _scan(path, image_ids, num_classes, keep=True)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return np.stack([masks[i] for i in image_ids])


def iter_submission(path: Path | str, image_ids: Sequence[str], num_classes: int) -> Iterator[np.ndarray]:
    """The masks (uint8 256x256) of a valid submission one row at a time, in test.json order: checked now (a
    UserError if invalid), read as the iterator is consumed, so memory stays one row."""
    problems = check_submission(path, image_ids, num_classes)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return _rows(path, num_classes)


def _rows(path: Path | str, num_classes: int) -> Iterator[np.ndarray]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if row:
                yield parse_prediction(row[1], num_classes)[0]
