"""The learngene engine: method-agnostic machinery every learngene builds on."""

from .architectures import ARCHITECTURES, ArchitectureSpec, register_architecture
from .counting import count_flops, count_parameters, stored_parameter_ratio
from .learngene import GeneratedLayer, LearngeneConfig, LearngeneModel
from .report import ExpansionReport, TensorSource
from .teacher import select_teacher_layers, teacher_layer_indices

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
    "select_teacher_layers",
    "stored_parameter_ratio",
    "teacher_layer_indices",
]
