"""Run settings: harness defaults < model defaults < config file < --set KEY=VALUE < flags.

The resolved dictionary is saved as `config.json` in every run folder, so a run can be reproduced from it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from competition.core.errors import UsageError, UserError
from competition.core.lossspec import parse_loss
from competition.core.names import NAMES, did_you_mean, tracker_names
from competition.core.tta import check_square, parse_tta
from competition.core.yamlfile import parse_value, read_config_file

DEFAULTS: dict[str, Any] = {
    # data
    "data": None,  # dataset root; resolved by competition.data.resolve_data_root
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
    "encoder_weights": "auto",  # smp: null | auto | imagenet (or another name the encoder offers) | a file
    "checkpoint": None,  # smp: a whole pretrained SMP model (hub repo id or a folder; its head refitted)
    "weights": "auto",  # fcn: null | auto | imagenet (torchvision's VGG16 / VGG16-BN) | a file
    "dropout": 0.5,
    "norm": "none",  # fcn backbone: none (VGG16, the seed's) | batch (VGG16-BN, trains from random init)
    "fc6": "1x1",  # fcn: 1x1 (the seed's) | 7x7 (the paper's; weights=imagenet then loads VGG16's fc6 too)
    # optimisation
    "epochs": 30,
    "image_size": 256,  # S (square) or "HxW" (non-square); submissions stay 256x256
    "batch_size": 8,
    "optimizer": "adamw",  # adam | adamw | sgd
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "scheduler": "cosine",  # cosine (with warmup) | poly | none
    "warmup_epochs": 1,
    "freeze_encoder": 0,  # fine-tuning: the encoder frozen (BatchNorm in eval mode) for the first N epochs
    "encoder_lr": 1.0,  # fine-tuning: the encoder's learning rate as a multiple of lr (e.g. 0.1)
    "loss": "ce",  # ce | dice | focal | lovasz, or a weighted mix such as "0.7*ce+0.3*dice"
    "class_weights": None,  # None | "auto" (inverse sqrt of pixel frequency) | list of floats
    "grad_clip": 0.0,  # max gradient norm; 0 = off
    "early_stop": 0,  # patience in epochs; 0 = off
    "keep": "best",  # the fold's kept checkpoint: best (its best validated epoch) | last (its last epoch)
    "val_every": "auto",  # validate every N epochs (and always the last); 0 = the last only; auto: see below
    "ema": 0.0,  # weight averaging: EMA decay (e.g. 0.999, updated every optimiser step); 0 = off
    "swa": 0,  # weight averaging: SWA over the last N epochs (BatchNorm recomputed); 0 = off
    "metric": "image",  # ranking metric: image (per-image mIoU, run A leaderboard) | dataset
    # augmentation
    "aug_hflip": 0.5,
    "aug_vflip": 0.0,
    "aug_scale_min": 0.75,
    "aug_scale_max": 1.25,
    "aug_color": 0.2,
    "copy_paste": 0.0,  # chance that a training image gets one rare-class object pasted (data/rare.py)
    "sampler": "shuffle",  # shuffle | balanced (images drawn by their rarest class)
    "pseudo": None,  # a pseudo-labelled set (runs/pseudo/NAME, from ./run.sh pseudo-label) added to training folds
    # machinery
    "device": "auto",  # auto | cpu | cuda
    "amp": "auto",  # auto (CUDA: bf16 where supported, else fp16 + gradient scaler; CPU: off) | bf16 | fp16 | off
    "accum": 1,  # gradient accumulation: optimizer steps every `accum` batches
    "gpus": 1,  # data parallel: processes per fold (one per GPU; gloo on CPU); batch_size is the global batch
    "sync_bn": False,  # with gpus > 1: BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)
    "oom": "fail",  # on CUDA out of memory: fail (the run or trial, with the reason) | halve (retry once, half batch)
    "channels_last": True,
    "compile": False,  # torch.compile the training and prediction model (one line and eager where it cannot)
    "num_workers": "auto",  # DataLoader worker processes; auto: 0 on a CPU (they would take its cores), 2 on CUDA
    "image_cache": True,  # decode and resize training images once into a memory-mapped cache (data/images.py)
    "save_oof": True,
    "overlays": 4,  # prediction overlay PNGs per fold
    "val_tta": "none",  # TTA views of validation and out-of-fold probabilities (as --tta): none, hflip, d4, ...
    # tracking (train/trackers): a comma-separated list of tensorboard (event files in the run folder), mlflow
    # (MLFLOW_TRACKING_URI, else <runs>/mlflow.db), wandb (Weights & Biases; WANDB_MODE=offline without an
    # account), e.g. tensorboard,wandb; or none
    "tracker": "tensorboard",
}

# Used instead of the defaults on the embedded sample dataset, so the main job takes minutes on 2 CPU cores.
# The FCNs start from random init there: ImageNet VGG16 is a 528 MB download, not minutes.
QUICK_PROFILE: dict[str, Any] = {
    "folds": 2,
    "epochs": 6,
    "image_size": 64,
    "batch_size": 4,
    "num_workers": 0,
    "weights": None,
    "val_every": 1,  # its learning curves every epoch (validating 36 images at 64 px is cheap)
}

CHOICES: dict[str, tuple[str, ...]] = {
    "overlap": ("max", "small-on-top"),
    "split": ("kfold", "official"),
    "optimizer": NAMES["optimizer"],
    "scheduler": NAMES["scheduler"],
    "metric": ("image", "dataset"),
    "norm": ("none", "batch"),
    "fc6": ("1x1", "7x7"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "sampler": ("shuffle", "balanced"),
    "keep": ("best", "last"),
    "oom": ("fail", "halve"),
}
# Type and range of every other setting: (kind, low, high); None = unbounded. Kinds: int, float, bool, text,
# optional-text (None allowed), and the special ones checked below (classes, loss, class_weights, fold, ...).
RULES: dict[str, tuple[str, float | None, float | None]] = {
    "data": ("optional-text", None, None),
    "ignore_index": ("int", 0, 255),
    "folds": ("int", 2, 1000),
    "seed": ("int", 0, 2**32 - 1),
    "model": ("optional-text", None, None),
    "encoder": ("text", None, None),
    "encoder_weights": ("optional-text", None, None),
    "checkpoint": ("optional-text", None, None),
    "weights": ("optional-text", None, None),
    "pseudo": ("optional-text", None, None),
    "dropout": ("float", 0.0, 0.99),
    "epochs": ("int", 1, 100_000),
    "accum": ("int", 1, 1024),
    "gpus": ("int", 1, 1024),
    "ema": ("float", 0.0, 0.99999),
    "swa": ("int", 0, 100_000),
    "batch_size": ("int", 1, 100_000),
    "lr": ("float", 1e-12, 10.0),
    "weight_decay": ("float", 0.0, 1.0),
    "momentum": ("float", 0.0, 0.999),
    "warmup_epochs": ("float", 0.0, 100_000),
    "freeze_encoder": ("int", 0, 100_000),
    "encoder_lr": ("float", 0.0, 100.0),
    "grad_clip": ("float", 0.0, None),
    "early_stop": ("int", 0, 100_000),
    "aug_hflip": ("float", 0.0, 1.0),
    "aug_vflip": ("float", 0.0, 1.0),
    "aug_scale_min": ("float", 0.05, 20.0),
    "aug_scale_max": ("float", 0.05, 20.0),
    "aug_color": ("float", 0.0, 1.0),
    "copy_paste": ("float", 0.0, 1.0),
    "channels_last": ("bool", None, None),
    "compile": ("bool", None, None),
    "sync_bn": ("bool", None, None),
    "image_cache": ("bool", None, None),
    "save_oof": ("bool", None, None),
    "overlays": ("int", 0, 10_000),
}
SPECIAL = ("classes", "loss", "class_weights", "fold", "image_size", "val_tta", "tracker", "val_every", "num_workers")
AUTO_INTS = {"val_every": 100_000, "num_workers": 256}  # auto, or an integer in 0..this
# Settings that change how fast a run goes, not what it learns: never "fixed", free to change on resume.
MACHINERY = frozenset(
    {"device", "num_workers", "overlays", "save_oof", "image_cache", "oom", "tracker", "compile", "gpus"}
)
# Settings `predict` and `ensemble` take with --set (the rest is the run's own).
PREDICTION_KEYS = ("batch_size", "device", "num_workers", "amp", "channels_last", "image_size", "compile")


def check_key(key: str, source: str) -> None:
    """Unknown settings are usage errors (a typo must not silently do nothing); the closest key is named."""
    if key not in DEFAULTS:
        raise UsageError(f"{source}: unknown setting {key!r}{did_you_mean(key, DEFAULTS)}")


def check_setting(key: str, value: Any, source: str = "setting") -> Any:
    """`value` checked against the type and range of setting `key`, and normalised (e.g. "1e-3" -> 0.001).

    Raises UsageError naming the source, the key, the value and what is allowed.
    """
    check_key(key, source)

    def bad(allowed: str) -> UsageError:
        return UsageError(f"{source}: {key}={value!r}: expected {allowed}")

    if key == "amp" and isinstance(value, bool):  # run folders before amp had modes: true/false
        value = "auto" if value else "off"
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise bad(f"one of {', '.join(CHOICES[key])}")
        return value
    if key in SPECIAL:
        return _check_special(key, value, bad)
    kind, low, high = RULES[key]
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind in ("text", "optional-text"):
        if value is None and kind == "optional-text":
            return None
        if not isinstance(value, str) or not value:
            raise bad("a name or path" + (" (or null)" if kind == "optional-text" else ""))
        return value
    number = _number(value, integer=kind == "int")
    span = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
    if number is None or not math.isfinite(number):
        raise bad(f"{'an integer' if kind == 'int' else 'a number'} in {span}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise bad(f"{'an integer' if kind == 'int' else 'a number'} in {span}")
    return number


def _number(value: Any, integer: bool) -> int | float | None:
    """An int (integer=True) or float from a number or numeric string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if not integer else int(value)
        except ValueError:
            return None
    if isinstance(value, float) and integer:
        return int(value) if value.is_integer() else None
    if isinstance(value, (int, float)):
        return int(value) if integer else float(value)
    return None


