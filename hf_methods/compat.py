"""Every place hf-methods relies on something transformers, accelerate or huggingface_hub do not promise.

Private names, module paths, `ModelOutput` field names and Trainer hooks change between minor releases
(transformers 5.24 renamed the KV-cache argument and output field `past_key_values` to `cache`, which broke CPT on a
fresh install). Each such dependency lives here, once, as a small named shim; `tests/test_compat.py` checks every
shim against the installed versions and fails naming it when a release changes what it relies on. The README's
development section lists them. Code elsewhere in the package imports these names instead of reaching into the
libraries itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
from torch import nn

# --- KV cache name (transformers 5.24) --------------------------------------------------------------------------------


def _cache_name() -> str:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    for name in ("cache", "past_key_values"):
        if name in fields:
            return name
    raise ImportError(
        "hf_methods.compat.CACHE_NAME: transformers' CausalLMOutputWithPast has neither a `cache` (>= 5.24) nor a "
        "`past_key_values` (<= 5.23) field; this transformers release renamed the KV cache again."
    )


CACHE_NAME: str = _cache_name()
"""The name of the KV cache as a model's forward keyword and as a `ModelOutput` field: `cache` from transformers 5.24,
`past_key_values` before. Generation passes the cache under this name and reads it back from this output field."""


def output_cache(outputs):
    """The KV cache a model returned (None when it returned none), whatever the installed transformers calls it."""
    return getattr(outputs, CACHE_NAME, None)


def pop_cache_argument(kwargs: dict):
    """Remove and return the KV cache from forward keyword arguments given under either name (callers written for
    either release), refusing both at once."""
    given = {name: kwargs.pop(name) for name in ("cache", "past_key_values") if name in kwargs}
    values = [v for v in given.values() if v is not None]
    if len(values) > 1:
        raise ValueError("pass the KV cache once: `cache` and `past_key_values` name the same argument.")
    return values[0] if values else None


# --- accelerate: models prepared for inference only -----------------------------------------------------------------


def untrack_prepared_model(accelerator, model: nn.Module) -> None:
    """Drop a model prepared with `accelerator.prepare_model(..., evaluation_mode=True)` from the accelerator's list of
    trained models (the private `Accelerator._models`). A frozen teacher left there makes `Trainer.evaluate()` before
    `train()` believe the student is already prepared and skip preparing it."""
    models = accelerator._models
    if model in models:
        models.remove(model)


# --- transformers Trainer hooks we override ---------------------------------------------------------------------------

TRAINER_HOOKS: dict[str, tuple[str, ...]] = {
    # hook: the parameters (after self) our overrides take. Who overrides it and why:
    "_save": ("output_dir", "state_dict"),  # side modules saved beside the student; tied copies of gathered weights
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),  # side modules; the #43701 reload below
    "_load_best_model": (),  # same, for load_best_model_at_end
    "_get_num_items_in_batch": ("batch_samples", "device"),  # L2D counts images, not label entries
    "_set_signature_columns_if_needed": (),  # CPT keeps its cached-logits columns (reads `_signature_columns`)
}
"""Private `transformers.Trainer` methods that hf-methods trainers override. The Trainer attributes they also rely on
are `model_accepts_loss_kwargs` (whether `training_step` divides the loss by the accumulation steps) and
`_signature_columns` (the columns `remove_unused_columns` keeps)."""


MODEL_HOOKS: dict[str, tuple[str, ...]] = {
    # hook: the leading parameters (after self) our overrides take
    "_set_gradient_checkpointing": ("enable", "gradient_checkpointing_func"),  # the engine keeps skeletons unchecked
}
"""Private `transformers.PreTrainedModel` methods that hf-methods models override (`_init_weights`, the documented
custom-model hook, is not listed)."""


def add_signature_columns(trainer, columns) -> None:
    """Keep `columns` in the dataset although the model's forward does not take them (the Trainer's private
    `_signature_columns`, filled by `_set_signature_columns_if_needed`)."""
    for column in columns:
        if column and column not in trainer._signature_columns:
            trainer._signature_columns.append(column)


def checkpoint_keys_need_reload(saved_keys: set[str], model: nn.Module) -> bool:
    """Whether a checkpoint folder's tensor names differ from the model's own (a model whose `save_pretrained` renames
    keys, e.g. ViT). transformers 5.23-5.24 resume such a checkpoint with a raw `load_state_dict(strict=False)` that
    skips the renaming, so the weights silently stay unloaded (huggingface/transformers#43701); the trainers then
    reload it through `from_pretrained`. `tests/test_compat.py` fails once a release resumes these checkpoints itself,
    so the workaround can go."""
    return not saved_keys <= set(model.state_dict())


# --- transformers modeling internals ----------------------------------------------------------------------------------


def gradient_checkpointing_layer() -> type:
    """`transformers.modeling_layers.GradientCheckpointingLayer`: a layer whose `__call__` runs its forward through
    the model's checkpoint function once `gradient_checkpointing_enable()` is called (the learngene engine's generated
    layers regenerate their weights inside that recomputation)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return GradientCheckpointingLayer


def build_from_config(model_cls: type, config, **kwargs):
    """`model_cls._from_config(config, ...)`: a fresh model honouring the config's dtype / attention implementation
    and transformers' own init, as the Auto classes' `from_config` builds one, for a given (not auto-chosen) class."""
    return model_cls._from_config(config, **kwargs)


