"""hf_methods model classes, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .label_query import LabelQueryConfig, LabelQueryForMultiLabelClassification, MultiLabelOutput
from .learngene_pool import LearngenePoolConfig, LearngenePoolModel, StitchedViTConfig, StitchedViTForImageClassification
from .sws import SWSConfig, SWSModel
from .tleg import TLEGConfig, TLEGModel

_POOL = [(LearngenePoolConfig, LearngenePoolModel), (StitchedViTConfig, StitchedViTForImageClassification)]
for _config, _model in [(TLEGConfig, TLEGModel), (SWSConfig, SWSModel), (LabelQueryConfig, LabelQueryForMultiLabelClassification), *_POOL]:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
for _config, _model in _POOL:
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)

__all__ = [
    "LabelQueryConfig",
    "LabelQueryForMultiLabelClassification",
    "MultiLabelOutput",
    "LearngenePoolConfig",
    "LearngenePoolModel",
    "SWSConfig",
    "SWSModel",
    "StitchedViTConfig",
    "StitchedViTForImageClassification",
    "TLEGConfig",
    "TLEGModel",
]
