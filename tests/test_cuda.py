"""CUDA-only behaviour (`pytest -m cuda`, run by benchmarks/gpu_check.sh on a GPU machine; skipped, saying so,
without a CUDA device): mixed precision bf16 and fp16 (with its gradient scaler) through a real run, channels_last,
the OOM halving path, predict and ensemble on the GPU, and a two-worker search sharing one GPU."""

from __future__ import annotations

import json

import pytest
import torch

from competition.cli import main
from competition.data import write_sample_dataset

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]
TINY = ["--folds", "2", "--epochs", "2", "--image-size", "64", "--batch-size", "4", "--device", "cuda",
        "--set", "encoder=resnet18", "--set", "encoder_weights=null", "--set", "tracker=none"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sample_dataset(tmp_path_factory.mktemp("cuda") / "data", n_train=12, n_test=4, size=72)


def trained(capsys, runs, data, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["train", "unet", "--data", str(data), "--runs-dir", str(runs), *TINY, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_a_run_trains_with_each_precision_and_finite_scores(tmp_path, capsys, data, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = trained(capsys, tmp_path / "runs", data, "--set", f"amp={amp}", "--set", "channels_last=true")
    assert len(result["folds"]) == 2 and all(0.0 <= f["miou"] <= 1.0 for f in result["folds"])
    config = json.loads((tmp_path / "runs" / result["run"] / "config.json").read_text())
    assert config["amp"] == amp and config["device"] == "cuda"


def test_oom_halve_retries_with_half_the_batch(tmp_path, capsys, data, monkeypatch):
    """A CUDA out-of-memory error in the first training step (raised by a patched step) halves the batch once."""
    from competition.train import fold as fold_module

    real, calls = fold_module.optimizer_step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(fold_module, "optimizer_step", step)
    result = trained(capsys, tmp_path / "runs", data, "--set", "oom=halve")
    info = json.loads((tmp_path / "runs" / result["run"] / "run.json").read_text())
    assert info["oom_retry"] == {"batch_size": [4, 2]} and info["status"] == "complete" and calls["n"] > 1


def test_predict_and_ensemble_on_the_gpu(tmp_path, capsys, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    a, b = trained(capsys, runs, data)["run"], trained(capsys, runs, data, "--seed", "7")["run"]
    assert main(["predict", a, "--runs-dir", str(runs), "--device", "cuda", "--tta", "hflip"]) == 0
    assert main(["ensemble", a, b, "--runs-dir", str(runs), "--device", "cuda", "--name", "ens"]) == 0
    capsys.readouterr()
    assert main(["check", "submissions/ens.csv", "--data", str(data)]) == 0


def test_a_two_worker_search_shares_one_gpu(tmp_path, capsys, data):
    runs = tmp_path / "runs"
    args = ["search", "unet", "--data", str(data), "--runs-dir", str(runs), *TINY, "--trials", "2", "--workers", "2"]
    capsys.readouterr()
    assert main([*args, "--no-predict", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["complete"] + result["pruned"] == 2 and result["failed"] == 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="data parallel on GPUs needs 2 CUDA devices")
def test_two_gpus_train_a_run_with_nccl_and_sync_bn(tmp_path, capsys, data):
    """`train --gpus 2` on two GPUs (NCCL), BatchNorm synchronised: a complete run, its scores finite."""
    result = trained(capsys, tmp_path / "runs", data, "--gpus", "2", "--set", "sync_bn=true")
    assert len(result["folds"]) == 2 and all(0.0 <= f["miou"] <= 1.0 for f in result["folds"])
    config = json.loads((tmp_path / "runs" / result["run"] / "config.json").read_text())
    assert config["gpus"] == 2 and config["sync_bn"] is True


def test_more_gpus_than_the_machine_has_is_refused(tmp_path, capsys, data):
    n = torch.cuda.device_count() + 1
    code = main(["train", "unet", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), *TINY, "--gpus", str(n),
                 "--batch-size", str(2 * n)])  # fmt: skip
    assert code == 1
    assert f"--gpus {n}: needs {n} CUDA devices, this machine has {n - 1}" in "".join(capsys.readouterr())
