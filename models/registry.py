"""The one model registry: every model the harness can train is written out in MODELS below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from competition.core.errors import UserError
from competition.core.names import did_you_mean
from models.encoders import DPT_ENCODERS

if TYPE_CHECKING:
    from torch import nn

    # (num_classes, settings, warn) -> (model, "<source>: what was loaded"); warn prints one warning line
    Builder = Callable[[int, dict, Callable[[str], None]], tuple[nn.Module, str]]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it, its config defaults and its default Optuna search space."""

    name: str
    family: str  # "fcn" | "smp"
    build: Builder  # (num_classes, settings) -> (model, what-was-loaded description)
    defaults: dict  # model-specific config defaults, layered over the harness defaults
    search_space: dict  # default Optuna search space: config key -> {"type": float|int|categorical, ...}
    description: str
    quick_space: dict  # the search space of the quick profile (embedded sample data, minutes on a CPU)


# Search spaces for fine-tuning: one entry per harness config key.
COMMON_SPACE: dict = {
    "lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adam", "adamw", "sgd"]},
    "batch_size": {"type": "categorical", "choices": [4, 8, 16]},
    "image_size": {"type": "categorical", "choices": [256, 384, 512]},
    "loss": {"type": "categorical", "choices": ["ce", "ce+dice", "ce+lovasz", "focal+dice"]},
    "aug_scale_max": {"type": "float", "low": 1.0, "high": 1.5},
    "aug_color": {"type": "float", "low": 0.0, "high": 0.4},
    "aug_hflip": {"type": "float", "low": 0.0, "high": 0.5},
}
FCN_SPACE: dict = COMMON_SPACE | {
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "norm": {"type": "categorical", "choices": ["none", "batch"]},
}
SMP_SPACE: dict = COMMON_SPACE | {
    "encoder": {"type": "categorical", "choices": ["resnet18", "resnet34", "efficientnet-b0"]},
}

FCN_DEFAULTS: dict = {"dropout": 0.5, "lr": 1e-4}
SMP_DEFAULTS: dict = {"encoder": "resnet34", "lr": 3e-4}

# Quick profile (sample data, 2 CPU cores, a few minutes; the profile fixes the image size). There the FCNs train
# from random init for 6 epochs of 9 steps per fold. The seed's network (plain VGG16, AdamW 1e-4, trial 0) stays at
# the all-background prior in that budget; VGG16-BN (norm=batch) with SGD at about 1e-2, a poly decay, little
# dropout and colour jitter learns (helper probes on the sample data; the README gives the main job's figures).
# The quick space spans that region and tunes within it, so every sampled trial learns and the search's gain
# over trial 0 is visible in minutes. On real data the full FCN_SPACE is searched.
FCN_QUICK_SPACE: dict = {
    "norm": {"type": "categorical", "choices": ["batch"]},
    "optimizer": {"type": "categorical", "choices": ["sgd"]},
    "lr": {"type": "float", "low": 7e-3, "high": 1.4e-2, "log": True},
    "scheduler": {"type": "categorical", "choices": ["poly"]},
    "warmup_epochs": {"type": "float", "low": 0.0, "high": 1.0},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.05},
    "aug_color": {"type": "float", "low": 0.0, "high": 0.02},
}
SMP_QUICK_SPACE: dict = {k: v for k, v in SMP_SPACE.items() if k != "image_size"}
# DPT (a ViT encoder): ViTs fine-tune at lower learning rates than CNNs, the encoder lower still (DPT's paper:
# 1e-5 encoder / 1e-4 decoder); image sizes in patches (multiples of 32 suit patch 16 and 8)
DPT_SPACE: dict = COMMON_SPACE | {
    "encoder": {"type": "categorical", "choices": list(DPT_ENCODERS)},
    "lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "encoder_lr": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
}
DPT_DEFAULTS: dict = {"encoder": DPT_ENCODERS[0], "lr": 1e-4, "encoder_lr": 0.1}
DPT_QUICK_SPACE: dict = {k: v for k, v in DPT_SPACE.items() if k != "image_size"}


# The builders import torch, torchvision and SMP when a model is built: reading the registry (its names, spaces and
# defaults: the leaderboard, settings) imports none of them (competition/core/lazy.py says why).
def build_fcn(num_classes: int, settings: dict, warn: Callable[[str], None], *, stride: int) -> tuple[nn.Module, str]:
    from models.fcn import build_fcn as build

    return build(num_classes, settings, warn, stride=stride)


