"""Model zoo: FCNs on VGG16 beside segmentation_models_pytorch baselines, all in one registry."""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".encoders": ("RECOMMENDED_ENCODERS", "list_encoders"),
        ".registry": (
            "ARCHITECTURE_ONLY",
            "MODELS",
            "ModelSpec",
            "count_parameters",
            "create_model",
            "encoder_of",
            "get_spec",
            "list_models",
        ),
    },
)
