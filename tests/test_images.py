"""The decode-once image cache (competition.data.images) and the batch colour augmentation (data.colour)."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from competition.core.config import resolve
from competition.data import (
    MEAN,
    STD,
    ColourJitter,
    DataRoot,
    DecodeEachTime,
    SegmentationDataset,
    eval_transform,
    image_store,
    normalise,
    read_image,
    train_transform,
)
from competition.data import images as images_module
from competition.data.colour import GREY, compose


def _setup(root, size=16):
    data = DataRoot(root, check_images=False)
    coco = data.coco("train_all")
    return coco, data.masks("train_all", data.classes()), image_store(root, coco.path, coco.images, (size, size))


def _items(dataset, n_seeds=3):
    out = []
    for i in range(len(dataset)):
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            out.append(dataset[i])
    return out


def test_cached_items_are_the_decoded_items(tiny_root):
    """RGB, RGBA and grayscale files: the cache holds what decoding + the transforms' Resize give, and train
    and eval items from it equal those decoded from the file, pixel for pixel, under the same random draws."""
    coco, masks, store = _setup(tiny_root)
    cfg = resolve(flags={"image_size": 16, "aug_scale_min": 0.5, "aug_scale_max": 1.5, "aug_vflip": 0.5})
    for im in coco.images:
        decoded = tv_tensors.Image(torch.from_numpy(np.array(read_image(tiny_root, im, coco.path))).permute(2, 0, 1))
        expected = v2.Resize((16, 16), antialias=True)(decoded).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(store[im.id], expected)
    for mode, transform in (("train", train_transform(cfg)), ("eval", eval_transform(cfg))):
        plain = SegmentationDataset(tiny_root, coco.path, coco.images, masks, transform, mode)
        cached = SegmentationDataset(tiny_root, coco.path, coco.images, masks, transform, mode, pixels=store)
        for (a_image, a_mask), (b_image, b_mask) in zip(_items(plain), _items(cached), strict=True):
            assert torch.equal(a_image, b_image) and torch.equal(a_mask, b_mask)
            if mode == "train":
                assert a_image.dtype == a_mask.dtype == torch.uint8 and a_mask.shape == (16, 16)


def test_cached_items_on_mixed_real_sizes(real_root):
    """480x360 and 480x270 images resized to one square size, as the uncached pipeline does."""
    data = DataRoot(real_root, check_images=False)
    coco = data.coco("train_all")
    sizes = {}
    for im in coco.images:
        sizes.setdefault((im.height, im.width), im)
    images = list(sizes.values())[:3]
    assert len(images) >= 2
    masks = data.masks("train_all", data.classes())
    store = image_store(real_root, coco.path, images, (40, 48))
    cfg = resolve(flags={"image_size": "40x48"})
    plain = SegmentationDataset(real_root, coco.path, images, masks, train_transform(cfg), "train")
    cached = SegmentationDataset(real_root, coco.path, images, masks, train_transform(cfg), "train", pixels=store)
    for (a_image, a_mask), (b_image, b_mask) in zip(_items(plain, 2), _items(cached, 2), strict=True):
        assert a_image.shape == (3, 40, 48) and torch.equal(a_image, b_image) and torch.equal(a_mask, b_mask)


def test_corrupt_entry_is_detected_rebuilt_and_never_used(tiny_root, capfd):
    coco, _, store = _setup(tiny_root)
    good = {im.id: np.array(store[im.id]) for im in coco.images}
    data_file = store.folder / "pixels.u8"
    raw = bytearray(data_file.read_bytes())
    raw[store.entry + 5] ^= 0xFF  # one byte of the second entry
    data_file.write_bytes(bytes(raw))
    fresh = image_store(tiny_root, coco.path, coco.images, (16, 16))  # a new process's view: nothing checked
    assert fresh.folder == store.folder
    for im in coco.images:
        np.testing.assert_array_equal(fresh[im.id], good[im.id])
    assert "entry batch_01_vt/b.png was corrupt" in capfd.readouterr().err
    assert data_file.read_bytes() == b"".join(good[im.id].tobytes() for im in coco.images)  # mended in place

    (store.folder / "index.json").write_text("{not json")  # a damaged folder is rebuilt, not read
    logs = []
    again = image_store(tiny_root, coco.path, coco.images, (16, 16), log=logs.append)
    assert any("rebuilding" in line for line in logs) and any("3 decoded" in line for line in logs)
    for im in coco.images:
        np.testing.assert_array_equal(again[im.id], good[im.id])
    data_file.write_bytes(data_file.read_bytes()[:-1])  # truncated: also rebuilt
    logs.clear()
    image_store(tiny_root, coco.path, coco.images, (16, 16), log=logs.append)
    assert any("rebuilding" in line for line in logs)


def test_stale_entry_after_the_file_changes(tiny_root, isolated_cache):
    coco, _, store = _setup(tiny_root)
    im = coco.images[0]
    old = np.array(store[im.id])
    Image.fromarray(np.full((im.height, im.width, 3), 200, np.uint8)).save(tiny_root / im.file_name)
    os.utime(tiny_root / im.file_name, ns=((tiny_root / im.file_name).stat().st_atime_ns,) * 2)
    logs = []
    fresh = image_store(tiny_root, coco.path, coco.images, (16, 16), log=logs.append)
    assert fresh.folder != store.folder  # another key: the old entry cannot be read for the new file
    assert any("(1 decoded, 2 reused)" in line for line in logs), logs  # only the changed file is decoded
    new = fresh[im.id]
    assert not np.array_equal(new, old)
    np.testing.assert_array_equal(new, DecodeEachTime(tiny_root, coco.path, coco.images, (16, 16))[im.id])
    for other in coco.images[1:]:
        np.testing.assert_array_equal(fresh[other.id], store[other.id])
    # a file changed after the store was opened: a corrupt entry is not mended from the new content
    raw = bytearray((store.folder / "pixels.u8").read_bytes())
    raw[3] ^= 0xFF
    (store.folder / "pixels.u8").write_bytes(bytes(raw))
    stale_view = images_module.ImageStore(store.folder, tiny_root, coco.path, coco.images)
    with pytest.raises(Exception, match="changed since the image cache"):
        stale_view[im.id]


def _build_in_process(root, queue):
    data = DataRoot(root, check_images=False)  # the cache: $COMPETITION_CACHE, inherited from the test
    coco = data.coco("train_all")
    logs = []
    store = image_store(root, coco.path, coco.images, (16, 16), log=logs.append)
    queue.put((str(store.folder), [np.array(store[im.id]).tobytes() for im in coco.images], logs))


def test_concurrent_builders_build_once(tiny_root, isolated_cache):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(tiny_root, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    folders = {r[0] for r in results}
    assert len(folders) == 1 and all(r[1] == results[0][1] for r in results)
    assert sum(bool(r[2]) for r in results) == 1  # one process built; the others waited and read its cache
    assert sorted(p.name for p in (isolated_cache / "images").iterdir()) == [".build.lock", os.path.basename(*folders)]
    index = json.loads((isolated_cache / "images" / os.path.basename(*folders) / "index.json").read_text())
    assert [row[1] for row in index["images"]] == [
        im["file_name"] for im in json.loads((tiny_root / "train_all.json").read_text())["images"]
    ]


def test_normalise_is_to_float_and_normalize():
    images = torch.randint(0, 256, (3, 3, 8, 10), dtype=torch.uint8)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])(tv_tensors.Image(images))
    out = normalise(images)
    assert out.dtype == torch.float32 and torch.allclose(out, reference, atol=1e-5)


def test_colour_jitter_composes_the_four_steps():
    """The fused map equals the four steps applied one after another (unclipped), in the drawn order."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 50)).astype(np.float64)
    factors, order = np.array([1.1, 0.8, 1.2, 0.1]), np.array([2, 0, 3, 1])
    y = x / 255
    for step in order:
        if step == 0:
            y = factors[0] * y
        elif step == 1:
            y = factors[1] * y + (1 - factors[1]) * (GREY @ y).mean()
        elif step == 2:
            y = factors[2] * y + (1 - factors[2]) * (GREY @ y)
        else:  # a rotation about the grey axis keeps the mean of r, g, b and the distance to the axis
            before = y.copy()
            y = compose(np.array([1, 1, 1, factors[3]]), np.array([3]))[0] @ y * 255
            np.testing.assert_allclose(y.mean(0), before.mean(0))
            spread = [np.linalg.norm(v - v.mean(0), axis=0) for v in (y, before)]
            np.testing.assert_allclose(*spread)
    a, u, o = compose(factors, order)
    np.testing.assert_allclose(a @ x + (u @ x.mean(1))[:, None] + o[:, None], y, atol=1e-9)


