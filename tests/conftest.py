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


LR_SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}  # one setting: tiny searches


def search_inputs(folder: Path, space: dict | None = None, **sample) -> tuple[Path, Path]:
    """A sample dataset (write_sample_dataset's `sample` options) and a search space file in `folder`."""
    from competition.data import write_sample_dataset

    data = write_sample_dataset(folder / "sample", **sample)
    path = folder / "space.json"
    path.write_text(json.dumps(LR_SPACE if space is None else space))
    return data, path


def edited(tmp_path: Path, mutate) -> Path:
    """A valid root whose train_all.json is then edited (image files unchanged)."""
    root = build_root(tmp_path / "data")
    coco = json.loads((root / "train_all.json").read_text())
    mutate(coco)
    (root / "train_all.json").write_text(json.dumps(coco))
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


@pytest.fixture(scope="session", autouse=True)
def offline_session():
    """No download from session- and module-scoped fixtures either (they train before any test's own fixture)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPETITION_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(autouse=True)
def offline_weights(tmp_path, monkeypatch):
    """No test downloads weights: `auto` falls back to random init at once; library caches are per test."""
    monkeypatch.setenv("COMPETITION_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def child_processes(name: str) -> list[str]:
    """Command lines of this process's children whose program is `name` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_text().replace("\0", " ")
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and name in command:
            found.append(command)
    return found


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B without an account or network: WANDB_MODE=offline, its folders under tmp_path (WANDB_DIR: the run
    files), none of the user's W&B variables; at the end W&B is torn down, and no wandb-core process is left."""
    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for name, folder in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / folder))
    yield tmp_path / "wandb-dir"
    import sys

    if sys.modules.get("wandb") is not None:
        sys.modules["wandb"].teardown()  # ends its service process (and resets its settings for the next test)
    assert not child_processes("wandb-core")


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory) -> Path:
    """A working folder as a competitor leaves it, made once per session for the lb and report tests:
    `data/` (sample data, 12 train + 4 test images of 48 px), `runs/run-a` and `runs/run-b` (unet/resnet18,
    2 folds, 1 epoch, 32 px, predicted), `runs/ens` (their soft-vote ensemble), `submissions/` (their three
    CSVs) and `runs/optuna.db` holding study `toy` (8 trials of a quadratic objective, no training)."""
    import optuna

    import models
    from competition.core.config import resolve
    from competition.data import write_sample_dataset
    from competition.ensemble import ensemble_runs
    from competition.predict import predict_run
    from competition.train import train_run

    base = tmp_path_factory.mktemp("small-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPETITION_CACHE", str(base / "cache"))
        mp.setenv("COMPETITION_OFFLINE", "1")
        mp.chdir(base)
        root = write_sample_dataset(base / "data", n_train=12, n_test=4, size=48)
        for name, seed in (("run-a", 1), ("run-b", 2)):
            flags = {"folds": 2, "epochs": 1, "image_size": 32, "batch_size": 4, "num_workers": 0, "seed": seed}
            flags |= {"device": "cpu", "encoder": "resnet18", "encoder_weights": None, "overlays": 2}
            cfg = resolve(models.get_spec("unet").defaults, flags=flags)
            cfg.update(model="unet", data=str(root))
            train_run(cfg, base / "runs" / name, lambda _: None)
            predict_run(base / "runs" / name, out_dir=base / "submissions", log=lambda _: None)
        ensemble_runs(
            ["run-a", "run-b"], base / "runs", "ens", weights="equal", out_dir=base / "submissions", log=lambda _: None
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name="toy", storage=f"sqlite:///{base / 'runs' / 'optuna.db'}", direction="maximize"
        )
        study.optimize(
            lambda t: (
                1 - (t.suggest_float("lr", 1e-4, 1e-1, log=True) - 0.01) ** 2 - 0.1 * t.suggest_int("depth", 1, 4)
            ),
            n_trials=8,
        )
    return base
