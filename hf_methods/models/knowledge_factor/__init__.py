"""Knowledge Factorization (KF): a common-knowledge network shared by every task plus one task-specific network per
task, assembled into any subset of tasks without fine-tuning."""

from ...registry import register_models
from .configuration_knowledge_factor import KnowledgeFactorConfig, hidden_state_widths
from .modeling_knowledge_factor import (
    KnowledgeFactorModel,
    KnowledgeFactorOutput,
    TaskSpecificNetwork,
    feature_projector,
    global_pool,
)

__all__ = [
    "KnowledgeFactorConfig",
    "KnowledgeFactorModel",
    "KnowledgeFactorOutput",
    "TaskSpecificNetwork",
    "feature_projector",
    "global_pool",
    "hidden_state_widths",
]

register_models(KnowledgeFactorConfig, KnowledgeFactorModel)
