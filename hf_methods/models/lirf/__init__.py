"""LIRF (Learning with Recoverable Forgetting): deposit = a target network that forgets the deposit classes + a
deposit module that keeps them; withdrawal = the recover network built from both."""

from ...registry import register_models
from .configuration_lirf import LIRFConfig, LIRFDepositConfig, LIRFRecoverConfig
from .metrics import harmonic_mean, lirf_compute_metrics, lirf_metrics
from .modeling_lirf import (
    LIRFDepositModule,
    LIRFModel,
    LIRFOutput,
    LIRFRecoverModel,
    LIRFRecoverOutput,
    combine_logits,
    target_card,
)
from .split import split_model, split_points, upper_fingerprint

__all__ = [
    "LIRFConfig",
    "LIRFDepositConfig",
    "LIRFDepositModule",
    "LIRFModel",
    "LIRFOutput",
    "LIRFRecoverConfig",
    "LIRFRecoverModel",
    "LIRFRecoverOutput",
    "combine_logits",
    "harmonic_mean",
    "lirf_compute_metrics",
    "lirf_metrics",
    "split_model",
    "split_points",
    "target_card",
    "upper_fingerprint",
]

register_models(LIRFConfig, LIRFModel)
register_models(LIRFDepositConfig, LIRFDepositModule)
register_models(LIRFRecoverConfig, LIRFRecoverModel, auto=("AutoModel", "AutoModelForImageClassification"))
