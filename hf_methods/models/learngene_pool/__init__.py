from ...registry import register_models
from .configuration_learngene_pool import LearngenePoolConfig, StitchedViTConfig
from .modeling_learngene_pool import (
    LearngenePoolModel,
    StitchedViTForImageClassification,
    StitchLayer,
    enumerate_stitch_configs,
    least_squares_stitch,
    paired_stitching,
    projector_stitch_weight,
    stitch_pairs,
)

__all__ = [
    "LearngenePoolConfig",
    "LearngenePoolModel",
    "StitchLayer",
    "StitchedViTConfig",
    "StitchedViTForImageClassification",
    "enumerate_stitch_configs",
    "least_squares_stitch",
    "paired_stitching",
    "projector_stitch_weight",
    "stitch_pairs",
]

register_models(LearngenePoolConfig, LearngenePoolModel, auto=("AutoModel", "AutoModelForImageClassification"))
register_models(
    StitchedViTConfig, StitchedViTForImageClassification, auto=("AutoModel", "AutoModelForImageClassification")
)
