"""Where the stack of identical layers lives in each supported stock transformers architecture.

Supporting another architecture is one `register_architecture` call: the path of the layer list inside the
base model (`model.base_model`) and the config attribute that holds the depth. Layer names are read from the
live model, never hard-coded, so transformers renaming a layer's parameters does not break the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import transformers
from torch import nn


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str
    layers: str  # dotted path of the nn.ModuleList of layers inside `model.base_model`
    depth_attr: str  # config attribute that holds the number of layers
    # Dotted path of the attention submodule inside one layer, whose output (first element when it returns a tuple)
    # is the attention branch after the output projection. Pre-norm (ViT, GPT-2, Llama): before the residual add.
    # Post-norm BERT: `BertAttention` also holds the residual add and LayerNorm, so its output includes both.
    attention: str | None = None


ARCHITECTURES: dict[str, ArchitectureSpec] = {}


def register_architecture(
    model_type: str, layers: str, depth_attr: str = "num_hidden_layers", attention: str | None = None
) -> None:
    """Teach the engine a new architecture (`model_type` as in its config). `attention` (the attention submodule's
    path inside one layer) is only needed by feature distillation of attention outputs (Learngene Pool stage 1)."""
    ARCHITECTURES[model_type] = ArchitectureSpec(model_type, layers, depth_attr, attention)


register_architecture("vit", "layers", attention="attention")
register_architecture("bert", "encoder.layer", attention="attention")  # output includes residual + LayerNorm
register_architecture("gpt2", "h", "n_layer", attention="attn")
register_architecture("llama", "layers", attention="self_attn")


def spec_for(model_type: str) -> ArchitectureSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(
            f"unsupported architecture model_type={model_type!r}: the learngene engine knows {known}. "
            "Add it with hf_methods.engine.register_architecture(model_type, layers='<path of the layer list>', "
            "depth_attr='<config depth field>')."
        ) from None


def resolve_model_class(name: str) -> type:
    """The stock transformers class called `name` (e.g. "ViTForImageClassification")."""
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        raise ValueError(
            f"base_model_class={name!r} is not a transformers model class; give a class name such as "
            "'ViTForImageClassification', 'BertForSequenceClassification', 'GPT2LMHeadModel' or 'LlamaForCausalLM'."
        )
    return cls


def layer_list(model: nn.Module, spec: ArchitectureSpec) -> tuple[str, nn.ModuleList]:
    """(full dotted name, module) of the layer list of a stock model."""
    target = model.base_model.get_submodule(spec.layers)
    for name, module in model.named_modules():
        if module is target:
            return name, target
    raise RuntimeError(f"layer list {spec.layers!r} not found in {type(model).__name__}")  # pragma: no cover


def canonical_key(model: nn.Module, key: str) -> str:
    """Name a tensor independently of the head class: "body:<name inside the base model>" or "head:<name>".

    `ViTModel` and `ViTForImageClassification` share the body, so a learngene trained with one expands into the other.
    """
    if model.base_model is model:
        return "body:" + key
    prefix = model.base_model_prefix + "."
    return "body:" + key[len(prefix) :] if key.startswith(prefix) else "head:" + key
