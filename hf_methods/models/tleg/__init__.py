from ...registry import register_models
from .configuration_tleg import TLEGConfig
from .modeling_tleg import TLEGModel

__all__ = ["TLEGConfig", "TLEGModel"]

register_models(TLEGConfig, TLEGModel)
