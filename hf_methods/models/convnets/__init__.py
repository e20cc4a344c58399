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
