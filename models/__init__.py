"""Model zoo: FCNs on VGG16 beside segmentation_models_pytorch baselines, all in one registry."""

from models.registry import (
    ARCHITECTURE_ONLY,
    MODELS,
    RECOMMENDED_ENCODERS,
    ModelSpec,
    count_parameters,
    create_model,
    encoder_of,
    get_spec,
    list_encoders,
    list_models,
)

__all__ = [
    "ARCHITECTURE_ONLY",
    "MODELS",
    "RECOMMENDED_ENCODERS",
    "ModelSpec",
    "count_parameters",
    "create_model",
    "encoder_of",
    "get_spec",
    "list_encoders",
    "list_models",
]
