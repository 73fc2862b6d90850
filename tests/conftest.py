"""Shared fixtures: a tiny hand-made dataset root, the real trashcan-mini root, an isolated cache."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trashcan-mini"
REAL_GT = REAL_DATA.parent / "trashcan-mini-gt" / "test_gt.json"

CATEGORIES = [{"id": 0, "name": "UNKNOWN"}, {"id": 1, "name": "General trash"}, {"id": 5, "name": "Glass"}]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own mask/fold cache and working directory."""
    monkeypatch.setenv("COMPETITION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COMPETITION_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def write_image(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)


def tiny_coco() -> dict:
    """Three 24x32 images: overlapping polygons, an uncompressed RLE, and an empty image."""
    from pycocotools import mask as mask_utils

    h, w = 24, 32
    block = np.zeros((h, w), dtype=np.uint8, order="F")
    block[2:10, 20:30] = 1
    rle = mask_utils.encode(block)
    rle["counts"] = rle["counts"].decode()
    uncompressed = {"size": [h, w], "counts": _uncompressed_counts(block)}
    return {
        "images": [
            {"id": 10, "file_name": "batch_01_vt/a.jpg", "height": h, "width": w},
            {"id": 3, "file_name": "batch_01_vt/b.png", "height": h, "width": w},
            {"id": 7, "file_name": "batch_02_vt/c.jpg", "height": h, "width": w},
        ],
        "categories": CATEGORIES,
        "annotations": [
            # image 10: a big General trash square (5 vertices) with a small UNKNOWN square (4) on it
            {
                "id": 1,
                "image_id": 10,
                "category_id": 1,
                "segmentation": [[2, 2, 11, 2, 20, 2, 20, 20, 2, 20]],
            },
            {"id": 2, "image_id": 10, "category_id": 0, "segmentation": [[10, 10, 16, 10, 16, 16, 10, 16]]},
            {"id": 3, "image_id": 10, "category_id": 5, "segmentation": rle},
            {"id": 4, "image_id": 3, "category_id": 5, "segmentation": uncompressed},
        ],
    }


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def build_root(root: Path, coco: dict | None = None, test_images: int = 2) -> Path:
    """Write a dataset root with train_all.json (tiny_coco), train/val, test.json and the image files."""
    coco = coco or tiny_coco()
    modes = ["RGB", "RGBA", "L"]  # grayscale and RGBA images must be converted, not rejected
    for i, im in enumerate(coco["images"]):
        write_image(root / im["file_name"], im["width"], im["height"], mode=modes[i % 3], seed=i)
    ids = [im["id"] for im in coco["images"]]
    (root / "train_all.json").write_text(json.dumps(coco))
    for name, keep in (("train", ids[:-1]), ("val", ids[-1:])):
        sub = {**coco, "images": [im for im in coco["images"] if im["id"] in keep]}
        sub["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
        (root / f"{name}.json").write_text(json.dumps(sub))
    test = [{"id": 100 + i, "file_name": f"batch_03/t{i}.jpg", "height": 20, "width": 30} for i in range(test_images)]
    for i, im in enumerate(test):
        write_image(root / im["file_name"], im["width"], im["height"], seed=50 + i)
    (root / "test.json").write_text(json.dumps({"images": test, "categories": coco["categories"], "annotations": []}))
    (root / "sample_submission.csv").write_text("image_id,PredictionString\n")
    return root


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    return build_root(tmp_path / "data")


@pytest.fixture
def real_root() -> Path:
    if not (REAL_DATA / "train_all.json").exists():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL URL: CI's server, else one started locally for the session (skipped when impossible)."""
    url = os.environ.get("COMPETITION_TEST_POSTGRES")
    if url:  # CI's server (.ci/run)
        yield url
        return
    if os.environ.get("COMPETITION_REQUIRE_POSTGRES"):
        pytest.fail("COMPETITION_REQUIRE_POSTGRES is set but COMPETITION_TEST_POSTGRES is not")
    script = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"
    data = Path(f"/tmp/competition-test-pg-{os.getpid()}")
    # cwd "/": the server runs as the postgres user, who may not enter the test's working directory
    started = subprocess.run([str(script), "start", str(data)], capture_output=True, text=True, cwd="/")
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL server could be started locally: {started.stderr.strip()[:200]}")
    yield started.stdout.strip()
    subprocess.run([str(script), "stop", str(data)], capture_output=True, cwd="/")
    subprocess.run(["rm", "-rf", str(data)])


@pytest.fixture(autouse=True)
def offline_weights(tmp_path, monkeypatch):
    """No test downloads weights: `auto` falls back to random init at once; library caches are per test."""
    monkeypatch.setenv("COMPETITION_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
