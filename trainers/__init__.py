"""Trainers of hf_methods: `transformers.Trainer` subclasses with their `TrainingArguments` configs."""

from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer, distillation_loss

__all__ = ["DistillationConfig", "DistillationTrainer", "distillation_loss"]
