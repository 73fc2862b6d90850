"""Run settings: harness defaults < model defaults < config file < --set KEY=VALUE < flags.

The resolved dictionary is saved as `config.json` in every run folder, so a run can be reproduced from it.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml

from competition.errors import UserError

DEFAULTS: dict[str, Any] = {
    # data
    "data": None,  # dataset root; resolved by competition.data_root.resolve_data_root
    "overlap": "max",  # max (run A) | small-on-top (run B)
    "classes": {},  # category name or id -> keep | ignore | merge:<name or id>
    "ignore_index": 255,
    # folds
    "split": "kfold",  # kfold (multi-label stratified) | official (train.json / val.json)
    "folds": 5,
    "fold": None,  # train only this fold index
    "seed": 42,
    # model (model-specific keys: encoder, encoder_weights for smp; weights, dropout, norm for fcn)
    "model": None,
    "encoder": "resnet34",
    "encoder_weights": None,
    "weights": None,
    "dropout": 0.5,
    "norm": "none",  # fcn backbone: none (VGG16, the seed's) | batch (VGG16-BN, trains from random init)
    # optimisation
    "epochs": 30,
    "image_size": 256,
    "batch_size": 8,
    "optimizer": "adamw",  # adam | adamw | sgd
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "scheduler": "cosine",  # cosine (with warmup) | poly | none
    "warmup_epochs": 1,
    "loss": "ce",  # ce | dice | focal | lovasz, or a weighted mix such as "0.7*ce+0.3*dice"
    "class_weights": None,  # None | "auto" (inverse sqrt of pixel frequency) | list of floats
    "grad_clip": 0.0,  # max gradient norm; 0 = off
    "early_stop": 0,  # patience in epochs; 0 = off
    "metric": "image",  # ranking metric: image (per-image mIoU, run A leaderboard) | dataset
    # augmentation
    "aug_hflip": 0.5,
    "aug_vflip": 0.0,
    "aug_scale_min": 0.75,
    "aug_scale_max": 1.25,
    "aug_color": 0.2,
    # machinery
    "device": "auto",  # auto | cpu | cuda
    "amp": True,  # bf16 autocast on CUDA
    "channels_last": True,
    "num_workers": 2,
    "save_oof": True,
    "overlays": 4,  # prediction overlay PNGs per fold
}

# Used instead of the defaults on the embedded sample dataset, so the main job takes minutes on 2 CPU cores.
QUICK_PROFILE: dict[str, Any] = {"folds": 2, "epochs": 6, "image_size": 64, "batch_size": 4, "num_workers": 0}

CHOICES: dict[str, tuple[str, ...]] = {
    "overlap": ("max", "small-on-top"),
    "split": ("kfold", "official"),
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("cosine", "poly", "none"),
    "metric": ("image", "dataset"),
    "norm": ("none", "batch"),
    "device": ("auto", "cpu", "cuda"),
}


def parse_value(text: str) -> Any:
    """A --set value as YAML would read it: numbers, booleans, null, lists; anything else stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a YAML or JSON file (a mapping of keys to values)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of settings, got {type(data).__name__}")
    return data


def apply_set(cfg: dict[str, Any], item: str, source: str = "--set") -> None:
    """Apply one KEY=VALUE; `classes.NAME=ignore` sets one entry of the `classes` mapping."""
    if "=" not in item:
        raise UserError(f"{source} {item!r}: expected KEY=VALUE")
    key, text = item.split("=", 1)
    key = key.strip()
    if key.startswith("classes."):
        cfg["classes"] = {**cfg.get("classes", {}), key[len("classes.") :]: text.strip()}
        return
    check_key(key, source)
    cfg[key] = parse_value(text)


def check_key(key: str, source: str) -> None:
    """Unknown settings are errors (a typo must not silently do nothing)."""
    if key not in DEFAULTS:
        close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{source}: unknown setting {key!r}{hint}")


def resolve(
    model_defaults: dict[str, Any] | None = None,
    config_file: Path | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Layer the settings; later layers win. Flags whose value is None are not given."""
    cfg = json.loads(json.dumps(DEFAULTS))
    cfg.update(model_defaults or {})
    cfg.update(profile or {})
    if config_file is not None:
        for key, value in read_config_file(config_file).items():
            if key != "classes":
                check_key(key, str(config_file))
            cfg[key] = value
    for item in sets or []:
        apply_set(cfg, item)
    cfg.update({k: v for k, v in (flags or {}).items() if v is not None})
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    """Reject values that would fail later, with the setting's name."""
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise UserError(f"setting {key}={cfg[key]!r}: expected one of {', '.join(allowed)}")
    for key in ("epochs", "image_size", "batch_size", "folds"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise UserError(f"setting {key}={cfg[key]!r}: expected a positive integer")
    if not isinstance(cfg["classes"], dict):
        raise UserError(f"setting classes={cfg['classes']!r}: expected a mapping of category -> policy")


def save_config(cfg: dict[str, Any], path: Path) -> None:
    """Write the resolved settings as JSON (atomically)."""
    from competition.fileio import write_json

    write_json(path, cfg)
