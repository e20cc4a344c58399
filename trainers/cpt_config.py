"""Arguments for `ConsistentProxyTuningTrainer` (Consistent Proxy Tuning, arXiv 2407.01155)."""

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..models.proxy_tuned.configuration_proxy_tuned import check_alpha
from .frozen_models_config import FROZEN_DTYPES, FrozenModelsConfig

DTYPES = FROZEN_DTYPES  # what `large_dtype` and `small_dtype` accept


@dataclass
class ConsistentProxyTuningConfig(FrozenModelsConfig):
    r"""
    [`FrozenModelsConfig`] for Consistent Proxy Tuning: the proxy θ (the trained model, a copy of the small model S
    at the start) is trained through the deployed combination with the frozen large model L and the frozen S,

        loss = CE(z_L + alpha_train * (z_θ - z_S), y)        (causal LMs: shifted, -100 ignored),

    so training optimizes the model used at inference, `z_L + alpha_test * (z_θ - z_S)`. Evaluation (`evaluate()`,
    `predict()`) scores that deployed combination, with `alpha_test`.

    There is no teacher and no distillation term: the large model is not a teacher to imitate, it is part of the
    model (use [`DistillationTrainer`] for KD).

    Parameters:
        alpha_train (`float`, *optional*, defaults to `1.0`):
            Weight of the proxy's offset in the training loss. Consistent with inference when equal to `alpha_test`
            (the paper's point; its values are not reported, 1.0 is inferred). 0 gives the proxy no gradient.
        alpha_test (`float`, *optional*, defaults to `1.0`):
            Weight of the offset at inference, used by evaluation and recorded for `ProxyTunedForCausalLM`.
        plain_proxy_tuning (`bool`, *optional*, defaults to `False`):
            The Proxy-tuning baseline: train θ alone, `CE(z_θ, y)`; the large and small models are then only needed
            for evaluation of the combination (without them, evaluation scores θ alone).
        large_model_name_or_path, small_model_name_or_path (`str`, *optional*):
            Hub ids or folders of L and S, used when the trainer gets no `large_model` / `small_model`.
        large_model_init_kwargs, small_model_init_kwargs (`dict` or `str`, *optional*):
            Keyword arguments of their `from_pretrained` (a JSON string on the command line).
        large_dtype, small_dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the frozen models run in; `"auto"` keeps the one they were given or loaded with. Logit arithmetic and
            the loss are float32.
        large_logits_column, small_logits_column (`str`, *optional*):
            Dataset columns holding each example's precomputed logits (see `cache_logits`), read instead of running
            the model, so a black box is queried once per example rather than once per epoch. For causal LMs a row is
            (sequence length x vocabulary) floats: 4 bytes each in float32 (2 in float16), e.g. 512 tokens x 32k
            vocabulary = 64 MiB per example in float32; budget disk and memory accordingly.
    """

    frozen_models: ClassVar[tuple[str, ...]] = ("large", "small")
    _VALID_DICT_FIELDS = FrozenModelsConfig._VALID_DICT_FIELDS + ["large_model_init_kwargs", "small_model_init_kwargs"]

    alpha_train: float = field(
        default=1.0,
        metadata={
            "help": "Weight of z_proxy - z_small in the training loss CE(z_large + alpha_train * (z_proxy - "
            "z_small), y); consistent with inference when equal to alpha_test."
        },
    )
    alpha_test: float = field(
        default=1.0, metadata={"help": "Weight of z_proxy - z_small at inference (and in evaluation)."}
    )
    plain_proxy_tuning: bool = field(
        default=False,
        metadata={
            "help": "Baseline Proxy-tuning: train the proxy alone with CE(z_proxy, y); the large and small "
            "models are only used to evaluate the combination."
        },
    )
    large_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or folder of the frozen large model, when no `large_model` is given."}
    )
    small_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or folder of the frozen small base model, when no `small_model` is given."},
    )
    large_model_init_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments for the large model's `from_pretrained` (dict or JSON)."}
    )
    small_model_init_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments for the small model's `from_pretrained` (dict or JSON)."}
    )
    large_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Dtype the large model runs in; 'auto' keeps its own."}
    )
    small_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Dtype the small base model runs in; 'auto' keeps its own."}
    )
    large_logits_column: str | None = field(
        default=None, metadata={"help": "Dataset column of precomputed large-model logits (see `cache_logits`)."}
    )
    small_logits_column: str | None = field(
        default=None, metadata={"help": "Dataset column of precomputed small-model logits (see `cache_logits`)."}
    )

    def __post_init__(self):
        super().__post_init__()  # checks the dtypes and init kwargs of the large and small models
        self.alpha_train = check_alpha(self.alpha_train, "alpha_train")
        self.alpha_test = check_alpha(self.alpha_test, "alpha_test")
        if not isinstance(self.plain_proxy_tuning, bool):
            raise ValueError(f"`plain_proxy_tuning` must be True or False, got {self.plain_proxy_tuning!r}.")
        for name in (
            "large_model_name_or_path",
            "small_model_name_or_path",
            "large_logits_column",
            "small_logits_column",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"`{name}` must be a non-empty string or None, got {value!r}.")
        if self.large_logits_column is not None and self.large_logits_column == self.small_logits_column:
            raise ValueError(
                f"`large_logits_column` and `small_logits_column` are both {self.large_logits_column!r}; "
                "the two models' logits need their own columns."
            )
