"""Model zoo: FCN parameter counts, exact output sizes, paper init, weight files, SMP wrappers, registry."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models import vgg16, vgg16_bn

import models
from competition.core.config import DEFAULTS
from competition.core.errors import UserError
from models import MODELS, count_parameters, create_model, get_spec, list_models
from models.fcn import bilinear_kernel

ODD_SIZES = [(45, 70), (33, 33), (64, 96), (1, 1)]
SMP_MODELS = [spec.name for spec in list_models() if spec.family == "smp" and spec.name != "dpt"]  # dpt: a ViT

# 12 classes. Shared by all three: VGG16 convs 14,714,688 + fc6 (512*4096 + 4096) 2,101,248
# + fc7 (4096*4096 + 4096) 16,781,312 + score_fr (4096*12 + 12) 49,164 = 33,646,412.
# A factor-f upsampler is ConvTranspose2d(12, 12, 2f) with bias: 144 * 4f^2 + 12.
# fcn32s: + 32x (144*64*64 + 12 = 589,836)                                   = 34,236,248
# fcn16s: + score_pool4 (6,156) + 2x (2,316) + 16x (147,468)                 = 33,802,352 (the seed's count)
# fcn8s:  + score_pool4 + 2x + score_pool3 (3,084) + 2x (2,316) + 8x (36,876) = 33,697,160
FCN_PARAMS = {"fcn32s": 34_236_248, "fcn16s": 33_802_352, "fcn8s": 33_697_160}
# norm=batch adds a BatchNorm (weight + bias) after each of the 13 convs: 2 * (2*64 + 2*128 + 3*256 + 6*512).
BN_PARAMS = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(FCN_PARAMS))
def test_fcn_parameter_count(name: str) -> None:
    model, _ = create_model(name, 12)
    assert sum(p.numel() for p in model.parameters()) == FCN_PARAMS[name]
    assert count_parameters(name, 12) == FCN_PARAMS[name]


@pytest.mark.parametrize("name", sorted(FCN_PARAMS))
def test_fcn_output_is_input_sized_and_zero_at_init(name: str) -> None:
    model, what = create_model(name, 12)
    assert what == "random: random init"
    model.eval()
    with torch.no_grad():
        for size in ODD_SIZES:
            out = model(torch.randn(1, 3, *size))
            assert out.shape == (1, 12, *size)
            assert torch.count_nonzero(out) == 0  # zero score layers and zero biases: zero logits


@pytest.mark.parametrize("name", sorted(FCN_PARAMS))
def test_fcn_batch_norm_variant(name: str) -> None:
    model, what = create_model(name, 12, {"norm": "batch"})
    assert what == "random: random init"
    assert (
        sum(p.numel() for p in model.parameters())
        == FCN_PARAMS[name] + BN_PARAMS
        == count_parameters(name, 12, {"norm": "batch"})
    )
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.features) == 13
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 45, 70)).shape == (2, 12, 45, 70)


SEED_FC6 = "fc6 random (the seed's 1x1 fc6; --set fc6=7x7 loads VGG16's)"


def test_fcn_paper_init() -> None:
    model, _ = create_model("fcn8s", 5, {"dropout": 0.2})
    assert model.drop6.p == model.drop7.p == 0.2
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(bilinear_kernel(4), ramp[:, None] * ramp[None, :])
    for layer, k in ((model.upscore2, 4), (model.upscore_pool4, 4), (model.upscore, 16)):
        expected = torch.zeros(5, 5, k, k)
        for c in range(5):
            expected[c, c] = bilinear_kernel(k)
        assert torch.equal(layer.weight, expected)
        assert torch.count_nonzero(layer.bias) == 0


def test_bilinear_upsampler_keeps_constants() -> None:
    model, _ = create_model("fcn16s", 3)
    values = torch.tensor([1.0, -2.0, 5.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model.upscore2(values.expand(1, 3, 6, 7))
    assert out.shape == (1, 3, 12, 14)
    assert torch.allclose(out[..., 1:-1, 1:-1], values.expand(1, 3, 10, 12))


def test_vgg16_weights_load(tmp_path) -> None:
    vgg = vgg16()
    path = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    model, what = create_model("fcn16s", 12, {"weights": str(path)})
    assert what == f"file: VGG16 conv weights (26 tensors) + fc7 from {path}; " + SEED_FC6
    assert torch.equal(model.features[0].weight, vgg.features[0].weight)
    assert torch.equal(model.features[28].bias, vgg.features[28].bias)
    assert torch.equal(model.fc7.weight.flatten(1), vgg.classifier[3].weight)


def test_vgg16_bn_weights_load(tmp_path) -> None:
    vgg = vgg16_bn()
    for bn in [m for m in vgg.features if isinstance(m, torch.nn.BatchNorm2d)]:
        torch.nn.init.uniform_(bn.running_var, 0.5, 2.0)  # non-default statistics, to see they are loaded
    path = tmp_path / "vgg16_bn.pth"
    torch.save(vgg.state_dict(), path)
    model, what = create_model("fcn8s", 12, {"weights": str(path), "norm": "batch"})
    assert what == f"file: VGG16-BN conv weights (91 tensors) + fc7 from {path}; " + SEED_FC6
    assert torch.equal(model.features[1].running_var, vgg.features[1].running_var)
    assert torch.equal(model.features[40].weight, vgg.features[40].weight)
    with pytest.raises(UserError, match=r"vgg16_bn.pth: not a torchvision vgg16\(\) state dict"):
        create_model("fcn8s", 12, {"weights": str(path)})  # VGG16-BN weights for the plain network


@pytest.mark.parametrize("state", [{"features.0.weight": torch.zeros(3)}, {"conv1.weight": torch.zeros(3)}])
def test_vgg16_wrong_keys_is_user_error(tmp_path, state: dict) -> None:
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="bad.pth"):
        create_model("fcn8s", 12, {"weights": str(path)})
    with pytest.raises(UserError, match="missing.pth"):
        create_model("fcn8s", 12, {"weights": str(tmp_path / "missing.pth")})


@pytest.mark.parametrize("name", SMP_MODELS)
def test_smp_builds_and_keeps_input_size(name: str) -> None:
    model, what = create_model(name, 12, {"encoder": "resnet18"})
    assert what == f"random: {name}/resnet18: random init"
    model.eval()
    sizes = [(64, 64), (45, 70)] if name in ("unet", "pan") else [(64, 64)]
    with torch.no_grad():
        for size in sizes:
            assert model(torch.randn(1, 3, *size)).shape == (1, 12, *size)


def test_smp_encoder_weights(tmp_path) -> None:
    source, _ = create_model("unet", 4, {"encoder": "resnet18"})
    path = tmp_path / "enc.pth"
    torch.save(source.model.encoder.state_dict(), path)
    model, what = create_model("fpn", 4, {"encoder": "resnet18", "encoder_weights": str(path)})
    assert what.startswith("file: fpn/resnet18: encoder weights") and str(path) in what
    assert torch.equal(model.model.encoder.conv1.weight, source.model.encoder.conv1.weight)
    with pytest.raises(UserError, match="enc.pth"):
        create_model("unet", 4, {"encoder": "resnet34", "encoder_weights": str(path)})
    with pytest.raises(UserError, match="did you mean 'resnet34'"):
        create_model("unet", 4, {"encoder": "resnet43"})


def test_unknown_model_suggests_close_match() -> None:
    with pytest.raises(UserError, match=r"unknown model 'fcn61s'; did you mean 'fcn16s'\?; valid: fcn16s, "):
        get_spec("fcn61s")


def test_registry_specs_and_search_spaces() -> None:
    assert [spec.name for spec in list_models()][:3] == ["fcn16s", "fcn32s", "fcn8s"]
    for name, spec in MODELS.items():
        assert spec.name == name and spec.family in {"fcn", "smp"} and spec.description
        assert set(spec.defaults) <= set(DEFAULTS)
        assert spec.search_space and set(spec.search_space) <= set(DEFAULTS)
        for key, dist in spec.search_space.items():
            if dist["type"] in ("float", "int"):
                assert dist["low"] < dist["high"], key
            else:
                assert dist["type"] == "categorical" and dist["choices"], key
    for encoder in get_spec("unet").search_space["encoder"]["choices"]:
        assert count_parameters("unet", 12, {"encoder": encoder}) > 0
    assert count_parameters("unet", 12) == 24_437_964  # default encoder resnet34


@pytest.mark.parametrize("encoder", [name for name, _ in models.RECOMMENDED_ENCODERS])
def test_every_recommended_encoder_builds_a_unet_of_any_input_size(encoder) -> None:
    net, _ = models.create_model("unet", 5, {"encoder": encoder, "encoder_weights": None})
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 70, 50)).shape == (1, 5, 70, 50)


def test_models_lists_recommended_encoders_and_encoders_by_pattern(capsys) -> None:
    from competition.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "recommended encoders" in out and "tu-convnext_tiny" in out and "31,930,348" in out  # unet, 12 classes
    assert main(["models", "--encoders", "resnet3*", "--json"]) == 0
    names = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "resnet34" in names and "tu-resnet34" in names and all("resnet3" in n for n in names)
    assert main(["models", "--encoders", "tu-convnext_t*", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == ["tu-convnext_tiny", "tu-convnext_tiny_hnf"]
    assert main(["models", "--json"]) == 0  # the contract: a list of model rows, unchanged
    assert {"name", "family", "params"} <= set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0])


def test_dpt_trains_and_predicts_through_the_harness(tmp_path, monkeypatch) -> None:
    """DPT (its defaults: lr, encoder_lr) on a small ViT trains k folds and predicts a valid submission."""
    from competition.cli import main
    from competition.data import write_sample_dataset

    monkeypatch.chdir(tmp_path)
    data = write_sample_dataset(tmp_path / "data", n_train=8, n_test=2, size=48)
    runs = tmp_path / "runs"
    args = ["--data", str(data), "--runs-dir", str(runs), "--folds", "2", "--epochs", "1", "--image-size", "48"]
    args += ["--batch-size", "4", "--set", "encoder=tu-vit_tiny_patch16_224", "--set", "encoder_weights=null"]
    assert main(["train", "dpt", *args, "--set", "tracker=none", "--json"]) == 0
    (run,) = [p for p in runs.iterdir() if p.name.startswith("dpt-")]
    config = json.loads((run / "config.json").read_text())
    assert config["encoder_lr"] == 0.1 and config["lr"] == 1e-4  # DPT's own defaults
    assert main(["predict", run.name, "--runs-dir", str(runs), "--name", "dpt"]) == 0
    assert main(["check", "submissions/dpt.csv", "--data", str(data)]) == 0
