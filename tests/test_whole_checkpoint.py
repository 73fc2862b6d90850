"""`checkpoint=REPO_OR_FOLDER`: a whole pretrained SMP model (encoder and decoder) from a local folder or from
the hub cache (offline: generated checkpoints placed where huggingface_hub looks), its head refitted to this
dataset's classes; wrong architectures and missing copies are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch

from competition.cli import main
from competition.core.errors import UserError
from competition.data import write_sample_dataset
from models import create_model
from models.pretrained import hub_cache


def saved_unet(folder: Path, classes: int = 3) -> dict[str, torch.Tensor]:
    """An SMP U-Net (resnet18, random weights) saved as SMP saves pretrained models; its state dict."""
    torch.manual_seed(5)
    model = smp.Unet("resnet18", encoder_weights=None, classes=classes)
    model.save_pretrained(str(folder))
    return model.state_dict()


def test_a_local_checkpoint_loads_encoder_and_decoder_and_gets_a_new_head(tmp_path):
    state = saved_unet(tmp_path / "ckpt")
    warnings: list[str] = []
    model, what = create_model("unet", 5, {"checkpoint": str(tmp_path / "ckpt")}, warnings.append)
    assert what.startswith("checkpoint: unet: Unet from ") and "head replaced: 3 -> 5 classes" in what
    assert len(warnings) == 1 and "replaced by one for 5" in warnings[0]
    loaded = model.model.state_dict()
    body = [k for k in state if not k.startswith("segmentation_head")]
    assert body and all(torch.equal(loaded[k], state[k]) for k in body)
    assert loaded["segmentation_head.0.weight"].shape[0] == 5
    assert model.eval()(torch.randn(1, 3, 40, 56)).shape == (1, 5, 40, 56)
    same, what = create_model("unet", 3, {"checkpoint": str(tmp_path / "ckpt")})
    assert "replaced" not in what and torch.equal(
        same.model.segmentation_head[0].weight, state["segmentation_head.0.weight"]
    )


def test_a_hub_checkpoint_comes_from_the_cache_offline_or_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(UserError, match="models--someone--unet-trash") as error:
        create_model("unet", 4, {"checkpoint": "someone/unet-trash"})
    assert "offline" in str(error.value) and str(hub_cache()) in str(error.value)
    root = hub_cache() / "models--someone--unet-trash"
    commit = "0123456789abcdef0123456789abcdef01234567"
    state = saved_unet(root / "snapshots" / commit, classes=4)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    model, what = create_model("unet", 4, {"checkpoint": "someone/unet-trash"})
    assert "Unet from someone/unet-trash" in what
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in state.items())


def test_a_checkpoint_of_another_architecture_or_for_an_fcn_is_refused(tmp_path):
    saved_unet(tmp_path / "ckpt")
    with pytest.raises(UserError, match="the checkpoint is a Unet, not fpn; train it as `unet`"):
        create_model("fpn", 4, {"checkpoint": str(tmp_path / "ckpt")})
    with pytest.raises(UserError, match="whole pretrained models are SMP models"):
        create_model("fcn8s", 4, {"checkpoint": str(tmp_path / "ckpt")})
    with pytest.raises(UserError, match="must be a folder with config.json and model.safetensors"):
        create_model("unet", 4, {"checkpoint": str(tmp_path)})


def test_train_and_predict_from_a_whole_checkpoint(tmp_path, monkeypatch, capsys):
    saved_unet(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    data = write_sample_dataset(tmp_path / "data", n_train=8, n_test=2, size=40)
    runs = tmp_path / "runs"
    args = ["--data", str(data), "--runs-dir", str(runs), "--folds", "2", "--epochs", "1", "--image-size", "32"]
    args += ["--batch-size", "4", "--set", f"checkpoint={tmp_path / 'ckpt'}", "--set", "tracker=none"]
    assert main(["train", "unet", *args]) == 0
    (run,) = [p for p in runs.iterdir() if p.name.startswith("unet-")]
    assert json.loads((run / "results.json").read_text())["init"].startswith("checkpoint: unet: Unet from ")
    assert main(["predict", run.name, "--runs-dir", str(runs), "--name", "whole"]) == 0
    capsys.readouterr()
    assert main(["check", "submissions/whole.csv", "--data", str(data)]) == 0
