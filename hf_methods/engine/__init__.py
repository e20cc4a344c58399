"""The learngene engine: method-agnostic machinery every learngene builds on."""

from .architectures import ARCHITECTURES, ArchitectureSpec, register_architecture
from .counting import count_flops, count_parameters, stored_parameter_ratio
from .learngene import GeneratedLayer, LearngeneConfig, LearngeneModel
from .report import ExpansionReport, TensorSource

__all__ = [
    "ARCHITECTURES",
    "ArchitectureSpec",
    "ExpansionReport",
    "GeneratedLayer",
    "LearngeneConfig",
    "LearngeneModel",
    "TensorSource",
    "count_flops",
    "count_parameters",
    "register_architecture",
    "stored_parameter_ratio",
]
