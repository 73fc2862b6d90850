"""TensorBoard event files in run folders: per fold every epoch's scalars (the same numbers as metrics.csv) and
the prediction overlays; per run the fold scores and the CV mean; and `tensorboard --inspect --logdir runs`
reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from competition.core.fileio import read_json


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_every_fold_has_its_epochs_and_overlays_and_the_run_its_cv(small_runs):
    run = small_runs / "runs" / "run-a"
    history = pd.read_csv(run / "metrics.csv")
    for fold in (0, 1):
        acc = events(run / f"fold_{fold}")
        rows = history[history["fold"] == fold]
        for column, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("miou_image", "miou/image")):
            logged = [(e.step, e.value) for e in acc.Scalars(tag)]
            expected = list(zip(rows["epoch"], rows[column], strict=True))
            assert [s for s, _ in logged] == [s for s, _ in expected]
            assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
        images = acc.Tags()["images"]
        assert sorted(images) == ["predictions/overlay_0", "predictions/overlay_1"]  # overlays=2 in the fixture
        picture = acc.Images("predictions/overlay_0")[0]
        assert picture.width > 100 and picture.height > 50 and picture.encoded_image_string[:4] == b"\x89PNG"
    acc = events(run)
    results = read_json(run / "results.json")
    assert [e.value for e in acc.Scalars("cv/fold_miou")] == pytest.approx([f["miou"] for f in results["folds"]])
    assert acc.Scalars("cv/mean_miou")[0].value == pytest.approx(results["miou"])


def test_tensorboard_reads_the_runs_folder(small_runs):
    tensorboard = Path(sys.executable).parent / "tensorboard"
    done = subprocess.run(
        [str(tensorboard), "--inspect", "--logdir", str(small_runs / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout + done.stderr
    for name in ("run-a/fold_0", "run-b/fold_1", "loss/train", "predictions/overlay_0", "cv/mean_miou"):
        assert name in text, text[-3000:]
