"""The submission CSV: OpenCV nearest resizing, exact encoding, atomic writing, every rejection."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from competition.core.errors import UserError
from competition.core.geometry import SUBMISSION_SIZE, nearest_indices, resize_nearest
from competition.submit import check_submission, encode_mask, parse_prediction, read_submission, write_submission
from competition.submit.check import MAX_PROBLEMS

NUM_CLASSES = 12
IDS = [f"batch_01_vt/{i:04d}.jpg" for i in range(4)]


def baseline_encode(mask: np.ndarray) -> str:
    """The competition baseline's PredictionString."""
    return " ".join(str(e) for e in mask.flatten().tolist())


def random_masks(n: int = len(IDS), num_classes: int = NUM_CLASSES, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, (n, 256, 256), dtype=np.uint8)


# --- resizing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(512, 512), (270, 480), (480, 270), (360, 480), (200, 300), (100, 100), (7, 999)])
def test_resize_nearest_equals_opencv_inter_nearest(h, w):
    mask = np.random.default_rng(h * w).integers(0, 256, (h, w), dtype=np.uint8)
    expected = cv2.resize(mask, (SUBMISSION_SIZE, SUBMISSION_SIZE), interpolation=cv2.INTER_NEAREST)
    rows, cols = nearest_indices(h, w)
    assert np.array_equal(mask[rows[:, None], cols], expected)
    assert np.array_equal(resize_nearest(mask), expected)
    resized = resize_nearest(torch.from_numpy(np.stack([mask, 255 - mask]))[None])  # a tensor [1, 2, h, w]
    assert resized.shape == (1, 2, 256, 256)
    assert np.array_equal(resized[0].numpy(), np.stack([expected, 255 - expected]))


def test_512_is_every_other_pixel_and_pil_nearest_differs():
    mask = np.random.default_rng(0).integers(0, NUM_CLASSES, (512, 512), dtype=np.uint8)
    assert np.array_equal(resize_nearest(mask), mask[::2, ::2])
    # PIL's NEAREST samples pixel centres: it reads the odd rows and columns, not the competition's pixels.
    pil = np.asarray(Image.fromarray(mask).resize((256, 256), Image.NEAREST))
    assert np.array_equal(pil, mask[1::2, 1::2]) and not np.array_equal(pil, resize_nearest(mask))


# --- encoding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [1, 10, 12, 256])
def test_encode_mask_equals_baseline_join(top):
    mask = np.random.default_rng(top).integers(0, top, (256, 256))
    mask[0, 0] = top - 1
    for variant in (mask, mask.astype(np.uint8), mask.T):  # .T: not C-contiguous
        assert encode_mask(variant) == baseline_encode(variant)
    values, problem = parse_prediction(encode_mask(mask), num_classes=top)
    assert problem is None and np.array_equal(values, mask)


def test_encode_mask_rejects_negative_and_float():
    with pytest.raises(ValueError, match="negative"):
        encode_mask(np.full((2, 2), -1))
    with pytest.raises(ValueError, match="integer"):
        encode_mask(np.zeros((2, 2)))


# --- writing ----------------------------------------------------------------------------------------------


def test_write_then_check_and_read_back(tmp_path):
    masks = random_masks()
    path = write_submission(tmp_path / "sub.csv", IDS, (m for m in masks))  # a generator streams
    lines = path.read_text().split("\n")
    assert lines[0] == "image_id,PredictionString" and lines[-1] == "" and len(lines) == len(IDS) + 2
    assert lines[1] == f"{IDS[0]},{baseline_encode(masks[0])}"
    assert check_submission(path, IDS, NUM_CLASSES) == []
    back = read_submission(path, IDS, NUM_CLASSES)
    assert back.dtype == np.uint8 and np.array_equal(back, masks)
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_crlf_and_bom_are_accepted(tmp_path):
    masks = random_masks()
    rows = ["image_id,PredictionString"] + [f"{i},{encode_mask(m)}" for i, m in zip(IDS, masks, strict=True)]
    path = tmp_path / "windows.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    assert np.array_equal(read_submission(path, IDS, NUM_CLASSES), masks)


def failing_after(n: int, masks: np.ndarray):
    yield from masks[:n]
    raise RuntimeError("prediction crashed")


@pytest.mark.parametrize("old", [None, "old content\n"])
def test_write_submission_is_atomic(tmp_path, old):
    path = tmp_path / "sub.csv"
    if old is not None:
        path.write_text(old)
    with pytest.raises(RuntimeError, match="crashed"):
        write_submission(path, IDS, failing_after(2, random_masks()))
    with pytest.raises(ValueError):  # fewer masks than images
        write_submission(path, IDS, list(random_masks(len(IDS) - 1)))
    with pytest.raises(ValueError, match="256x256"):
        write_submission(path, IDS[:1], [np.zeros((512, 512), dtype=np.uint8)])
    assert [p.name for p in tmp_path.iterdir()] == ([] if old is None else ["sub.csv"])  # no temporary left
    if old is not None:
        assert path.read_text() == old


