"""hf-methods: learngenes and distillation as Hugging Face-native models and Trainers."""

__version__ = "0.1.0"

from .engine import (
    ExpansionReport,
    LearngeneConfig,
    LearngeneModel,
    register_architecture,
)
from .models import (
    GTLConfig,
    GTLModel,
    LabelQueryConfig,
    LabelQueryForMultiLabelClassification,
    LearngenePoolConfig,
    LearngenePoolModel,
    ProxyTunedConfig,
    ProxyTunedForCausalLM,
    ProxyTunedForSequenceClassification,
    ResNet12Config,
    ResNet12ForImageClassification,
    StitchedViTConfig,
    StitchedViTForImageClassification,
    SWSConfig,
    SWSModel,
    TLEGConfig,
    TLEGModel,
    VGGConfig,
    VGGForImageClassification,
)

__all__ = [
    "ExpansionReport",
    "GTLConfig",
    "GTLModel",
    "LabelQueryConfig",
    "LabelQueryForMultiLabelClassification",
    "LearngeneConfig",
    "LearngeneModel",
    "LearngenePoolConfig",
    "LearngenePoolModel",
    "ProxyTunedConfig",
    "ProxyTunedForCausalLM",
    "ProxyTunedForSequenceClassification",
    "ResNet12Config",
    "ResNet12ForImageClassification",
    "SWSConfig",
    "SWSModel",
    "StitchedViTConfig",
    "StitchedViTForImageClassification",
    "TLEGConfig",
    "TLEGModel",
    "VGGConfig",
    "VGGForImageClassification",
    "__version__",
    "register_architecture",
]
