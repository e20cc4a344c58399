from ...registry import register_models
from .configuration_proxy_tuned import ProxyTunedConfig
from .modeling_proxy_tuned import (
    ProxyTunedCache,
    ProxyTunedForCausalLM,
    ProxyTunedForSequenceClassification,
    ProxyTunedOutput,
    check_shared_output_space,
    combine_logits,
    proxy_from_small,
    proxy_tuned_card,
)

__all__ = [
    "ProxyTunedCache",
    "ProxyTunedConfig",
    "ProxyTunedForCausalLM",
    "ProxyTunedForSequenceClassification",
    "ProxyTunedOutput",
    "check_shared_output_space",
    "combine_logits",
    "proxy_from_small",
    "proxy_tuned_card",
]

# One config serves both tasks, so no AutoModel entry: the task class is the Auto class.
register_models(ProxyTunedConfig, ProxyTunedForCausalLM, auto=("AutoModelForCausalLM",))
register_models(ProxyTunedConfig, ProxyTunedForSequenceClassification, auto=("AutoModelForSequenceClassification",))
