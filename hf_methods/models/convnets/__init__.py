from ...registry import register_models
from .configuration_convnets import ResNet12Config, VGGConfig
from .modeling_convnets import (
    ConvNetPreTrainedModel,
    ResNet12ForImageClassification,
    VGGForImageClassification,
)

__all__ = [
    "ConvNetPreTrainedModel",
    "ResNet12Config",
    "ResNet12ForImageClassification",
    "VGGConfig",
    "VGGForImageClassification",
]

register_models(VGGConfig, VGGForImageClassification, auto=("AutoModel", "AutoModelForImageClassification"))
register_models(ResNet12Config, ResNet12ForImageClassification, auto=("AutoModel", "AutoModelForImageClassification"))
