"""hf-methods: learngenes and distillation as Hugging Face-native models and Trainers."""

__version__ = "0.1.0"

from .engine import ExpansionReport, LearngeneConfig, LearngeneModel, register_architecture  # noqa: E402
from .models import SWSConfig, SWSModel, TLEGConfig, TLEGModel  # noqa: E402

__all__ = [
    "ExpansionReport",
    "LearngeneConfig",
    "LearngeneModel",
    "SWSConfig",
    "SWSModel",
    "TLEGConfig",
    "TLEGModel",
    "__version__",
    "register_architecture",
]
