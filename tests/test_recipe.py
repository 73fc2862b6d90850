"""The winners' recipe in the training loop: mixed precision modes, gradient accumulation, EMA and SWA, D4 and
multi-scale TTA (also on validation), non-square training sizes."""

from __future__ import annotations

import json
import re

import pytest
import torch

from competition.cli import main
from competition.core.config import image_hw, resolve
from competition.core.errors import UsageError, UserError
from competition.data import write_sample_dataset
from competition.predict import amp_dtype, describe_views, parse_tta, predict_probs
from competition.predict.probs import read_probs

TINY = ["--folds", "2", "--epochs", "1", "--batch-size", "2", "--set", "encoder=resnet18",
        "--set", "num_workers=0", "--set", "overlays=0", "--set", "encoder_weights=null"]  # fmt: skip


@pytest.fixture
def sample_root(tmp_path):
    return write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)


def test_amp_modes():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, "auto") is None and amp_dtype(cpu, "off") is None
    assert amp_dtype(cpu, "bf16") == torch.bfloat16
    assert amp_dtype(cpu, True) is None and amp_dtype(cpu, False) is None  # run folders from before the modes
    with pytest.raises(UserError, match="amp=fp16: needs a CUDA device"):
        amp_dtype(cpu, "fp16")
    assert resolve(sets=["amp=true"])["amp"] == "auto" and resolve(sets=["amp=off"])["amp"] == "off"
    with pytest.raises(UsageError, match="auto, bf16, fp16, off"):
        resolve(sets=["amp=fp8"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_amp_auto_on_cuda_picks_bf16_or_fp16():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert amp_dtype(torch.device("cuda"), "auto") == expected


def test_weight_average_and_size_settings_are_checked():
    assert image_hw(resolve(sets=["image_size=32x48"])) == (32, 48)
    assert resolve(sets=["image_size=48x48"])["image_size"] == 48
    with pytest.raises(UsageError, match="image_size='32y48'"):
        resolve(sets=["image_size=32y48"])
    with pytest.raises(UsageError, match="choose one weight average"):
        resolve(sets=["ema=0.99", "swa=2"])
    with pytest.raises(UsageError, match="swa=5: averages more epochs than epochs=2"):
        resolve(sets=["swa=5"], flags={"epochs": 2})
    with pytest.raises(UsageError, match="val_tta='rot'"):
        resolve(sets=["val_tta=rot"])


class Pointwise(torch.nn.Module):
    """Logits from each pixel's own values: any view, mapped back exactly, predicts what the plain view does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0] * 2 + x[:, 1], x[:, 2] - x[:, 0]], 1)


class Positional(Pointwise):
    """Adds a ramp over the pixel grid: each view sees a different picture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ramp = torch.arange(h * w, dtype=x.dtype).reshape(h, w) / (h * w)
        return super().forward(x) + torch.stack([ramp, torch.zeros_like(ramp)])[None]


def test_d4_views_map_back_exactly():
    views = parse_tta("d4")
    assert len(views) == 8 and len(set(views)) == 8
    assert describe_views(views)[:3] == ["1", "1+hflip", "1+rot90"]
    assert len(parse_tta("d4,0.5,1")) == 16
    x = torch.randn(2, 3, 16, 16)

    def probs(model, views):
        return predict_probs(model, x, views, amp="off", channels_last=False, size=16)

    plain = probs(Pointwise(), None)
    for view in views:  # every view is mapped back to the image's own pixels
        assert torch.allclose(probs(Pointwise(), [view]), plain, atol=1e-6), view
    distinct = {tuple(probs(Positional(), [view]).flatten()[:64].round(decimals=4).tolist()) for view in views}
    assert len(distinct) == 8  # and the views really are eight different pictures
    with pytest.raises(UserError, match="needs square inputs"):
        predict_probs(Pointwise(), torch.randn(1, 3, 16, 24), views, amp="off", channels_last=False)
    with pytest.raises(UserError, match="d4 already holds every flip"):
        parse_tta("d4,hflip")


def run(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ema_accumulation_non_square_and_validation_tta(sample_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    result = run(capsys, "train", "unet", "--data", str(sample_root), "--runs-dir", str(runs), *TINY,
                 "--image-size", "32x48", "--set", "ema=0.9", "--set", "accum=2", "--set", "val_tta=hflip")  # fmt: skip
    run_dir = runs / result["run"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["image_size"] == "32x48" and config["ema"] == 0.9 and config["accum"] == 2
    manifest = read_probs(run_dir / "fold_0" / "oof.npy").manifest
    assert manifest["tta"] == ["1", "1+hflip"]  # out-of-fold probabilities saw the validation views
    prediction = run(capsys, "predict", result["run"], "--runs-dir", str(runs), "--tta", "hflip,0.75,1")
    assert prediction["tta"] == ["0.75", "0.75+hflip", "1", "1+hflip"]
    assert main(["predict", result["run"], "--runs-dir", str(runs), "--tta", "d4"]) == 1  # 32x48 is not square
    assert "needs square inputs" in capsys.readouterr().err


def test_swa_keeps_the_average_with_recomputed_batchnorm(sample_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    main(["train", "unet", "--data", str(sample_root), "--runs-dir", str(runs), *TINY, "--image-size", "32",
          "--set", "swa=1"])  # fmt: skip
    out = capsys.readouterr().out
    assert len(re.findall(r"fold \d: SWA of the last 1 epochs: mIoU [0-9.]+ .*the SWA model is kept", out)) == 2


def test_balanced_sampler_weights_follow_the_rarest_class():
    """Images holding a class that few images hold are drawn more often; weights sum to 1."""
    import numpy as np

    from competition.data import balanced_weights, build_class_table

    classes = build_class_table([{"id": 0, "name": "common"}, {"id": 1, "name": "rare"}])
    masks = {1: np.array([[0, 1]]), 2: np.array([[0, 1]]), 3: np.array([[0, 1]]), 4: np.array([[1, 2]]),
             5: np.array([[0, 0]])}  # fmt: skip
    weights = balanced_weights((masks[i] for i in [1, 2, 3, 4, 5]), classes)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[3] == pytest.approx(4 * weights[0])  # rare: 1 image of 5; common: 4 images
    assert weights[4] == pytest.approx(weights[0])  # background only: as the most common class


def test_copy_paste_follows_class_table_and_overlap_policy(tmp_path):
    import numpy as np

    from competition.data import DataRoot, write_sample_dataset
    from competition.data.rare import CopyPaste

    root = write_sample_dataset(tmp_path / "s", n_train=12, n_test=2, size=48)
    data = DataRoot(root)
    coco = data.coco("train_all")
    ids = coco.image_ids
    for policy, overlap in (({}, "max"), ({"UNKNOWN": "ignore"}, "small-on-top")):
        classes = data.classes(policy)
        masks = data.masks("train_all", classes, overlap)
        paste = CopyPaste(root, coco, ids, classes, overlap, p=1.0)
        counts = np.array([len(group) for group in paste.objects])
        assert paste.class_p[counts.argmin()] == paste.class_p.max()  # the rarest class is drawn most
        rng = np.random.default_rng(0)
        changed = 0
        for image_id in ids:
            info = coco.by_id[image_id]
            image = np.zeros((info.height, info.width, 3), np.uint8)
            before = masks[image_id].copy()
            new_image, new_mask = paste(image, before, rng)
            assert new_mask.shape == before.shape and new_image.shape == image.shape
            on = new_image.any(-1)  # the pasted object's pixels (the target image was black)
            changed += int(on.any())
            allowed = set(classes.value_of.values())
            assert set(np.unique(new_mask[on])) <= allowed | set(np.unique(before[on]))
            if overlap == "max":  # never lowers a label except over ignored pixels
                keep = before != classes.ignore_index
                assert (new_mask[keep] >= before[keep]).all()
            assert (new_mask[~on] == before[~on]).all()  # nothing outside the object changes
        assert changed >= len(ids) * 0.8


def test_sampler_and_copy_paste_train_end_to_end(sample_root, tmp_path, capsys):
    result = run(capsys, "train", "unet", "--data", str(sample_root), "--runs-dir", str(tmp_path / "runs"), *TINY,
                 "--image-size", "32", "--set", "sampler=balanced", "--set", "copy_paste=0.5")  # fmt: skip
    assert len(result["folds"]) == 2
