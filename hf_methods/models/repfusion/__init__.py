"""RepFusion: distill a diffusion model's features at policy-chosen timesteps into a recognition backbone."""

from ...registry import register_models
from .configuration_repfusion import RepFusionConfig
from .modeling_repfusion import (
    PolicyNet,
    RepFusionDistiller,
    RepFusionOutput,
    backbone_card,
    entropy_schedule,
    hooked_module,
    student_feature_size,
)

__all__ = [
    "PolicyNet",
    "RepFusionConfig",
    "RepFusionDistiller",
    "RepFusionOutput",
    "backbone_card",
    "entropy_schedule",
    "hooked_module",
    "student_feature_size",
]

register_models(RepFusionConfig, RepFusionDistiller)
