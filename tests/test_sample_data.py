"""The synthetic sample dataset: competition layout, annotation formats, competition-like scenes (several big
objects of several classes, imbalanced classes), labels match pixels, determinism, a versioned cache folder."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from competition.core.errors import UserError
from competition.data import load_coco, sample_root, write_sample_dataset
from competition.data.coco import check_image_files
from competition.data.sample import LOOKS, SAMPLE_VERSION
from competition.submit import MeanIoU

RUN_A = [
    "UNKNOWN",
    "General trash",
    "Paper",
    "Paper pack",
    "Metal",
    "Glass",
    "Plastic",
    "Styrofoam",
    "Plastic bag",
    "Battery",
    "Clothing",
]
FILES = ("train_all.json", "train.json", "val.json", "test.json", "test_gt.json", "sample_submission.csv")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_sample_dataset(tmp_path_factory.mktemp("sample") / "data")


@pytest.fixture(scope="module")
def labels(root) -> list[np.ndarray]:
    """Each train_all image's category map under the run A overlap rule (higher id wins), -1 = background."""
    coco = COCO(str(root / "train_all.json"))
    maps = []
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        label = np.full((info["height"], info["width"]), -1)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            label = np.maximum(np.where(coco.annToMask(ann) > 0, ann["category_id"], -1), label)
        maps.append(label)
    return maps


def load(root: Path, name: str) -> dict:
    return json.loads((root / name).read_text())


def seg_format(ann: dict) -> str:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        return "polygon"
    return "compressed" if isinstance(seg["counts"], str) else "uncompressed"


def test_layout_and_image_files(root):
    for name in FILES:
        assert (root / name).is_file(), name
    assert {p.name for p in root.iterdir() if p.is_dir()} == {"batch_01_vt", "batch_02_vt", "batch_03"}
    assert not list(root.parent.glob("*.tmp-*")), "temporary folder left behind"
    for name in ("train_all.json", "test.json"):
        data = load(root, name)
        assert set(data) == {"info", "licenses", "images", "categories", "annotations"}
        for im in data["images"]:
            path = (root / im["file_name"]).resolve()
            assert root.resolve() in path.parents
            with Image.open(path) as img:
                assert img.size == (im["width"], im["height"])
        check_image_files(root, load_coco(root / name, need_annotations=name != "test.json"))


def test_splits_and_categories(root):
    train_all, train, val = (load(root, f"{n}.json") for n in ("train_all", "train", "val"))
    all_ids, train_ids, val_ids = ({im["id"] for im in d["images"]} for d in (train_all, train, val))
    assert train_ids | val_ids == all_ids and not train_ids & val_ids
    assert len(val_ids) == round(0.2 * len(all_ids))
    for split, ids in ((train, train_ids), (val, val_ids)):
        expected = [a for a in train_all["annotations"] if a["image_id"] in ids]
        assert split["annotations"] == expected
    for name in ("train_all", "train", "val", "test", "test_gt"):
        cats = load(root, f"{name}.json")["categories"]
        assert [(c["id"], c["name"]) for c in cats] == list(enumerate(RUN_A))
        assert all("supercategory" in c for c in cats)
    assert min(all_ids) == 0


def test_test_files_and_sample_submission(root):
    test, gt = load(root, "test.json"), load(root, "test_gt.json")
    assert test["annotations"] == []
    assert test["images"] == gt["images"] and gt["annotations"]
    assert {a["image_id"] for a in gt["annotations"]} <= {im["id"] for im in test["images"]}
    train_ids = {im["id"] for im in load(root, "train_all.json")["images"]}
    assert min(im["id"] for im in test["images"]) > max(train_ids)
    raw = (root / "sample_submission.csv").read_bytes()
    assert raw.startswith(b"image_id,PredictionString\r\n")
    with open(root / "sample_submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_id", "PredictionString"]
    assert rows[1:] == [[im["file_name"], ""] for im in test["images"]]


def test_annotations_load_in_pycocotools(root):
    coco = COCO(str(root / "train_all.json"))
    formats = set()
    overlapping_images = 0
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        masks = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(ann)
            assert mask.shape == (info["height"], info["width"])
            assert mask.sum() == ann["area"] > 0
            formats.add(seg_format(ann))
            masks.append(mask)
        if any((masks[i] & masks[j]).any() for i in range(len(masks)) for j in range(i)):
            overlapping_images += 1
    assert formats == {"polygon", "compressed", "uncompressed"}
    assert overlapping_images >= 0.2 * len(coco.getImgIds())
    assert any(len(a["segmentation"]) > 1 for a in coco.anns.values() if seg_format(a) == "polygon")


