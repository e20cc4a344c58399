"""DN-ILDL (inaccurate label distribution learning with dependent noise): the ADMM solver and the model that stores a
fitted one."""

from ...registry import register_models
from .configuration_dn_ildl import DNILDLConfig
from .modeling_dn_ildl import DNILDLForLabelDistribution
from .solver import DNILDL, knn_laplacian, row_shrink, singular_value_threshold

__all__ = [
    "DNILDL",
    "DNILDLConfig",
    "DNILDLForLabelDistribution",
    "knn_laplacian",
    "row_shrink",
    "singular_value_threshold",
]

register_models(DNILDLConfig, DNILDLForLabelDistribution)