# --- checking ---------------------------------------------------------------------------------------------


def valid_lines() -> list[str]:
    return ["image_id,PredictionString"] + [f"{i},{encode_mask(m)}" for i, m in zip(IDS, random_masks(), strict=True)]


def with_value(line: str, index: int, value: str) -> str:
    image_id, text = line.split(",")
    values = text.split(" ")
    values[index] = value
    return f"{image_id},{' '.join(values)}"


def drop_last_value(line: str) -> str:
    return line.rsplit(" ", 1)[0]


def swap(lines: list[str], i: int, j: int) -> list[str]:
    lines[i], lines[j] = lines[j], lines[i]
    return lines


CASES = {
    "wrong header": (
        lambda ls: ["image_id,Prediction", *ls[1:]],
        ["line 1:", "header 'image_id,Prediction'"],
    ),
    "missing row": (lambda ls: ls[:2] + ls[3:], [f"1 test images have no row: {IDS[1]}"]),
    "extra row": (
        lambda ls: [*ls, ls[1].replace(IDS[0], "batch_09/x.jpg")],
        ["line 6 (image_id batch_09/x.jpg): not a test image"],
    ),
    "duplicate": (lambda ls: [*ls, ls[2]], [f"line 6 (image_id {IDS[1]}): duplicate of line 3"]),
    "out of order": (
        lambda ls: swap(ls, 2, 3),
        [f"line 3 (image_id {IDS[2]}): rows are not in test.json order (expected image_id {IDS[1]} here)"],
    ),
    "too few values": (
        lambda ls: [*ls[:4], drop_last_value(ls[4])],
        [f"line 5 (image_id {IDS[3]}): 65535 values, expected 65536"],
    ),
    "too many values": (
        lambda ls: [*ls[:2], ls[2] + " 0", *ls[3:]],
        [f"line 3 (image_id {IDS[1]}): 65537 values"],
    ),
    "empty string": (lambda ls: [*ls[:2], f"{IDS[1]},", *ls[3:]], ["0 values, expected 65536"]),
    "float": (
        lambda ls: [*ls[:2], with_value(ls[2], 7, "1.5"), *ls[3:]],
        ["value '1.5' is not an integer at index 7"],
    ),
    "letter": (
        lambda ls: [*ls[:2], with_value(ls[2], 0, "a"), *ls[3:]],
        [f"line 3 (image_id {IDS[1]}): value 'a'"],
    ),
    "out of range": (
        lambda ls: [*ls[:2], with_value(ls[2], 65535, "12"), *ls[3:]],
        ["value 12 is out of [0, 12) at index 65535"],
    ),
    "negative": (lambda ls: [*ls[:2], with_value(ls[2], 3, "-1"), *ls[3:]], ["value -1 is negative"]),
    "double space": (lambda ls: [*ls[:2], with_value(ls[2], 3, ""), *ls[3:]], ["empty value"]),
    "third field": (
        lambda ls: [*ls[:2], ls[2] + ",x", *ls[3:]],
        [f"line 3 (image_id {IDS[1]}): 3 fields, expected 2"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_names_the_file_and_row_of_each_problem(tmp_path, case):
    edit, expected = CASES[case]
    path = tmp_path / "sub.csv"
    path.write_text("\n".join(edit(valid_lines())) + "\n")
    problems = check_submission(path, IDS, NUM_CLASSES)
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(path)) and "\n" not in problems[0]
    for text in expected:
        assert text in problems[0]
    with pytest.raises(UserError, match="^" + re.escape(str(path))):
        read_submission(path, IDS, NUM_CLASSES)


def test_missing_header_is_reported_shortly(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text("\n".join(valid_lines()[1:]) + "\n")
    header, missing = check_submission(path, IDS, NUM_CLASSES)
    assert header.startswith(f"{path} line 1: header '{IDS[0]},") and len(header) < len(str(path)) + 200
    assert missing == f"{path}: 1 test images have no row: {IDS[0]}"


def test_check_collects_problems_and_caps_them(tmp_path):
    ids = [f"img{i}.jpg" for i in range(30)]
    path = tmp_path / "bad.csv"
    path.write_text("image_id,PredictionString\n" + "".join(f"{i},1 2\n" for i in ids))
    problems = check_submission(path, ids, NUM_CLASSES)
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1] == "... and 10 more problems"
    assert problems[0] == f"{path} line 2 (image_id img0.jpg): 2 values, expected 65536"
    with pytest.raises(UserError, match=r"2 values, expected 65536 \(and 29 more problems\)$"):
        read_submission(path, ids, NUM_CLASSES)


def test_unreadable_files(tmp_path):
    missing = tmp_path / "none.csv"
    assert check_submission(missing, IDS, NUM_CLASSES) == [f"{missing}: file not found"]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert check_submission(empty, IDS, NUM_CLASSES)[0].startswith(f"{empty}: empty file")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"image_id,PredictionString\n\xff\xfe,0\n")
    assert "not a readable CSV" in check_submission(binary, IDS, NUM_CLASSES)[-1]
