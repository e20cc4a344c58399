from ...registry import register_models
from .configuration_sws import SWSConfig
from .modeling_sws import PUBLISHED_LAYERS_SOURCE, SWSModel, default_layers_source

__all__ = ["PUBLISHED_LAYERS_SOURCE", "SWSConfig", "SWSModel", "default_layers_source"]

register_models(SWSConfig, SWSModel)
