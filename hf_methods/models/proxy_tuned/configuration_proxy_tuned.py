"""Config of a proxy-tuned model (Proxy-tuning, arXiv 2401.08565; Consistent Proxy Tuning, arXiv 2407.01155): a frozen
large model steered by the logit offset of a tuned small proxy, `z = z_large + alpha_test * (z_proxy - z_small)`.

The config names the large and small models by reference (Hub id or local folder, optional revision): their weights
are never part of a proxy-tuned checkpoint, only the proxy's are.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields

TASKS = ("causal-lm", "sequence-classification")


def check_alpha(value, field: str) -> float:
    """A finite real number (not a bool): the weight of the proxy's logit offset."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"`{field}` must be a finite number (the weight of z_proxy - z_small, 1.0 by default), got {value!r}."
        )
    return float(value)


class ProxyTunedConfig(PreTrainedConfig):
    r"""A proxy-tuned model: large model L (frozen), small base model S (frozen) and a tuned proxy θ (a tuned copy of
    S), combined at the logit level as `z_L + alpha_test * (z_θ - z_S)`.

    Args:
        task: `"causal-lm"` (token logits, `ProxyTunedForCausalLM`, generation) or `"sequence-classification"`
            (`ProxyTunedForSequenceClassification`).
        large_model_name_or_path, small_model_name_or_path: Hub ids or local folders of L and S. A local folder is
            written relative to the saved checkpoint when it is saved, so a tree holding both moves as one.
        large_model_revision, small_model_revision: pinned revisions (branch, tag or commit) of L and S on the Hub.
        proxy_config: the proxy's stock config (`proxy.config.to_dict()`), recorded on save; the proxy's weights and
            config live in the checkpoint's `proxy/` subfolder, a plain transformers model.
        alpha_test: weight of the offset at inference. CPT trains with `alpha_train`; the two are consistent (the
            training objective is the deployed model) when equal, 1.0 by default.
        vocab_size: size of the shared output space (vocabulary, or number of labels), checked on load.
    """

    model_type = "hf_methods_proxy_tuned"
    task: str = "causal-lm"
    large_model_name_or_path: str | None = None
    small_model_name_or_path: str | None = None
    large_model_revision: str | None = None
    small_model_revision: str | None = None
    proxy_config: dict | None = None
    alpha_test: float = 1.0
    vocab_size: int | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(
            self, kwargs, "the models' own settings live in their configs", allowed={"attn_implementation"}
        )
        super().__post_init__(**kwargs)
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {self.task!r}.")
        self.alpha_test = check_alpha(self.alpha_test, "alpha_test")
        for field in (
            "large_model_name_or_path",
            "small_model_name_or_path",
            "large_model_revision",
            "small_model_revision",
        ):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(
                    f"`{field}` must be a non-empty string (a Hub id or a local folder) or None, got {value!r}."
                )
        if self.proxy_config is not None:
            if isinstance(self.proxy_config, PreTrainedConfig):
                self.proxy_config = self.proxy_config.to_dict()
            if not isinstance(self.proxy_config, dict) or "model_type" not in self.proxy_config:
                raise ValueError(
                    "`proxy_config` must be the proxy's config as a dict with its model_type "
                    "(proxy.config.to_dict()), or None."
                )
        if self.vocab_size is not None and (
            isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 1
        ):
            raise ValueError(f"`vocab_size` must be a positive integer or None, got {self.vocab_size!r}.")
