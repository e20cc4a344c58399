"""hf-methods: learngenes and distillation as Hugging Face-native models and Trainers."""

__version__ = "0.1.0"

from .engine import ExpansionReport, LearngeneConfig, LearngeneModel, register_architecture  # noqa: E402
from .models import (  # noqa: E402
    GTLConfig,
    GTLModel,
    LabelQueryConfig,
    LabelQueryForMultiLabelClassification,
    LearngenePoolConfig,
    LearngenePoolModel,
    ProxyTunedConfig,
    ProxyTunedForCausalLM,
    ProxyTunedForSequenceClassification,
    StitchedViTConfig,
    StitchedViTForImageClassification,
    SWSConfig,
    SWSModel,
    TLEGConfig,
    TLEGModel,
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
    "SWSConfig",
    "SWSModel",
    "StitchedViTConfig",
    "StitchedViTForImageClassification",
    "TLEGConfig",
    "TLEGModel",
    "__version__",
    "register_architecture",
]