def test_colour_jitter_on_uint8_matches_the_float_map_and_follows_the_seed():
    pixels = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8)
    jitter = ColourJitter(0.5)
    torch.manual_seed(1)
    params = jitter.make_params([])
    out = jitter.transform(tv_tensors.Image(pixels), params)
    assert out.dtype == torch.uint8 and out.shape == pixels.shape
    a, u, o = compose(params["factors"], params["order"])
    x = pixels.reshape(3, -1).double().numpy()
    expected = np.clip(a @ x + (u @ x.mean(1) + o)[:, None], 0, 1) * 255
    assert np.abs(out.reshape(3, -1).numpy() - expected).max() <= 1  # rounded once, at the end
    mask = tv_tensors.Mask(torch.ones(12, 10, dtype=torch.uint8))
    torch.manual_seed(1)
    first = jitter(tv_tensors.Image(pixels), mask)
    torch.manual_seed(1)
    again = jitter(tv_tensors.Image(pixels), mask)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], mask)  # the mask passes unchanged
    assert not torch.equal(jitter(tv_tensors.Image(pixels)), first[0])  # another draw
    # torchvision < 0.21 (torch 2.4/2.5) calls the former private names: the same draw and the same image
    torch.manual_seed(1)
    old = jitter._transform(tv_tensors.Image(pixels), jitter._get_params([]))
    assert torch.equal(old, first[0])
