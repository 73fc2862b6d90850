"""Whole pretrained SMP models (`checkpoint=REPO_OR_FOLDER`): encoder and decoder from a checkpoint that SMP's
`save_pretrained` / the Hugging Face hub layout holds (`config.json` + `model.safetensors`), its segmentation
head refitted to this dataset's classes.

A hub repo id (e.g. `smp-hub/upernet-convnext-tiny`) is read through the hub cache (`$HF_HOME/hub`) and
downloaded when missing, as SMP's own `from_pretrained` does; offline without a cached copy it is one line
naming the folder to put it in. The checkpoint's `config.json` fixes the architecture and the encoder, so the
`encoder` and `encoder_weights` settings do not apply; the registered model must be the checkpoint's
architecture. At prediction time only the architecture is rebuilt (from the same config.json): the fold's own
weights are loaded after it.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from competition.core.errors import UserError
from models.pretrained import DOWNLOAD_TIMEOUT, Warn, hub_cache, offline

FILES = ("config.json", "model.safetensors")


def checkpoint_folder(spec: str) -> Path:
    """The local folder holding the checkpoint's config.json and model.safetensors (from the hub cache,
    downloaded when missing and allowed)."""
    local = Path(spec).expanduser()
    if local.is_dir() or local.suffix or spec.startswith((".", "/", "~")):
        missing = [f for f in FILES if not (local / f).is_file()]
        if not local.is_dir() or missing:
            raise UserError(f"setting checkpoint={spec}: {local} must be a folder with {' and '.join(FILES)}")
        return local
    if spec.count("/") != 1:
        raise UserError(f"setting checkpoint={spec}: expected a hub repo id (owner/name) or a local folder")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = hub_cache()
    cached = [try_to_load_from_cache(spec, f, cache_dir=cache) for f in FILES]
    if all(isinstance(c, str) for c in cached):
        return Path(cached[0]).parent
    folder = cache / f"models--{spec.replace('/', '--')}" / "snapshots" / "<commit>"
    if offline():
        raise UserError(f"setting checkpoint={spec}: not in the hub cache and offline; put {' and '.join(FILES)} "
                        f"in {folder} (or download once with network)")  # fmt: skip
    try:
        paths = [hf_hub_download(spec, f, cache_dir=cache, etag_timeout=DOWNLOAD_TIMEOUT) for f in FILES]
    except Exception as e:  # no network, no such repository: one line, never a traceback
        raise UserError(
            f"setting checkpoint={spec}: cannot download ({str(e).splitlines()[0][:120]}); put "
            f"{' and '.join(FILES)} in {folder}"
        ) from None
    return Path(paths[0]).parent


def build_whole(num_classes: int, settings: dict, warn: Warn, *, arch: str) -> tuple[nn.Module, str]:
    """SMP `arch` from `settings["checkpoint"]`, with its weights unless `checkpoint_weights` is False, and a
    new head for `num_classes` when the checkpoint's has another number of classes (said in one line)."""
    import segmentation_models_pytorch as smp

    spec = str(settings["checkpoint"])
    folder = checkpoint_folder(spec)
    try:
        config = json.loads((folder / "config.json").read_text())
        name = str(config.pop("_model_class"))
    except (ValueError, KeyError, OSError) as e:
        why = f"{folder / 'config.json'} is not an SMP model config ({e})"
        raise UserError(f"setting checkpoint={spec}: {why}") from None
    wanted = smp.MODEL_ARCHITECTURES_MAPPING.get(arch)
    if wanted is None or name != wanted.__name__:
        mine = {cls.__name__: key for key, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()}
        hint = f"; train it as `{mine[name]}`" if name in mine else ""
        raise UserError(f"setting checkpoint={spec}: the checkpoint is a {name}, not {arch}{hint}")
    trained_for = int(config.get("classes", 1))
    # the checkpoint holds the encoder too (encoder_weights=None: nothing else is fetched); a new class count
    override = {"classes": num_classes, "encoder_weights": None}
    try:
        if settings.get("checkpoint_weights", True):  # weights of mismatched shape (the head) are left out
            model = wanted.from_pretrained(str(folder), strict=False, **override)
        else:  # the architecture only (prediction: the fold's own weights follow)
            model = wanted(**({k: v for k, v in config.items() if not k.startswith("_")} | override))
    except (RuntimeError, ValueError, TypeError, OSError) as e:
        why = str(e).splitlines()[0][:200]
        raise UserError(f"setting checkpoint={spec}: cannot build {name} from it: {why}") from None
    what = f"{name} from {spec} (encoder {config.get('encoder_name', '?')}, encoder and decoder)"
    if trained_for != num_classes:
        what += f"; head replaced: {trained_for} -> {num_classes} classes (newly initialised)"
        if settings.get("checkpoint_weights", True):
            warn(f"checkpoint {spec}: its head for {trained_for} classes is replaced by one for {num_classes}")
    return model, what