@contextlib.contextmanager
def built_whole():
    """Models built or loaded inside this block are whole, as without DeepSpeed, even under ZeRO-3: transformers would
    partition each one as it is built (`deepspeed.zero.Init` in `_from_config` and `from_pretrained`) and, loading,
    read the weights on rank 0 only (the other ranks getting them through the partitioned parameters). A learngene is
    compact and its constructor reads stock layers to shape its gene; ZeRO-3 partitions it when training starts
    instead. Hides transformers' ZeRO-3 config (its private `integrations.deepspeed._hf_deepspeed_config_weak_ref`, read
    by `is_deepspeed_zero3_enabled`) for the block."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def attn_implementation(config) -> str | None:
    """The attention implementation a config asks for (transformers' private `config._attn_implementation`)."""
    return getattr(config, "_attn_implementation", None)


def set_attn_implementation(config, value: str | None) -> None:
    if value is not None:
        config._attn_implementation = value


def mark_initialized(module: nn.Module) -> None:
    """Tell `PreTrainedModel.post_init` / `init_weights` to leave `module` alone (the private `_is_hf_initialized`
    flag its init pass sets and checks)."""
    module._is_hf_initialized = True


def clear_initialized(module: nn.Module) -> None:
    """Undo `mark_initialized` on `module` and its own tensors, so the architecture's `_init_weights` initializes it."""
    module.__dict__.pop("_is_hf_initialized", None)
    for tensor in module.parameters(recurse=False):
        tensor.__dict__.pop("_is_hf_initialized", None)


def vit_building_blocks() -> tuple[type, type]:
    """`(ViTEmbeddings, ViTLayer)` from `transformers.models.vit.modeling_vit` (not exported): the Learngene Pool builds
    stitched networks from the stock ViT's own embeddings and layers, so the weights stay interchangeable."""
    from transformers.models.vit.modeling_vit import ViTEmbeddings, ViTLayer

    return ViTEmbeddings, ViTLayer


# Which Auto class owns a model class: `transformers.models.auto.modeling_auto.MODEL_FOR_*_MAPPING_NAMES`.
_TASK_MAPPINGS = [
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
    ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "AutoModelForImageClassification"),
    ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "AutoModelForSequenceClassification"),
    ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "AutoModelForTokenClassification"),
    ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "AutoModelForAudioClassification"),
    ("MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES", "AutoModelForVideoClassification"),
    ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "AutoModelForMaskedLM"),
]


def auto_class_name_for(model_cls_name: str) -> str | None:
    """The name of the task Auto class (`AutoModelForCausalLM`, ...) whose mapping lists `model_cls_name`, or None."""
    from transformers.models.auto import modeling_auto

    for mapping, auto_name in _TASK_MAPPINGS:
        if model_cls_name in getattr(modeling_auto, mapping).values():
            return auto_name
    return None


def uses_causal_lm_loss(model: nn.Module) -> bool:
    """Whether a model's `loss_type` maps to transformers' causal-LM loss (`transformers.loss.loss_utils`)."""
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    return LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, vocab_size: int, num_items_in_batch=None):
    """transformers' own causal-LM loss (shift, -100 ignored, sum / `num_items_in_batch` when given)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    return ForCausalLMLoss(logits, labels, vocab_size=vocab_size, num_items_in_batch=num_items_in_batch)


CACHE_METHODS = (
    "get_seq_length",
    "reset",
    "reorder_cache",
    "crop",
    "batch_repeat_interleave",
    "batch_select_indices",
    "is_compileable",
    "is_croppable",
)
"""The `transformers.cache_utils.Cache` API that `ProxyTunedCache` implements over its three caches (generation,
beam search and assisted decoding call these)."""


def supports_default_dynamic_cache_hook() -> str:
    """The `GenerationMixin` class hook a model overrides to stop `generate()` from making its own DynamicCache."""
    return "_supports_default_dynamic_cache"


def auxiliary_head(model: nn.Module) -> nn.Module | None:
    """The auxiliary (FCN) head of a stock segmentation model: UperNet, BEiT, Data2VecVision and DPT keep it as
    `model.auxiliary_head` (None when `use_auxiliary_head=False`) and run it inside `forward` without returning its
    logits; RDD captures them with a forward hook on this module."""
    head = getattr(model, "auxiliary_head", None)
    return head if isinstance(head, nn.Module) else None


def optional_repo_file(repo_or_folder: str, filename: str) -> str | None:
    """A local path to `filename` in a model folder or Hub repo, or None when it is absent or unreachable
    (transformers' `cached_file` with its private `_raise_exceptions_for_*` switches)."""
    from transformers.utils.hub import cached_file

    try:
        return cached_file(
            str(repo_or_folder),
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):  # not a repo id, no such repo, offline
        return None


# --- huggingface_hub / transformers: where the Hub client is configured (tests) ------------------------------------


def hub_endpoint_patches(endpoint: str, cache_dir: str) -> list[tuple[object, str, object]]:
    """`(object, attribute, value)` triples that point the already-imported Hub clients at `endpoint` and switch
    offline mode off: huggingface_hub reads `HF_ENDPOINT` / `HF_HUB_OFFLINE` at import, its module-level `HfApi`
    keeps the endpoint, and transformers caches its own `HfApi` and offline check. The test suite's loopback Hub
    applies them with `monkeypatch.setattr` and undoes them after each test."""
    import huggingface_hub.hf_api
    import transformers.utils.hub
    from huggingface_hub import constants

    return [
        (constants, "ENDPOINT", endpoint),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"),
        (huggingface_hub.hf_api.api, "endpoint", endpoint),
        (constants, "HF_HUB_OFFLINE", False),
        (transformers.utils.hub, "is_offline_mode", lambda: False),
        (transformers.utils.hub, "_hf_api", None),
        (constants, "HF_HUB_CACHE", cache_dir),
    ]


def parameter_names(func) -> tuple[str, ...]:
    """Parameter names of `func` after `self` (used by the compat tests to check the Trainer hooks)."""
    names = list(inspect.signature(func).parameters)
    return tuple(names[1:] if names and names[0] == "self" else names)