def _check_special(key: str, value: Any, bad: Any) -> Any:
    if key in AUTO_INTS:
        if value == "auto":
            return value
        number = _number(value, integer=True)
        if number is None or not 0 <= number <= AUTO_INTS[key]:
            raise bad(f"auto or an integer in 0..{AUTO_INTS[key]}")
        return number
    if key == "tracker":
        try:
            return ",".join(tracker_names(value))
        except ValueError as e:
            backends = ", ".join(n for n in NAMES["tracker"] if n != "none")
            raise bad(f"one or more of {backends} joined by commas (e.g. tensorboard,wandb), or none; {e}") from None
    if key == "fold":
        if value is None:
            return None
        number = _number(value, integer=True)
        if number is None or number < 0:
            raise bad("a fold index >= 0 (or null for every fold)")
        return number
    if key == "val_tta":
        try:
            parse_tta(value, "val_tta")
        except UserError as e:
            reason = str(e).split(": ", 1)[-1]
            raise bad(f"none, or TTA views as --tta takes them, e.g. d4 or hflip,0.75,1 ({reason})") from None
        return value
    if key == "image_size":
        hw = _image_hw(value)
        if hw is None or not all(8 <= n <= 8192 for n in hw):
            raise bad("a size S or HxW, each side in 8..8192")
        return hw[0] if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"
    if key == "classes":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad("a mapping of category -> keep | ignore | merge:<category>")
        for policy in value.values():
            if policy not in ("keep", "ignore") and not policy.startswith("merge:"):
                raise bad("policies keep, ignore or merge:<category>")
        return {str(k): v for k, v in value.items()}
    if key == "loss":
        try:
            parse_loss(value)
        except UserError:
            raise bad(f"terms like 'ce' or '0.5*dice' joined by '+' ({', '.join(NAMES['loss'])})") from None
        return value
    # class_weights
    if value is None or value == "auto":
        return value
    if isinstance(value, list) and value and all(_number(v, integer=False) is not None for v in value):
        weights = [float(v) for v in value]
        if all(math.isfinite(w) and w >= 0 for w in weights):
            return weights
    raise bad("auto, null, or a list of non-negative numbers (one per class)")