def build_smp(num_classes: int, settings: dict, warn: Callable[[str], None], *, arch: str) -> tuple[nn.Module, str]:
    from models.smp_zoo import build_smp as build

    return build(num_classes, settings, warn, arch=arch)


def _fcn(stride: int, description: str) -> ModelSpec:
    build = partial(build_fcn, stride=stride)
    return ModelSpec(f"fcn{stride}s", "fcn", build, FCN_DEFAULTS, FCN_SPACE, description, FCN_QUICK_SPACE)


def _smp(arch: str, description: str) -> ModelSpec:
    build = partial(build_smp, arch=arch)
    return ModelSpec(arch, "smp", build, SMP_DEFAULTS, SMP_SPACE, description, SMP_QUICK_SPACE)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _fcn(32, "FCN-32s, VGG16: one 32x bilinear-initialised upsampling"),
        _fcn(16, "FCN-16s, VGG16: pool4 skip (the competition's seed network)"),
        _fcn(8, "FCN-8s, VGG16: pool4 and pool3 skips (the competition's baseline)"),
        _smp("unet", "U-Net (smp)"),
        _smp("unetplusplus", "U-Net++ (smp)"),
        _smp("deeplabv3", "DeepLabV3 (smp)"),
        _smp("deeplabv3plus", "DeepLabV3+ (smp)"),
        _smp("fpn", "FPN (smp)"),
        _smp("pspnet", "PSPNet (smp)"),
        _smp("pan", "PAN (smp)"),
        _smp("linknet", "LinkNet (smp)"),
        _smp("manet", "MA-Net (smp)"),
        _smp("upernet", "UPerNet (smp)"),
        _smp("segformer", "SegFormer decoder (smp)"),
        ModelSpec(
            "dpt",
            "smp",
            partial(build_smp, arch="dpt"),
            DPT_DEFAULTS,
            DPT_SPACE,
            "DPT (smp): a plain ViT encoder (timm tu-vit_*), any input size",
            DPT_QUICK_SPACE,
        ),
    )
}


# create_model settings that build a registered model's architecture without any pretrained weights (the fold's
# own weights follow: prediction, export, parameter counts)
ARCHITECTURE_ONLY: dict = {"weights": None, "encoder_weights": None, "checkpoint_weights": False}


def get_spec(name: str) -> ModelSpec:
    """The registered model `name`; a UserError naming the closest match and the valid names otherwise."""
    if name in MODELS:
        return MODELS[name]
    valid = ", ".join(spec.name for spec in list_models())
    raise UserError(f"unknown model '{name}'{did_you_mean(name, MODELS)}; valid: {valid}")


def create_model(
    name: str, num_classes: int, settings: dict | None = None, warn: Callable[[str], None] = print
) -> tuple[nn.Module, str]:
    """Model `name` for num_classes classes, settings layered over its defaults; and what it loaded
    (`<source>: ...`, source random | imagenet (or another weights name) | file)."""
    spec = get_spec(name)
    settings = spec.defaults | (settings or {})
    if settings.get("checkpoint") and spec.family != "smp":
        raise UserError(f"setting checkpoint={settings['checkpoint']}: whole pretrained models are SMP models; {name} "
                        "takes `weights`")  # fmt: skip
    return spec.build(num_classes, settings, warn)


def count_parameters(name: str, num_classes: int = 12, settings: dict | None = None) -> int:
    """Parameter count of model `name` (built without weight files, on the meta device where it can be)."""
    import torch

    settings = (settings or {}) | ARCHITECTURE_ONLY
    try:
        with torch.device("meta"):
            model, _ = create_model(name, num_classes, settings)
    except (RuntimeError, NotImplementedError):  # a layer whose init reads tensor values (e.g. mit encoders)
        model, _ = create_model(name, num_classes, settings)
    return sum(p.numel() for p in model.parameters())


def list_models() -> list[ModelSpec]:
    """Every registered model, sorted by family then name."""
    return sorted(MODELS.values(), key=lambda spec: (spec.family, spec.name))


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The pretrained part of a registered model (SMP's `encoder`, the FCNs' VGG16 `features`; through the
    padding wrapper's `model`), or None."""
    from torch import nn

    for name in ("encoder", "features"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            return part
    inner = getattr(model, "model", None)
    return encoder_of(inner) if isinstance(inner, nn.Module) else None
