"""Data-parallel training (`train --gpus N`, competition/train/distributed.py) with gloo on the CPU.

FCN-32s without dropout, BatchNorm or augmentation is a deterministic function of its batches, so two
processes that share each global batch must follow one process's loss curve (the same updates, summed in
another order). A run whose rank 0 is killed resumes to the same end; a pruned or failing run stops every rank.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from competition.cli import main
from competition.core.runs import read_config
from competition.data import write_sample_dataset
from competition.train.distributed import ShardedBatches
from tests.test_faults_kill import KILLER

FLAGS = ["--folds", "2", "--epochs", "3", "--image-size", "32", "--batch-size", "4", "--seed", "3",
         "--device", "cpu", "--set", "dropout=0", "--set", "aug_hflip=0", "--set", "aug_scale_min=1",
         "--set", "aug_scale_max=1", "--set", "aug_color=0", "--set", "weights=null", "--set", "overlays=0",
         "--set", "val_every=1", "--set", "tracker=none", "--set", "num_workers=0"]  # fmt: skip
LOSS_RTOL = 1e-4  # one process vs two: the same sums in another order (float32)
MIOU_ATOL = 1e-3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """16 training images (8 per training fold: 2 optimiser steps per epoch at batch 4) and a reference run
    trained by one process."""
    base = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPETITION_CACHE", str(base / "cache"))
        mp.setenv("COMPETITION_OFFLINE", "1")
        mp.chdir(base)
        data = write_sample_dataset(base / "data", n_train=16, n_test=2, size=32)
        runs = base / "runs"
        assert main(["train", "fcn32s", "--data", str(data), "--runs-dir", str(runs), *FLAGS]) == 0
        next(runs.glob("fcn32s-*")).rename(runs / "one")
    return base, data


def histories(run: Path) -> list[pd.DataFrame]:
    return [pd.read_csv(run / f"fold_{f}" / "metrics.csv") for f in (0, 1)]


def same_curves(a: Path, b: Path) -> None:
    """Every fold's loss curves within LOSS_RTOL, its scores within MIOU_ATOL; the run's files complete."""
    for ha, hb in zip(histories(a), histories(b), strict=True):
        assert len(ha) == len(hb) == 3
        for column in ("train_loss", "val_loss"):
            pd.testing.assert_series_equal(ha[column], hb[column], rtol=LOSS_RTOL, check_exact=False)
        for column in ("miou_image", "miou_dataset"):
            assert (ha[column] - hb[column]).abs().max() <= MIOU_ATOL
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    assert abs(ra["miou"] - rb["miou"]) <= MIOU_ATOL
    for fold in (0, 1):
        assert (b / f"fold_{fold}" / "oof.npy").exists() and not (b / f"fold_{fold}" / "last.pt").exists()


def test_sharded_batches_are_the_global_batch():
    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    shards = [list(ShardedBatches(batches, rank, 2)) for rank in (0, 1)]
    assert shards[0] == [[0, 1], [4, 5], [8, 9]] and shards[1] == [[2, 3], [6, 7], [10]]
    assert len(ShardedBatches(batches, 1, 2)) == 3


def test_two_processes_follow_the_one_process_curve(world, capsys):
    base, data = world
    runs = base / "runs"
    assert main(["train", "fcn32s", "--data", str(data), "--runs-dir", str(runs), *FLAGS, "--gpus", "2"]) == 0
    out = capsys.readouterr()
    assert "data parallel: 2 processes per fold on cpu, global batch 4 (2 per process)" in out.out + out.err
    two = max(runs.glob("fcn32s-*"), key=lambda p: p.stat().st_mtime)
    one = histories(runs / "one")[0]["train_loss"]
    assert one.iloc[-1] < one.iloc[0] - 0.05  # the curve moves: the comparison below is not of flat lines
    same_curves(runs / "one", two)
    assert read_config(two)["gpus"] == 2  # saved with the run (a machinery setting: a resume may change it)


def marked_processes(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (the killed rank 0's helpers inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_killed_rank_zero_leaves_no_helper_and_the_run_resumes(world, tmp_path):
    """kill -9 of rank 0 before the 3rd checkpoint write (fold 0, epoch 2): its helper exits by itself, and
    `train --resume RUN --gpus 2` ends the run as the never-killed one-process run ended."""
    base, data = world
    runs = tmp_path / "runs"
    marker = f"DDP_KILL_TEST={tmp_path}"
    env = {**os.environ, "KILL_AT": "competition.train.fold:save_checkpoint", "KILL_NTH": "3", "KILL_MODE": "before",
           "DDP_KILL_TEST": str(tmp_path), "COMPETITION_CACHE": str(base / "cache"),
           "TMPDIR": str(tmp_path / "tmp")}  # fmt: skip
    (tmp_path / "tmp").mkdir()
    args = ["train", "fcn32s", "--data", str(data), "--runs-dir", str(runs), *FLAGS, "--gpus", "2"]
    done = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=base, env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    deadline = time.time() + 20
    while marked_processes(marker) and time.time() < deadline:
        time.sleep(0.5)
    assert not marked_processes(marker), "a helper rank outlived its killed rank 0"
    assert not list((tmp_path / "tmp").glob("competition-ddp-*")), "the process group's folder was left behind"
    run = next(runs.glob("fcn32s-*"))
    assert (run / "fold_0" / "last.pt").exists() and not (run / "fold_0" / "result.json").exists()
    env = {k: v for k, v in env.items() if not k.startswith("KILL_")}
    resumed = subprocess.run([sys.executable, "-m", "competition", "train", "fcn32s", "--runs-dir", str(runs),
                              "--resume", run.name, "--gpus", "2"], cwd=Path(__file__).parent.parent, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fold 0: resuming after epoch 1" in resumed.stdout + resumed.stderr
    same_curves(base / "runs" / "one", run)


class Pruned(Exception):
    pass


def test_a_stop_on_rank_zero_stops_every_rank(world, tmp_path):
    """A hook that raises on rank 0 (a pruned trial, Ctrl-C) reaches train_run's caller at once; no rank is
    left waiting for it."""
    import models
    from competition.core.config import resolve
    from competition.train import train_run

    base, data = world
    cfg = resolve(models.get_spec("fcn32s").defaults, flags={"folds": 2, "epochs": 3, "image_size": 32,
                  "batch_size": 4, "device": "cpu", "weights": None, "overlays": 0, "tracker": "none",
                  "num_workers": 0, "gpus": 2})  # fmt: skip
    cfg.update(model="fcn32s", data=str(data))

    def prune(fold, epoch, value, row):
        if epoch == 1:
            raise Pruned

    start = time.time()
    with pytest.raises(Pruned):
        train_run(cfg, tmp_path / "run", log=lambda m: None, on_epoch=prune)
    assert time.time() - start < 60
    from tests.conftest import child_processes

    assert not [c for c in child_processes("multiprocessing") if "resource_tracker" not in c]


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--gpus", "2"], 1, "--gpus 2: this machine has no CUDA device; add --device cpu"),
        (["--gpus", "2", "--device", "cpu", "--batch-size", "3"], 2, "--batch-size 3 is the global batch"),
        (["--gpus", "2", "--device", "cpu", "--set", "sync_bn=true"], 2, "synchronises BatchNorm on GPUs only"),
        (["--gpus", "3", "--device", "cuda", "--batch-size", "6"], 1, "--device cuda: no CUDA device is available"),
    ],
)
def test_bad_process_counts_are_refused_before_anything_starts(world, tmp_path, capsys, extra, code, message):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU: these rows are for a CPU-only one")
    base, data = world
    runs = tmp_path / "runs"
    i = FLAGS.index("--device")
    flags = FLAGS[:i] + FLAGS[i + 2 :]  # --device auto unless the row gives one
    assert main(["train", "fcn32s", "--data", str(data), "--runs-dir", str(runs), *flags, *extra]) == code
    out = capsys.readouterr()
    assert message in out.out + out.err
    assert not runs.exists() or not any(runs.glob("fcn32s-*"))


def test_search_gpus_per_trial_beyond_the_devices_is_refused(world, tmp_path, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    base, data = world
    args = ["search", "fcn32s", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--trials", "1",
            "--gpus-per-trial", "2", "--workers", "2", "--no-predict"]  # fmt: skip
    assert main(args) == 1
    out = capsys.readouterr()
    assert "--gpus 2: this machine has no CUDA device" in out.out + out.err
    assert not (tmp_path / "runs" / "optuna.db").exists()


def test_a_diverging_run_fails_on_every_rank_with_its_reason(world, tmp_path, capsys):
    """The loss is the global batch's on every rank, so all ranks see it become NaN at the same step."""
    base, data = world
    runs = tmp_path / "runs"
    args = ["train", "fcn32s", "--data", str(data), "--runs-dir", str(runs), *FLAGS, "--gpus", "2",
            "--set", "optimizer=sgd", "--set", "lr=10", "--set", "warmup_epochs=0"]  # fmt: skip
    start = time.time()
    assert main(args) == 1
    out = capsys.readouterr()
    assert "loss is nan" in out.out + out.err or "loss is inf" in out.out + out.err
    assert time.time() - start < 90
    run = next(runs.glob("fcn32s-*"))
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