def _image_hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, str) and "x" in value.lower():
        parts = [_number(p, integer=True) for p in value.lower().split("x", 1)]
        return (parts[0], parts[1]) if None not in parts else None
    side = _number(value, integer=True)
    return None if side is None else (side, side)


def image_hw(cfg: dict[str, Any]) -> tuple[int, int]:
    """The training and validation size (height, width) of a resolved configuration."""
    hw = _image_hw(cfg["image_size"])
    assert hw is not None, cfg["image_size"]
    return hw


def split_set(item: str, source: str = "--set") -> tuple[str, Any]:
    """One KEY=VALUE of --set, value parsed as YAML (`classes.NAME=POLICY` keeps its dotted key)."""
    if "=" not in item:
        raise UsageError(f"{source} {item!r}: expected KEY=VALUE")
    key, text = item.split("=", 1)
    return key.strip(), parse_value(text.strip()) if not key.startswith("classes.") else text.strip()


def user_settings(
    config_file: Path | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    allowed: tuple[str, ...] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """What the user gave (config file < --set < flags), each value checked; the `classes` entries merged.

    `allowed`: the only keys this command takes (predict and ensemble); others are usage errors.
    """
    given: dict[str, Any] = {}
    layers: list[tuple[str, list[tuple[str, Any]]]] = []
    if config_file is not None:
        layers.append((str(config_file), list(read_config_file(config_file).items())))
    layers.append(("--set", [split_set(item) for item in sets or []]))
    layers.append(("flag", [(k, v) for k, v in (flags or {}).items() if v is not None]))
    for source, items in layers:
        for key, value in items:
            if key.startswith("classes."):
                key, value = "classes", {**given.get("classes", {}), key[len("classes.") :]: value}
            elif key == "classes" and isinstance(value, dict):
                value = {**given.get("classes", {}), **value}
            where = f"--{key.replace('_', '-')}" if source == "flag" else source
            if allowed is not None and key not in allowed:
                check_key(key, where)
                raise UsageError(f"{where}: {key} does not apply to {command}; it takes {', '.join(allowed)}")
            given[key] = check_setting(key, value, where)
    return given


def resolve(
    model_defaults: dict[str, Any] | None = None,
    config_file: Path | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Layer the settings; later layers win: defaults < model < profile < file < --set < flags (`given`).

    `given` is what user_settings returned (it is computed from config_file, sets and flags when None).
    """
    if given is None:
        given = user_settings(config_file, sets, flags)
    cfg = json.loads(json.dumps(DEFAULTS))
    cfg.update(model_defaults or {})
    cfg.update(profile or {})
    cfg.update(given)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any], source: str = "setting") -> dict[str, Any]:
    """Check every setting (type and range) and the relations between them; normalises values in place."""
    for key in DEFAULTS:  # a key missing (a run folder older than the setting) takes the default
        cfg[key] = check_setting(key, cfg.get(key, DEFAULTS[key]), source)
    if cfg["aug_scale_min"] > cfg["aug_scale_max"]:
        raise UsageError(
            f"{source}: aug_scale_min={cfg['aug_scale_min']} > aug_scale_max={cfg['aug_scale_max']}: "
            "expected min <= max"
        )
    if cfg["early_stop"] and cfg["keep"] == "last":
        raise UsageError(f"{source}: early_stop={cfg['early_stop']} with keep=last: early stopping keeps the best "
                         "epoch; use keep=best")  # fmt: skip
    if cfg["ema"] and cfg["swa"]:
        raise UsageError(f"{source}: ema={cfg['ema']} and swa={cfg['swa']}: choose one weight average")
    if cfg["swa"] > cfg["epochs"]:
        raise UsageError(f"{source}: swa={cfg['swa']}: averages more epochs than epochs={cfg['epochs']}")
    try:
        check_square(parse_tta(cfg["val_tta"], "val_tta"), image_hw(cfg), f"{source}: val_tta={cfg['val_tta']}")
    except UserError as e:
        raise UsageError(str(e)) from None
    return cfg


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """`key (old -> new)` for every result-changing setting of `after` that `before` has otherwise."""
    missing = "unset"
    return [
        f"{key} ({before.get(key, missing)} -> {value})"
        for key, value in after.items()
        if key not in MACHINERY and before.get(key, missing) != value
    ]


def short(value: Any) -> str:
    """A setting's value for a one-line message: floats with 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def describe(settings: dict[str, Any]) -> str:
    """`key=value, ...` for logs."""
    return ", ".join(f"{k}={short(v)}" for k, v in settings.items())
