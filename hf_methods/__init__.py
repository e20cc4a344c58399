"""hf-methods: learngenes and distillation as Hugging Face-native models and Trainers.

Every method registers itself from its own folders (`hf_methods.registry`); importing the package discovers them,
registers their model classes with the transformers Auto classes and exports those classes here.
"""

__version__ = "0.1.0"

from . import registry
from .engine import (
    ExpansionReport,
    LearngeneConfig,
    LearngeneModel,
    register_architecture,
    select_teacher_layers,
)

registry.export(ExpansionReport, LearngeneConfig, LearngeneModel, register_architecture, select_teacher_layers)
registry.discover("hf_methods.models", "hf_methods.recipes")
globals().update(registry.exports())
__all__ = sorted(["__version__", *registry.exports()])
