"""segmentation_models_pytorch baselines; encoder weights by name (SMP's own sources, see models.pretrained) or
from a local file."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from competition.core.errors import UserError
from competition.core.names import did_you_mean
from models.encoders import DPT_ENCODERS
from models.pretrained import LITES, Warn, encoder_weights, fit_in_order, read_weights, timm_weights
from models.whole import build_whole

MIN_SIZE = {"pan": 128}  # PAN's feature pyramid attention pools its stride-16 map three times


class PadToMultiple(nn.Module):
    """Runs `model` on the input zero-padded (bottom, right) to a multiple of `multiple` and at least
    `min_size` per side, and crops the output back: logits always have the input's height and width."""

    def __init__(self, model: nn.Module, multiple: int = 32, min_size: int = 0) -> None:
        super().__init__()
        self.model = model
        self.multiple = multiple
        self.min_size = min_size

    def _padded(self, n: int) -> int:
        return max(self.min_size, -(-n // self.multiple) * self.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self._padded(h) - h, self._padded(w) - w
        if ph == 0 and pw == 0:
            return self.model(x)
        return self.model(F.pad(x, (0, pw, 0, ph)))[..., :h, :w]


def padded(model: nn.Module, arch: str) -> PadToMultiple:
    """`model` taking any input size: DPT padded to a multiple of two patches (its coarsest map is the patch grid
    halved), the CNN architectures to a multiple of 32."""
    multiple = 2 * int(model.encoder.output_stride) if arch == "dpt" else 32
    return PadToMultiple(model, multiple=multiple, min_size=MIN_SIZE.get(arch, 0))


def load_encoder_weights(encoder: nn.Module, path: str | Path, name: str = "") -> str:
    """Load a state dict file into an SMP encoder (strict keys and shapes). Returns what was loaded.

    The EfficientNet-Lite0/1/2 packages' checkpoints (efficientnet_pytorch names) is mapped one to one, in order,
    onto the encoder's tensors, each shape checked.
    """
    path = Path(path)
    state = read_weights(path, "encoder weights")
    if name in LITES and "_conv_stem.weight" in state:
        state = fit_in_order(state, encoder.state_dict(), path)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        raise UserError(f"{path}: does not fit the encoder: {' '.join(lines)[:300]}") from e
    return f"encoder weights ({len(state)} tensors) from {path}"


def build_smp(num_classes: int, settings: dict, warn: Warn = print, *, arch: str) -> tuple[nn.Module, str]:
    """SMP `arch` from settings `encoder` (name) and `encoder_weights` (null, auto, a name the encoder offers
    such as imagenet, or a state dict file). Returns the model and `<source>: what was loaded`."""
    if settings.get("checkpoint"):  # a whole pretrained model: its config fixes the encoder
        model, what = build_whole(num_classes, settings, warn, arch=arch)
        source = "checkpoint" if settings.get("checkpoint_weights", True) else "random"
        return padded(model, arch), f"{source}: {arch}: {what}"
    encoder = str(settings.get("encoder", "resnet34"))
    if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
        hint = did_you_mean(encoder, smp.encoders.get_encoder_names(), n=3)
        raise UserError(f"unknown encoder '{encoder}' for {arch}{hint}")
    if encoder.startswith("tu-"):
        return _build_timm(num_classes, settings, warn, arch=arch, encoder=encoder)
    if arch == "dpt":
        raise UserError(f"dpt takes a timm ViT encoder (tu-NAME, e.g. {DPT_ENCODERS[0]}), not '{encoder}'")
    model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes)
    weights = encoder_weights(settings.get("encoder_weights"), encoder, warn)
    what = weights.detail
    if weights.path is not None:
        what = f"{load_encoder_weights(model.encoder, weights.path, encoder)} ({weights.detail})"
    return padded(model, arch), f"{weights.source}: {arch}/{encoder}: {what}"


def _build_timm(num_classes: int, settings: dict, warn: Warn, *, arch: str, encoder: str) -> tuple[nn.Module, str]:
    """SMP `arch` on a timm encoder (`tu-NAME`, any model timm has). Hub weights load through timm itself
    (SMP's pretrained path, pointed at the resolved file: timm drops the classifier and maps features_only);
    a local file loads into the encoder, keys checked."""
    import timm

    base = encoder[len("tu-") :].split(".")[0]
    if not timm.is_model(base):
        hint = did_you_mean(base, timm.list_models(), n=3)
        raise UserError(f"unknown encoder '{encoder}' for {arch}: timm has no model {base!r}{hint}")
    weights = timm_weights(settings.get("encoder_weights"), encoder, warn)
    hub = weights.path is not None and weights.source != "file"
    extra = {"pretrained_cfg_overlay": {"file": str(weights.path)}} if hub else {}
    if arch == "dpt":  # any input size: timm interpolates the ViT's position embeddings to the patch grid
        extra["dynamic_img_size"] = True
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=True if hub else None,
                                 classes=num_classes, **extra)  # fmt: skip
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        hint = f" (dpt takes a timm ViT encoder, e.g. {DPT_ENCODERS[0]})" if arch == "dpt" else ""
        raise UserError(f"encoder {encoder} for {arch}: {str(e).splitlines()[0][:200]}{hint}") from None
    what = weights.detail
    if weights.source == "file":
        what = load_encoder_weights(model.encoder, weights.path, encoder)
    return padded(model, arch), f"{weights.source}: {arch}/{encoder}: {what}"
