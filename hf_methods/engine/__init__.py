"""The learngene engine: method-agnostic machinery every learngene builds on."""

from .architectures import ARCHITECTURES, ArchitectureSpec, register_architecture
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
    "register_architecture",
]
