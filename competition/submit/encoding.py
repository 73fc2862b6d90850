"""The submission CSV format: write a CSV, parse one PredictionString.

Format: header `image_id,PredictionString`, one row per test image in test.json order; the PredictionString
is the class mask resized to 256x256 with OpenCV's INTER_NEAREST rule, flattened row-major, values separated
by single spaces (65,536 values). Problems are reported by file line number (the header is line 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from competition.core.fileio import atomic_path
from competition.core.geometry import SUBMISSION_SIZE

HEADER = ["image_id", "PredictionString"]


def _value_bytes() -> np.ndarray:
    """For each value 0..255: its decimal digits and a space, zero-padded to 4 bytes, as one uint32."""
    table = np.zeros((256, 4), dtype=np.uint8)
    for value in range(256):
        text = f"{value} ".encode()
        table[value, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return table.view(np.uint32).ravel()


VALUE_BYTES = _value_bytes()


def encode_mask(mask: np.ndarray) -> str:
    """A class mask as a PredictionString: values row-major, separated by single spaces."""
    flat = np.asarray(mask).ravel()
    if not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"expected an integer mask, got {flat.dtype}")
    if flat.size == 0:
        return ""
    if flat.min() < 0:
        raise ValueError(f"negative class value {flat.min()} in mask")
    top = int(flat.max())
    if top < 10:  # one digit each: write the ASCII bytes directly
        text = np.full(2 * flat.size - 1, ord(" "), dtype=np.uint8)
        text[::2] = flat + ord("0")
        return text.tobytes().decode("ascii")
    if top < 256:  # look up each value's bytes, then drop the zero padding
        codes = VALUE_BYTES[flat].view(np.uint8)
        return codes[codes != 0].tobytes()[:-1].decode("ascii")
    return " ".join(map(str, flat.tolist()))


def write_submission(path: Path | str, image_ids: Sequence[str], masks: Iterable[np.ndarray]) -> Path:
    """Write the CSV atomically (a failure leaves no file, or the old one), one mask row at a time."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        for image_id, mask in zip(image_ids, masks, strict=True):
            if mask.shape != (SUBMISSION_SIZE, SUBMISSION_SIZE):
                raise ValueError(f"mask of {image_id} has shape {mask.shape}, expected 256x256")
            # csv.writer would scan the 150 KB PredictionString for quoting; digits and spaces never need it
            f.write(f"{_csv_field(image_id)},{encode_mask(mask)}\n")
    return path


def _csv_field(text: str) -> str:
    """`text` as csv.writer (QUOTE_MINIMAL) writes a field."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def short_text(text: str, limit: int = 80) -> str:
    """`text`, cut to `limit` characters for a one-line message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(token: str, num_classes: int) -> str:
    """Why one PredictionString value is not a class value."""
    if token == "":
        return "an empty value (two spaces in a row, or a space at an end)"
    if re.fullmatch(r"-?[0-9]+", token):
        if token.startswith("-"):
            return f"value {token} is negative; class values are in [0, {num_classes})"
        if int(token) < num_classes:
            return f"value {token!r} has a leading zero"
        return f"value {token} is out of [0, {num_classes})"
    return f"value {token!r} is not an integer"


def parse_prediction(text: str, num_classes: int) -> tuple[np.ndarray | None, str | None]:
    """A PredictionString as a uint8 mask 256x256, or None and what is wrong with it.

    Valid values are exactly the decimal numerals of 0 .. num_classes - 1, separated by single spaces.
    """
    if not 0 < num_classes <= 256:
        raise ValueError(f"num_classes {num_classes} is outside 1..256 (masks are uint8)")
    expected = SUBMISSION_SIZE * SUBMISSION_SIZE
    data = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)  # one byte per character
    space = data == ord(" ")
    count = int(space.sum()) + 1 if data.size else 0
    if count != expected:
        return None, f"{count} values, expected {expected}"
    gaps = np.flatnonzero(space)
    starts = np.concatenate(([0], gaps + 1))
    length = np.concatenate((gaps, [data.size])) - starts
    # The first three digits of each value (padding past the end); a valid value has at most three.
    digit = np.concatenate((data, np.full(3, ord(" "), np.uint8))).astype(np.int16) - ord("0")
    d0, d1, d2 = digit[starts], digit[starts + 1], digit[starts + 2]
    is_digit = [(d >= 0) & (d <= 9) for d in (d0, d1, d2)]
    values = np.select([length == 1, length == 2], [d0, 10 * d0 + d1], 100 * d0 + 10 * d1 + d2)
    bad = (
        (length == 0)
        | (length > 3)
        | ~is_digit[0]
        | ((length > 1) & ~is_digit[1])
        | ((length > 2) & ~is_digit[2])
        | ((length > 1) & (d0 == 0))  # leading zero
        | (values >= num_classes)
    )
    if bad.any():
        first = int(np.argmax(bad))
        what = _describe(short_text(text[starts[first] : starts[first] + length[first]]), num_classes)
        more = f" ({int(bad.sum()) - 1} more bad values)" if bad.sum() > 1 else ""
        return None, f"{what} at index {first}{more}"
    return values.astype(np.uint8).reshape(SUBMISSION_SIZE, SUBMISSION_SIZE), None
