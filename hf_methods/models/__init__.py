"""hf_methods model classes, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel

from .sws import SWSConfig, SWSModel
from .tleg import TLEGConfig, TLEGModel

for _config, _model in [(TLEGConfig, TLEGModel), (SWSConfig, SWSModel)]:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

__all__ = ["SWSConfig", "SWSModel", "TLEGConfig", "TLEGModel"]
