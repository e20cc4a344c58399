"""hf-methods: learngenes and distillation as Hugging Face-native models and Trainers.

Every method registers itself from its own folders (`hf_methods.registry`); importing the package discovers them,
registers their model classes with the transformers Auto classes and exports those classes here.

One exception keeps the command list instant: the `hf-methods` console command with no argument or `--help` only
lists the commands, so the package then discovers the methods' declarations (`recipes/*/__init__.py`, which import
nothing heavy) and skips the model classes (torch, transformers: seconds of imports).
"""

import os
import sys

__version__ = "0.1.0"

from . import registry  # noqa: E402


def _listing_commands_only() -> bool:
    """Whether this process is `hf-methods` / `hf-methods --help` (the console script, nothing else to do)."""
    return os.path.basename(sys.argv[0]) == "hf-methods" and sys.argv[1:] in ([], ["-h"], ["--help"])


if _listing_commands_only():
    registry.discover("hf_methods.recipes")
else:
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