def test_dataset_variety(root):
    data = load(root, "train_all.json")
    ids = sorted(im["id"] for im in data["images"])
    assert ids != list(range(ids[0], ids[0] + len(ids))), "image ids should not be contiguous"
    assert len({(im["height"], im["width"]) for im in data["images"]}) >= 2
    annotated = {a["image_id"] for a in data["annotations"]}
    assert annotated < set(ids), "some images should have no objects"
    counts = np.bincount([a["category_id"] for a in data["annotations"]], minlength=len(RUN_A))
    assert counts.min() >= 3 and counts.max() >= 4 * counts[0], counts
    order = [RUN_A[c] for c in np.argsort(-counts, kind="stable")]
    assert set(order[:2]) == {"Paper", "Plastic bag"}, order  # the competition's imbalance
    assert set(order[-3:]) == {"UNKNOWN", "Battery", "Clothing"}, order


def test_scenes_hold_several_big_objects_like_the_competition(labels):
    """About 3 classes per image with background, background under half of most images: the per-image mIoU of
    predicting background everywhere is low, so the leaderboard metric rewards finding the objects."""
    classes = [len(np.unique(label)) for label in labels]
    background = [float((label < 0).mean()) for label in labels]
    assert 2.5 <= np.mean(classes) <= 4, np.bincount(classes)
    assert np.median(background) < 0.5 and np.mean(np.asarray(background) < 0.5) > 0.5
    metric = MeanIoU(len(RUN_A) + 1)
    for label in labels:
        target = torch.from_numpy(label + 1)[None]
        metric.update(torch.zeros_like(target), target)
    scores = metric.compute()
    assert scores.miou_image < 0.25 and scores.miou_dataset < 0.05, scores


def test_pixels_follow_labels(root, labels):
    """Each class's mean colour under the run A overlap rule is nearest to that class's own colour."""
    images = load(root, "train_all.json")["images"]
    sums, totals = np.zeros((len(RUN_A), 3)), np.zeros(len(RUN_A))
    for info, label in zip(images, labels, strict=True):
        with Image.open(root / info["file_name"]) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
        on = label >= 0
        np.add.at(sums, label[on], pixels[on])
        totals += np.bincount(label[on], minlength=len(RUN_A))
    means = sums / totals[:, None]
    colours = np.array([LOOKS[c].colour for c in range(len(RUN_A))], dtype=np.float64)
    distances = np.linalg.norm(means[:, None, :] - colours[None, :, :], axis=2)
    assert (distances.argmin(axis=1) == np.arange(len(RUN_A))).all(), distances.round()


def test_sample_root_is_versioned(tmp_path, monkeypatch):
    """A sample cached by another generator version is never reused: the folder is named after the version."""
    monkeypatch.setenv("COMPETITION_CACHE", str(tmp_path))
    assert sample_root() == tmp_path / f"sample-data-v{SAMPLE_VERSION}"


def test_same_seed_same_bytes(tmp_path, root):
    again = write_sample_dataset(tmp_path / "again")
    for name in FILES:
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    first = load(root, "train_all.json")["images"][0]["file_name"]
    assert (again / first).read_bytes() == (root / first).read_bytes()
    other = write_sample_dataset(tmp_path / "other", seed=1, n_train=10, n_test=3, size=64)
    assert (other / "train_all.json").read_bytes() != (root / "train_all.json").read_bytes()


def test_existing_root(tmp_path):
    base = tmp_path / "roots"
    full = base / "full"
    full.mkdir(parents=True)
    (full / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists and is not empty"):
        write_sample_dataset(full)
    assert os.listdir(full) == ["keep.txt"]
    empty = base / "empty"
    empty.mkdir()
    assert (write_sample_dataset(empty, n_train=5, n_test=2, size=32) / "train_all.json").is_file()
    assert sorted(p.name for p in base.iterdir()) == ["empty", "full"]


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    from competition.data import sample as sample_data

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_data, "_write_coco", fail)
    with pytest.raises(KeyboardInterrupt):
        write_sample_dataset(tmp_path / "roots" / "data", n_train=5, n_test=2, size=32)
    assert list((tmp_path / "roots").iterdir()) == []
