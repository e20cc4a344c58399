from ...registry import register_models
from .configuration_gtl import GTLConfig
from .genes import (
    GRANULARITIES,
    ConvLayer,
    GeneMask,
    conv_layers,
    match_layers,
    mutate_mask,
    sample_mask,
)
from .modeling_gtl import GTLModel

__all__ = [
    "GRANULARITIES",
    "ConvLayer",
    "GTLConfig",
    "GTLModel",
    "GeneMask",
    "conv_layers",
    "match_layers",
    "mutate_mask",
    "sample_mask",
]

register_models(GTLConfig, GTLModel)
