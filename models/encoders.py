"""Encoder names: DPT's ViT encoders, the encoders worth trying first, and every encoder name by pattern (SMP's own
and timm's as `tu-NAME`). Plain data: the registry and the builders read it without importing SMP."""

from __future__ import annotations

# DPT's encoders: plain ViTs from timm (DPT reads their token maps); the first is its default
DPT_ENCODERS = ("tu-vit_small_patch16_224.augreg_in21k_ft_in1k", "tu-vit_base_patch16_224.augreg_in21k")

# Encoders worth trying first (offline-buildable; each is built and run in tests/test_models.py), with a note.
RECOMMENDED_ENCODERS: tuple[tuple[str, str], ...] = (
    ("resnet34", "SMP's default; ImageNet from SMP's hub repository"),
    ("timm-tf_efficientnet_lite0", "small; ImageNet ships in a pinned package (works with no network)"),
    ("timm-tf_efficientnet_lite2", "Lite0's larger sibling; ImageNet ships in a pinned package too"),
    ("tu-convnext_tiny", "timm ConvNeXt-T: a strong 2020s CNN"),
    ("tu-tf_efficientnetv2_s", "timm EfficientNetV2-S"),
    ("tu-regnety_040", "timm RegNetY-4GF"),
    ("tu-hrnet_w18", "timm HRNet-W18: high-resolution features"),
)


def list_encoders(pattern: str) -> list[str]:
    """Encoder names matching a shell pattern: SMP's own, and every timm model as `tu-NAME` (a pattern that
    starts with `tu-` matches timm names only)."""
    import fnmatch

    import segmentation_models_pytorch as smp
    import timm

    bare = pattern[len("tu-") :] if pattern.startswith("tu-") else pattern
    own = [] if pattern.startswith("tu-") else fnmatch.filter(sorted(smp.encoders.get_encoder_names()), pattern)
    return [e for e in own if not e.startswith("tu-")] + [f"tu-{name}" for name in timm.list_models(bare)]
