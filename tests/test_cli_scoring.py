"""`check` and `score` end to end through competition.cli.main, against submissions built independently.

The reference CSVs are made by the competition's rules with pycocotools, OpenCV and the baseline's join,
without any harness code: a perfect submission scores 1.0, a perturbed one matches torchmetrics.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from torchmetrics.functional.classification import multiclass_jaccard_index

from competition.cli import main
from tests.conftest import REAL_DATA, REAL_GT

SIZE = 256


def truth_masks(root: Path, gt: Path) -> tuple[list[str], np.ndarray, int]:
    """Test image ids in test.json order, their true masks [N, 256, 256] and the number of classes.

    Each mask is rendered alone: `np.maximum(annToMask(ann) * value, mask)` with value = 1 + index of the
    category sorted by id, then resized with cv2.INTER_NEAREST.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        coco = COCO(str(gt))
    value = {cid: 1 + i for i, cid in enumerate(sorted(coco.getCatIds()))}
    by_name = {im["file_name"]: im for im in coco.dataset["images"]}
    names = [im["file_name"] for im in json.loads((root / "test.json").read_text())["images"]]
    masks = []
    for name in names:
        info = by_name[name]
        mask = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])):
            mask = np.maximum(coco.annToMask(ann) * value[ann["category_id"]], mask)
        masks.append(cv2.resize(mask, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST))
    return names, np.stack(masks), 1 + len(value)


def write_csv(path: Path, names: list[str], masks: np.ndarray) -> Path:
    """The baseline's encoding: `' '.join(str(e) for e in mask.tolist())` of each flattened mask."""
    lines = ["image_id,PredictionString"]
    lines += [
        f"{name},{' '.join(str(e) for e in mask.flatten().tolist())}" for name, mask in zip(names, masks, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def score_json(capsys, csv: Path, gt: Path, root: Path) -> dict:
    """`score CSV --gt GT --data ROOT --json`: exit 0 and the JSON object of the last stdout line."""
    capsys.readouterr()
    assert main(["score", str(csv), "--gt", str(gt), "--data", str(root), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def assert_perfect(scores: dict, truth: np.ndarray, num_classes: int) -> None:
    """Every score is 1.0; per-class IoU is 1.0 for classes in the truth and None for the others."""
    assert set(scores) >= {"miou_image", "miou_dataset", "per_class", "pixel_accuracy"}
    assert scores["miou_image"] == 1.0
    assert scores["miou_dataset"] == 1.0
    assert scores["pixel_accuracy"] == 1.0
    present = set(np.unique(truth).tolist())
    assert scores["per_class"] == [1.0 if c in present else None for c in range(num_classes)]


@pytest.fixture(scope="module")
def real_truth() -> tuple[list[str], np.ndarray, int]:
    if not (REAL_DATA / "train_all.json").exists():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return truth_masks(REAL_DATA, REAL_GT)


def test_exact_submission_is_valid_and_scores_one(real_root, real_truth, tmp_path, capsys):
    names, truth, num_classes = real_truth
    csv = write_csv(tmp_path / "exact.csv", names, truth)
    assert main(["check", str(csv), "--data", str(real_root)]) == 0
    scores = score_json(capsys, csv, REAL_GT, real_root)
    assert num_classes == 17 and len(scores["per_class"]) == 17
    assert_perfect(scores, truth, num_classes)


def test_perturbed_submission_matches_torchmetrics(real_root, real_truth, tmp_path, capsys):
    names, truth, num_classes = real_truth
    pred = truth.copy()
    pred[0] = 0  # one image all background
    pred[1::3] = np.roll(pred[1::3], shift=(9, -13), axis=(1, 2))  # every third image shifted
    pred[2::7, :40] = 1  # a band of class 1 on every seventh image
    scores = score_json(capsys, write_csv(tmp_path / "perturbed.csv", names, pred), REAL_GT, real_root)

    p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
    per_image = [
        float(multiclass_jaccard_index(pi, ti, num_classes, average="macro", validate_args=False))
        for pi, ti in zip(p, t, strict=True)
    ]
    dataset = float(multiclass_jaccard_index(p, t, num_classes, average="macro", validate_args=False))
    assert scores["miou_image"] < 1.0 and scores["miou_dataset"] < 1.0
    assert scores["miou_image"] == pytest.approx(np.mean(per_image), abs=1e-6)
    assert scores["miou_dataset"] == pytest.approx(dataset, abs=1e-6)
    assert scores["pixel_accuracy"] == pytest.approx(float((pred == truth).mean()), abs=1e-12)
    per_class = multiclass_jaccard_index(p, t, num_classes, average="none", validate_args=False).tolist()
    absent = [c for c in range(num_classes) if not ((p == c).any() or (t == c).any())]
    assert scores["per_class"] == [None if c in absent else pytest.approx(v, abs=1e-6) for c, v in enumerate(per_class)]


def test_missing_row_is_rejected_by_check_and_score(real_root, real_truth, tmp_path, capsys):
    names, truth, _ = real_truth
    csv = write_csv(tmp_path / "short.csv", names[:-1], truth[:-1])
    capsys.readouterr()
    assert main(["check", str(csv), "--data", str(real_root)]) == 1
    err = capsys.readouterr().err
    assert str(csv) in err and names[-1] in err

    assert main(["score", str(csv), "--gt", str(REAL_GT), "--data", str(real_root), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no JSON for a failed score
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert str(csv) in lines[0] and "Traceback" not in err


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    """The embedded sample dataset, written by `./run.sh sample-data DIR`."""
    root = tmp_path_factory.mktemp("sample") / "data"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["sample-data", str(root)]) == 0
    return root


def test_sample_data_exact_submission_scores_one(sample_root, tmp_path, capsys):
    root = sample_root
    gt = root / "test_gt.json"
    names, truth, num_classes = truth_masks(root, gt)
    csv = write_csv(tmp_path / "sample.csv", names, truth)
    assert main(["check", str(csv), "--data", str(root)]) == 0
    assert_perfect(score_json(capsys, csv, gt, root), truth, num_classes)


def test_class_absent_from_the_test_set_is_null(sample_root, tmp_path, capsys):
    root = sample_root
    data = json.loads((root / "test_gt.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 2]  # no Paper (value 3)
    gt = tmp_path / "gt_without_paper.json"
    gt.write_text(json.dumps(data))
    names, truth, num_classes = truth_masks(root, gt)
    scores = score_json(capsys, write_csv(tmp_path / "sample.csv", names, truth), gt, root)
    assert scores["per_class"][3] is None
    assert_perfect(scores, truth, num_classes)
