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
