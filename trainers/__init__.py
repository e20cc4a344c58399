"""Trainers of hf_methods: `transformers.Trainer` subclasses with their `TrainingArguments` configs."""

from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer, distillation_loss
from .pool_distillation_config import PoolDistillationConfig
from .pool_distillation_trainer import (
    LearngenePoolDistillationTrainer,
    load_feature_projectors,
    matched_layers,
    pool_distillation_loss,
)

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "LearngenePoolDistillationTrainer",
    "PoolDistillationConfig",
    "distillation_loss",
    "load_feature_projectors",
    "matched_layers",
    "pool_distillation_loss",
]
