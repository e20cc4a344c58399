"""hf_methods model classes, registered with the transformers Auto classes on import."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from .convnets import (
    ResNet12Config,
    ResNet12ForImageClassification,
    VGGConfig,
    VGGForImageClassification,
)
from .gtl import GTLConfig, GTLModel
from .label_query import (
    LabelQueryConfig,
    LabelQueryForMultiLabelClassification,
    MultiLabelOutput,
)
from .learngene_pool import (
    LearngenePoolConfig,
    LearngenePoolModel,
    StitchedViTConfig,
    StitchedViTForImageClassification,
)
from .proxy_tuned import (
    ProxyTunedConfig,
    ProxyTunedForCausalLM,
    ProxyTunedForSequenceClassification,
)
from .sws import SWSConfig, SWSModel
from .tleg import TLEGConfig, TLEGModel

_POOL = [(LearngenePoolConfig, LearngenePoolModel), (StitchedViTConfig, StitchedViTForImageClassification)]
_CONVNETS = [(VGGConfig, VGGForImageClassification), (ResNet12Config, ResNet12ForImageClassification)]
for _config, _model in [(TLEGConfig, TLEGModel), (SWSConfig, SWSModel), (LabelQueryConfig, LabelQueryForMultiLabelClassification), (GTLConfig, GTLModel), *_POOL, *_CONVNETS]:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
for _config, _model in [*_POOL, *_CONVNETS]:
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)
# One config serves both tasks, so no AutoModel entry: the task class is the Auto class.
AutoConfig.register(ProxyTunedConfig.model_type, ProxyTunedConfig, exist_ok=True)
AutoModelForCausalLM.register(ProxyTunedConfig, ProxyTunedForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(ProxyTunedConfig, ProxyTunedForSequenceClassification, exist_ok=True)

__all__ = [
    "GTLConfig",
    "GTLModel",
    "LabelQueryConfig",
    "LabelQueryForMultiLabelClassification",
    "LearngenePoolConfig",
    "LearngenePoolModel",
    "MultiLabelOutput",
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
]
