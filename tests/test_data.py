"""Data layer: COCO loading, class table, masks (against pycocotools), mask cache, Dataset, folds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from competition.core.config import resolve
from competition.core.errors import UserError
from competition.data import (
    DataRoot,
    Folds,
    SegmentationDataset,
    build_class_table,
    eval_transform,
    make_folds,
    train_transform,
)
from competition.data import masks as masks_module
from competition.data.folds import iterative_stratification, kfold, presence_matrix


def reference_masks(path, values_by_rank=True):
    """Run A's baseline rendering with pycocotools' own COCO class: np.maximum(annToMask * value, mask)."""
    coco = COCO(str(path))
    cat_ids = sorted(coco.getCatIds())
    value = {cid: 1 + i for i, cid in enumerate(cat_ids)}
    out = {}
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        mask = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            mask = np.maximum(coco.annToMask(ann) * value[ann["category_id"]], mask)
        out[img_id] = mask
    return out


def test_class_table_values_and_names(tiny_root):
    data = DataRoot(tiny_root)
    table = data.classes()
    assert table.names == ("background", "UNKNOWN", "General trash", "Glass")
    assert table.value_of == {0: 1, 1: 2, 5: 3}  # 1 + index sorted by id, ids need not be contiguous


def test_class_policy_ignore_and_merge(tiny_root):
    cats = DataRoot(tiny_root).categories
    ignored = build_class_table(cats, {"UNKNOWN": "ignore"})
    assert ignored.names == ("background", "General trash", "Glass")
    assert ignored.value_of == {0: 255, 1: 1, 5: 2}
    merged = build_class_table(cats, {"0": "merge:General trash"})
    assert merged.names == ("background", "General trash", "Glass")
    assert merged.value_of == {0: 1, 1: 1, 5: 2}
    with pytest.raises(UserError, match="did you mean 'Glass'"):
        build_class_table(cats, {"Glas": "ignore"})
    with pytest.raises(UserError, match="not kept"):
        build_class_table(cats, {"UNKNOWN": "ignore", "Glass": "merge:UNKNOWN"})


def test_masks_match_pycocotools_on_tiny(tiny_root):
    data = DataRoot(tiny_root)
    store = data.masks("train_all", data.classes())
    ref = reference_masks(tiny_root / "train_all.json")
    for image_id, mask in ref.items():
        np.testing.assert_array_equal(store[image_id], mask)
    assert (store[10] == 3).sum() == 8 * 10  # the compressed RLE block
    assert (store[3] == 3).sum() == 8 * 10  # the uncompressed RLE block
    assert store[7].max() == 0  # no annotations: all background


def test_masks_match_pycocotools_on_real_data(real_root):
    data = DataRoot(real_root, check_images=False)
    store = data.masks("train_all", data.classes())
    ref = reference_masks(real_root / "train_all.json")
    for image_id in list(ref)[:60]:
        np.testing.assert_array_equal(store[image_id], ref[image_id])


def test_overlap_policies(tiny_root):
    data = DataRoot(tiny_root)
    table = data.classes()
    top = data.masks("train_all", table, overlap="max")[10]
    small = data.masks("train_all", table, overlap="small-on-top")[10]
    assert top[12, 12] == 2  # General trash (value 2) beats UNKNOWN (value 1) under max
    assert small[12, 12] == 1  # the smaller UNKNOWN polygon lies on top
    assert top[4, 4] == small[4, 4] == 2


def test_ignore_policy_in_masks(tiny_root):
    data = DataRoot(tiny_root)
    mask = data.masks("train_all", data.classes({"UNKNOWN": "ignore"}), overlap="small-on-top")[10]
    assert mask[12, 12] == 255 and mask[4, 4] == 1


def test_mask_cache_never_calls_pycocotools_again(tiny_root, isolated_cache, monkeypatch):
    data = DataRoot(tiny_root)
    first = data.masks("train_all", data.classes())
    folders = list((isolated_cache / "masks").iterdir())
    assert len(folders) == 1

    def boom(*a, **k):
        raise AssertionError("pycocotools called although the masks are cached")

    with monkeypatch.context() as patch:
        patch.setattr(masks_module.mask_utils, "decode", boom)
        again = DataRoot(tiny_root).masks("train_all", DataRoot(tiny_root).classes())
        for image_id in (10, 3, 7):
            np.testing.assert_array_equal(first[image_id], again[image_id])
    data.masks("train_all", data.classes(), overlap="small-on-top")  # other settings: another entry
    data.masks("train_all", data.classes({"UNKNOWN": "ignore"}))
    assert len(list((isolated_cache / "masks").iterdir())) == 3


def test_cache_key_follows_file_content(tiny_root, isolated_cache):
    data = DataRoot(tiny_root)
    data.masks("train_all", data.classes())
    coco = json.loads((tiny_root / "train_all.json").read_text())
    coco["annotations"] = coco["annotations"][:1]
    (tiny_root / "train_all.json").write_text(json.dumps(coco))
    fresh = DataRoot(tiny_root)
    assert fresh.masks("train_all", fresh.classes())[3].max() == 0
    assert len(list((isolated_cache / "masks").iterdir())) == 2


def test_dataset_modes_and_conversions(tiny_root):
    data = DataRoot(tiny_root)
    cfg = resolve(flags={"image_size": 64})
    coco = data.coco("train_all")
    store = data.masks("train_all", data.classes())
    train = SegmentationDataset(tiny_root, coco.path, coco.images, store, train_transform(cfg), "train")
    for i in range(len(train)):  # RGB jpg, RGBA png and grayscale jpg all become 3-channel images
        image, mask = train[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8  # normalised per batch on the device
        assert mask.shape == (64, 64) and mask.dtype == torch.uint8
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}
    evaluation = SegmentationDataset(tiny_root, coco.path, coco.images, store, eval_transform(cfg), "eval")
    image, mask = evaluation[0]
    assert image.shape == (3, 64, 64) and mask.shape == (256, 256)
    assert set(mask.unique().tolist()) == {0, 2, 3}  # image 10: UNKNOWN lies under General trash (max)


def test_training_augmentation_keeps_labels_aligned(tiny_root):
    """A flipped/scaled mask still sits where the image content is: check with an image equal to its mask."""
    data = DataRoot(tiny_root)
    cfg = resolve(flags={"image_size": 32, "aug_color": 0.0, "aug_hflip": 1.0})
    transform = train_transform(cfg)
    from torchvision import tv_tensors

    mask = torch.from_numpy(data.masks("train_all", data.classes())[10].astype(np.int64))
    image = tv_tensors.Image((mask * 60).to(torch.uint8).expand(3, -1, -1).clone())
    out_image, out_mask = transform(image, tv_tensors.Mask(mask))
    restored = out_image[0].float()  # uint8: normalisation follows per batch on the device
    inside = out_mask != 255
    agree = (restored[inside] - out_mask[inside] * 60).abs() <= 60  # resampling blurs only edges
    assert agree.float().mean() > 0.9


def test_folds_are_reproducible_and_written_once(tiny_root, real_root, monkeypatch):
    data = DataRoot(real_root, check_images=False)
    coco = data.coco("train_all")
    folds = kfold(coco, 5, seed=3)
    assert folds.path.exists()
    every = sorted(i for f in folds.val_ids for i in f)
    assert every == sorted(coco.image_ids)
    sizes = np.array([len(f) for f in folds.val_ids])
    assert (abs(sizes - len(coco.images) / 5) <= 0.05 * len(coco.images) / 5).all(), sizes
    import competition.data.folds as folds_module

    monkeypatch.setattr(folds_module, "iterative_stratification", lambda *a: pytest.fail("recomputed"))
    assert kfold(coco, 5, seed=3) == folds
    assert set(folds.train_ids(0)) == set(coco.image_ids) - set(folds.val_ids[0])


def test_folds_stratify_class_presence(real_root):
    """Every category's images spread evenly: per fold within 1 of k-th of its count (rarest first)."""
    coco = DataRoot(real_root, check_images=False).coco("train_all")
    labels = presence_matrix(coco)
    fold_of = iterative_stratification(labels, 5, seed=0)
    per_fold = np.stack([labels[fold_of == f].sum(0) for f in range(5)])
    assert (per_fold.max(0) - per_fold.min(0) <= 2).all(), per_fold
    assert (iterative_stratification(labels, 5, seed=0) == fold_of).all()
    assert not (iterative_stratification(labels, 5, seed=1) == fold_of).all()
    rare = labels.sum(0) == labels.sum(0)[labels.sum(0) > 0].min()
    assert (per_fold[:, rare].max(0) - per_fold[:, rare].min(0) <= 1).all()


def test_official_split(tiny_root):
    data = DataRoot(tiny_root)
    folds = make_folds(data, "official", 5, 0)
    assert isinstance(folds, Folds) and folds.k == 1
    assert folds.val_ids == ((7,),) and folds.train_ids(0) == [10, 3]
