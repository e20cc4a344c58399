from ...registry import register_models
from .configuration_dpc import DPCModelConfig
from .modeling_dpc import DPCForImageClassification, DPCNetwork, DPCOutput

__all__ = ["DPCForImageClassification", "DPCModelConfig", "DPCNetwork", "DPCOutput"]

register_models(DPCModelConfig, DPCForImageClassification, auto=("AutoModel", "AutoModelForImageClassification"))
