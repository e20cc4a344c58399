"""The learngene engine: a compact `PreTrainedModel` whose forward runs a stock transformers architecture with
per-layer weights generated from the learngene, and `expand()` into plain stock models of any depth.

A method only says how its layer parameters look (`build_gene`) and what weights layer `i` of a depth-`D`
network gets (`layer_parameters`); everything else (the auxiliary forward, activation checkpointing,
save/load, strict expansion with an account of every tensor) lives here once.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import re

import torch
from torch import nn
from torch.func import functional_call
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel

from ..compat import (
    build_from_config,
    built_whole,
    clear_initialized,
    gradient_checkpointing_layer,
    mark_initialized,
)
from ..modeling import HfMethodsModel, with_card_push
from .architectures import canonical_key, layer_list, resolve_model_class, spec_for
from .report import ExpansionReport

logger = logging.getLogger(__name__)

# Keys a saved PreTrainedConfig carries that are not dataclass fields.
_CONFIG_BOOKKEEPING = {
    "model_type",
    "transformers_version",
    "_name_or_path",
    "name_or_path",
    "output_attentions",
    "auto_map",
    "torch_dtype",
}

# Attributes transformers or hf_methods set on live configs (Trainer sets use_cache; expand sets the ancestry;
# init_from_teacher records which teacher initialized a learngene, and how).
_RUNTIME_CONFIG_KEYS = {"use_cache", "learngene_ancestry", "teacher_init"}

# The deepest network a learngene config (`aux_num_layers`, SWS `stage_sizes`), `expand(num_layers)` or
# `descendant_num_parameters` accepts. Real transformers stop near 100 layers; the bound turns a typo such as 10**9
# into an error instead of an allocation that runs the machine out of memory.
MAX_NUM_LAYERS = 1024

# Architectures whose attention splits hidden_size into num_attention_heads equal heads. ViT builds a narrower
# attention silently when the heads do not divide the width; others may set an explicit head_dim instead.
_HEADS_SPLIT_HIDDEN = {"vit", "bert", "gpt2", "llama"}


def _known_config_keys(config_cls: type) -> set[str]:
    fields = {f.name for f in dataclasses.fields(config_cls)} | set(getattr(config_cls, "attribute_map", {}))
    return fields | _CONFIG_BOOKKEEPING | _RUNTIME_CONFIG_KEYS


# what transformers passes to any config at run time (a task head's label count, the attention backends)
RUNTIME_CONFIG_KWARGS = frozenset({"num_labels", "attn_implementation", "experts_implementation"})


def reject_unknown_fields(config: PreTrainedConfig, kwargs: dict, hint: str = "", allowed=RUNTIME_CONFIG_KWARGS):
    """The check every hf-methods config runs first in `__post_init__`: a keyword that is none of its fields (nor
    of `PreTrainedConfig`'s, nor in `allowed`) is a typo or a setting in the wrong place, so it is a ValueError that
    names it, lists the config's own fields and says where such settings go (`hint`), instead of a silent
    attribute."""
    unknown = sorted(set(kwargs) - _known_config_keys(type(config)) - set(allowed))
    if unknown:
        base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
        own = sorted(f.name for f in dataclasses.fields(type(config)) if f.name not in base)
        raise ValueError(
            f"{type(config).__name__} got unknown field(s) {unknown}. Its own fields are {own}; remove or rename the "
            f"unknown ones{f' ({hint})' if hint else ''}."
        )


class LearngeneConfig(PreTrainedConfig):
    r"""Config shared by every learngene: which stock architecture it expands into, and the auxiliary depth.

    Args:
        base_model_class: transformers class of the auxiliary network and of every descendant
            (e.g. `"ViTForImageClassification"`, `"BertForSequenceClassification"`, `"GPT2LMHeadModel"`).
        base_config: the stock config (`config.to_dict()`, a dict) of that architecture; its depth is ignored. Its
            `num_attention_heads` must divide its `hidden_size`.
        aux_num_layers: depth L of the auxiliary network the learngene is trained in, 1 .. `MAX_NUM_LAYERS` (1024).
    """

    model_type = "hf_methods_learngene"
    base_model_class: str = "ViTForImageClassification"
    base_config: dict | None = None
    aux_num_layers: int = 12

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs, "architecture settings go inside base_config", allowed=())
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        self.validate_learngene()
        base = self.base_config or {}
        if base.get("id2label"):  # the learngene's label space is its base architecture's
            self.id2label = {int(k): v for k, v in base["id2label"].items()}
            self.label2id = {v: int(k) for k, v in base["id2label"].items()}

    def validate_learngene(self):
        cls = resolve_model_class(self.base_model_class)
        if self.base_config is not None and not isinstance(self.base_config, dict):
            raise ValueError(
                f"base_config must be a dict (a stock config's to_dict()), got a {type(self.base_config).__name__}; "
                f"build the config with {type(self).__name__}.from_base(stock_config_or_model)."
            )
        base = dict(self.base_config or {})
        model_type = base.get("model_type", cls.config_class.model_type)
        if model_type != cls.config_class.model_type:
            raise ValueError(
                f"base_config has model_type={model_type!r} but base_model_class={self.base_model_class!r} "
                f"expects {cls.config_class.model_type!r}; make them agree."
            )
        spec_for(model_type)
        # base_config is not checked field by field: real Hub configs carry legacy keys (MiniLM's has
        # `gradient_checkpointing`, `position_embedding_type`) that stock transformers keeps as attributes.
        check_attention_heads(cls.config_class, base, {}, "base_config has")
        depth = self.aux_num_layers
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_NUM_LAYERS:
            raise ValueError(
                f"aux_num_layers must be an integer in 1..{MAX_NUM_LAYERS} (MAX_NUM_LAYERS, the depth of the "
                f"auxiliary network), got {depth!r}; pick a depth in that range."
            )

    @classmethod
    def from_base(cls, base: PreTrainedConfig | PreTrainedModel, base_model_class: str | None = None, **kwargs):
        """Config for a learngene of `base`'s architecture (a stock config or model, e.g. the teacher)."""
        if isinstance(base, PreTrainedModel):
            base_model_class = base_model_class or type(base).__name__
            base = base.config
        if base_model_class is None:
            raise ValueError("from_base(config) needs base_model_class, e.g. 'ViTForImageClassification'.")
        return cls(base_model_class=base_model_class, base_config=base.to_dict(), **kwargs)

    def stock_config(self, num_layers: int, **overrides) -> PreTrainedConfig:
        """The stock config of a depth-`num_layers` network of the base architecture."""
        return build_stock_config(resolve_model_class(self.base_model_class), self.base_config, num_layers, **overrides)


def _config_value(config_class: type, sources: tuple[dict, ...], name: str):
    """`name`'s value in the first of `sources` (dicts of config fields) that sets it, under `name` or under the field
    the config class maps it to (GPT-2: num_attention_heads -> n_head); None when none does."""
    keys = (name, getattr(config_class, "attribute_map", {}).get(name, name))
    for source in sources:
        for key in keys:
            if source.get(key) is not None:
                return source[key]
    return None


def check_attention_heads(config_class: type, base: dict, overrides: dict, where: str) -> None:
    """A ValueError unless `num_attention_heads` divides `hidden_size` in `base` with `overrides` applied (checked for
    the architectures of `_HEADS_SPLIT_HIDDEN`, and for others that do not set an explicit `head_dim`)."""
    model_type = config_class.model_type
    if model_type not in _HEADS_SPLIT_HIDDEN and _config_value(config_class, (overrides, base), "head_dim") is not None:
        return
    hidden = _config_value(config_class, (overrides, base), "hidden_size")
    heads = _config_value(config_class, (overrides, base), "num_attention_heads")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (hidden, heads)) or hidden % heads == 0:
        return  # unset or not a count: the stock config's own checks speak
    divisor = max(d for d in range(1, min(heads, hidden) + 1) if hidden % d == 0)
    raise ValueError(
        f"{where} hidden_size={hidden} and num_attention_heads={heads}: hidden_size must be divisible by "
        f"num_attention_heads, so use e.g. num_attention_heads={divisor}."
    )


def build_stock_config(cls: type, base_config: dict | None, num_layers: int, **overrides) -> PreTrainedConfig:
    """The config of a depth-`num_layers` model of class `cls` with the settings of `base_config` (a stock config's
    `to_dict()`), its depth replaced and `overrides` applied (each must be a field of the stock config; a depth field
    may only repeat `num_layers`)."""
    base = dict(base_config or {})
    base.pop("model_type", None)
    base.pop("transformers_version", None)
    known = _known_config_keys(cls.config_class)
    bad = sorted(set(overrides) - known - {"num_labels"})
    if bad:
        raise ValueError(f"{cls.config_class.__name__} has no field(s) {bad}; check the spelling of the overrides.")
    spec = spec_for(cls.config_class.model_type)
    aliases = getattr(cls.config_class, "attribute_map", {})
    depth_fields = {spec.depth_attr} | {alias for alias, field in aliases.items() if field == spec.depth_attr}
    for name in sorted(depth_fields & set(overrides)):
        if overrides[name] != num_layers:
            raise ValueError(
                f"the override {name}={overrides[name]!r} contradicts num_layers={num_layers}, the depth requested; "
                f"drop the override or ask for num_layers={overrides[name]!r}."
            )
    touched = {"hidden_size", "num_attention_heads"} | {aliases.get(k) for k in ("hidden_size", "num_attention_heads")}
    where = "the overrides give" if touched & set(overrides) else "base_config has"
    check_attention_heads(cls.config_class, base, overrides, where)
    base[spec.depth_attr] = num_layers
    if "num_labels" in overrides and "id2label" not in overrides:
        base.pop("id2label", None)
        base.pop("label2id", None)
    base.update(overrides)
    return AutoConfig.for_model(cls.config_class.model_type, **base)


class GeneratedLayer(gradient_checkpointing_layer()):
    """Layer `index` of the auxiliary network: a parameter-free copy of the stock layer, run with the weights
    the learngene generates for this index.

    Generation happens inside `forward`, so under activation checkpointing the recomputation regenerates the
    same weights from the learngene parameters; nothing per layer is stored or mutated.
    """

    def __init__(self, skeleton: nn.Module, index: int, owner: LearngeneModel):
        super().__init__()
        self.skeleton = skeleton
        self.index = index
        object.__setattr__(self, "_owner", owner)  # a reference, not a submodule (the owner holds us)

    def forward(self, *args, **kwargs):
        owner = self._owner
        params = owner.layer_parameters(self.index, owner.config.aux_num_layers)
        return functional_call(self.skeleton, params, args, kwargs)

    def __repr__(self):  # the skeleton's own repr would read the weights it no longer holds (Linear.bias)
        return f"{type(self).__name__}(index={self.index}, {type(self.skeleton).__name__} run with generated weights)"

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:  # per-layer attributes the stock forward reads (e.g. attention_type)
            modules = self.__dict__.get("_modules")
            if not modules or "skeleton" not in modules or name.startswith("__"):
                raise
            return getattr(modules["skeleton"], name)


def _gather_gene_under_zero3(model: LearngeneModel, args) -> None:
    """DeepSpeed ZeRO-3 gathers a module's parameters around that module's own forward, but the gene's parameters are
    read by every `GeneratedLayer` instead. Registered once as external parameters of the learngene, they are
    gathered for its whole forward and backward (and partitioned again after), as DeepSpeed documents for parameters
    used outside their owner. A no-op unless ZeRO-3 has partitioned them (their `ds_id`)."""
    if model.__dict__.get("_gene_registered_with_zero3"):
        return
    gene = [p for p in model.gene.parameters() if hasattr(p, "ds_id")]
    if gene:
        from deepspeed.runtime.zero.partition_parameters import register_external_parameter

        for param in gene:
            register_external_parameter(model, param)
        model._gene_registered_with_zero3 = True


def _strip_parameters(module: nn.Module) -> None:
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:  # a None entry (e.g. bias=False) stays: the stock forward reads it
                del sub._parameters[name]
        if not sub._buffers:
            mark_initialized(sub)


def _check_depth(num_layers) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= MAX_NUM_LAYERS:
        raise ValueError(
            f"num_layers must be a positive integer (the descendant's depth) of at most {MAX_NUM_LAYERS} "
            f"(MAX_NUM_LAYERS), got {num_layers!r}."
        )


def _layer_index(key: str, layers_prefix: str) -> tuple[int, str] | None:
    m = re.match(re.escape(layers_prefix) + r"\.(\d+)\.(.+)$", key)
    return (int(m.group(1)), m.group(2)) if m else None


def _width_summary(teacher_config, own_config) -> str:
    fields = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "n_embd", "n_inner")
    diffs = [
        f"{f} {getattr(teacher_config, f, None)} vs {getattr(own_config, f, None)}"
        for f in fields
        if getattr(teacher_config, f, None) != getattr(own_config, f, None)
    ]
    return "teacher vs learngene: " + ", ".join(diffs) if diffs else "the layer shapes differ"


def _descendant_card(model, repo_id):
    from ..cards import descendant_card

    return descendant_card(model, repo_id)


class LearngeneModel(HfMethodsModel, PreTrainedModel):
    """Base of every learngene. Subclasses implement `build_gene()` and `layer_parameters(index, depth)`."""

    config_class = LearngeneConfig
    base_model_prefix = "learngene"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GeneratedLayer"]
    method_name = "learngene"
    gene_description = "the method's layer parameters"

    def __init__(self, config: LearngeneConfig):
        super().__init__(config)
        stock_cls = resolve_model_class(config.base_model_class)
        self.spec = spec_for(stock_cls.config_class.model_type)
        with built_whole():  # never partitioned as it is built: the template below must hold real weights
            self.base = build_from_config(stock_cls, config.stock_config(config.aux_num_layers))
        _, layers = layer_list(self.base, self.spec)
        template = copy.deepcopy(layers[0])  # a stock layer with stock init: the shape of the layer parameters
        self.layer_parameter_names = [name for name, _ in template.named_parameters()]
        self.gene = self.build_gene(template)
        for i, layer in enumerate(layers):
            _strip_parameters(layer)
            layers[i] = GeneratedLayer(layer, i, self)
        self.main_input_name = self.base.main_input_name
        self.post_init()
        # post_init gathers the stock model's `_no_split_modules`, the stock layer class among them. The gene's layers
        # (TLEG's theta_A, theta_B) are instances of that class whose forward never runs, so FSDP must not wrap them
        # as units of their own (accelerate's transformer-based wrap reads this set): the generated layer is the unit.
        self._no_split_modules = (set(self._no_split_modules) - {type(template).__name__}) | {"GeneratedLayer"}
        self.register_forward_pre_hook(_gather_gene_under_zero3)  # before DeepSpeed's own hooks, which come later
        generated = sorted(self.layer_parameters(0, config.aux_num_layers))
        if generated != sorted(self.layer_parameter_names):
            raise RuntimeError(f"{type(self).__name__}.layer_parameters does not cover the stock layer's parameters")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        with built_whole():  # under ZeRO-3 a learngene is partitioned when training starts, not as it loads
            return super().from_pretrained(*args, **kwargs)

    # --- what a method provides -------------------------------------------------------------------------
    def build_gene(self, template: nn.Module) -> nn.Module:
        """The module holding the method's layer parameters, built from a freshly initialized stock layer."""
        raise NotImplementedError

    def layer_parameters(self, index: int, depth: int) -> dict[str, torch.Tensor]:
        """Weights of layer `index` in a network of `depth` layers, keyed by the stock layer's parameter names."""
        raise NotImplementedError

    def describe_layer(self, index: int, depth: int) -> str:
        return f"layer {index} of {depth}"

    # --- stock-model behaviour, delegated -----------------------------------------------------------------
    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        **kwargs,
    ):
        named = dict(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
        )
        kwargs.update({k: v for k, v in named.items() if v is not None})
        return self.base(**kwargs)

    @property
    def accepts_loss_kwargs(self) -> bool:
        base = self.base
        if hasattr(base, "accepts_loss_kwargs"):
            return base.accepts_loss_kwargs
        params = inspect.signature(base.forward).parameters.values()
        return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)

    @property
    def loss_type(self):
        return getattr(self.base, "loss_type", None)

    @loss_type.setter
    def loss_type(self, value):  # PreTrainedModel.__init__ assigns it; ours follows the stock model
        pass

    def get_input_embeddings(self):
        return self.base.get_input_embeddings()

    def get_output_embeddings(self):
        return self.base.get_output_embeddings()

    def _set_gradient_checkpointing(
        self, enable=True, gradient_checkpointing_func=torch.utils.checkpoint.checkpoint, **kw
    ):
        super()._set_gradient_checkpointing(enable, gradient_checkpointing_func, **kw)
        # Only the generated layers checkpoint. A skeleton checkpointing on its own would recompute after
        # functional_call has returned, with no weights installed (the bug this engine exists to avoid).
        for module in self.modules():
            if isinstance(module, GeneratedLayer):
                for inner in module.skeleton.modules():
                    if hasattr(inner, "gradient_checkpointing"):
                        inner.gradient_checkpointing = False
        for inner in self.gene.modules():
            if hasattr(inner, "gradient_checkpointing"):
                inner.gradient_checkpointing = False

    def _init_weights(self, module):
        """Nothing to do: the stock model initialized itself and `build_gene` started from stock layers."""

    def fresh_layer(self, template: nn.Module) -> nn.Module:
        """A copy of `template` re-initialized by the stock architecture's own init (for extra layer sets)."""
        layer = copy.deepcopy(template)
        for module in layer.modules():
            clear_initialized(module)
            self.base._init_weights(module)
        return layer

    # --- starting from a pretrained teacher -------------------------------------------------------------------
    # The inits `init_from_teacher` accepts; the first is `from_teacher`'s default. "random" keeps the method's own
    # initialization of the layer parameters. A method that can fit its layer parameters to a teacher's layers
    # lists its fit first and implements `fit_gene`.
    teacher_inits: tuple[str, ...] = ("random",)

    @classmethod
    def from_teacher(
        cls,
        teacher: PreTrainedModel,
        init: str | None = None,
        copy_non_layer: bool = True,
        model_class: str | None = None,
        **config_kwargs,
    ):
        """A learngene of `teacher`'s architecture and width, initialized from the teacher's weights.

        The config is `config_class.from_base(teacher, model_class, **config_kwargs)` (`aux_num_layers` defaults to
        the teacher's depth where the method has that field free); then `init_from_teacher(teacher, init,
        copy_non_layer)`, whose account is kept in `model.teacher_init_report`. `init` defaults to the method's
        fit (the first of `teacher_inits`). Constructing the model from a config, as before, keeps the random init.
        """
        defaults = cls._teacher_config_defaults(teacher)
        config = cls.config_class.from_base(teacher, model_class, **{**defaults, **config_kwargs})
        model = cls(config)
        model.init_from_teacher(teacher, init=init, copy_non_layer=copy_non_layer)
        return model

    @classmethod
    def _teacher_config_defaults(cls, teacher: PreTrainedModel) -> dict:
        _, layers = layer_list(teacher, spec_for(teacher.config.model_type))
        return {"aux_num_layers": len(layers)}

    def init_from_teacher(
        self, teacher: PreTrainedModel, init: str | None = None, copy_non_layer: bool = True
    ) -> ExpansionReport:
        """Overwrite this learngene's parameters, in place, from a pretrained stock `teacher` of the same
        architecture and width (any depth).

        - `copy_non_layer=True`: the embeddings, final norm, head and any other tensor outside the layers are copied
          from the teacher where the teacher has the tensor with the same shape (a head whose label space differs,
          or a tensor the teacher lacks, keeps its init and is reported as new, with the reason).
        - `init`: how the layer parameters start, one of `teacher_inits` (default: the first, the method's fit).
          "random" keeps their current (stock) initialization.

        Returns (and keeps in `self.teacher_init_report`) an `ExpansionReport` with a row per learngene tensor:
        "teacher" (copied), "fit" (computed from the teacher's layers) or "new" (kept, with the reason), and records
        `{"teacher", "teacher_num_layers", "init", "copy_non_layer", ...}` in `config.teacher_init` (saved with the
        learngene). A teacher of another architecture, or whose layers differ in shape (width), is an error.
        """
        init = self.teacher_inits[0] if init is None else init
        if init not in self.teacher_inits:
            raise ValueError(
                f"init={init!r} is not a teacher init of {type(self).__name__}; use one of {list(self.teacher_inits)}."
            )
        teacher_layers = self._teacher_layers(teacher)
        # Everything that can fail happens before anything is written.
        with torch.no_grad():
            fitted = self.fit_gene(teacher_layers, init) if init != "random" else {}
        provenance = self.teacher_provenance(len(teacher_layers)) if init != "random" else {}
        gene = dict(self.gene.named_parameters())
        for name, param in gene.items():
            if init != "random" and name not in fitted:
                raise RuntimeError(f"{type(self).__name__}.fit_gene gave no value for gene.{name}")
            if init != "random" and tuple(fitted[name][0].shape) != tuple(param.shape):
                raise RuntimeError(
                    f"gene.{name}: the fit gives shape {tuple(fitted[name][0].shape)}, expected {tuple(param.shape)}"
                )
        report = ExpansionReport(self.method_name, self.config.aux_num_layers, type(self).__name__, origin="teacher")
        with torch.no_grad():
            self._copy_non_layer_from(teacher, report, copy_non_layer)
            for name, param in gene.items():
                if init == "random":
                    report.add(f"gene.{name}", param.shape, "new", "init='random': the method's own initialization")
                    continue
                value, detail = fitted[name]
                param.copy_(value.to(param.dtype))
                report.add(f"gene.{name}", param.shape, "fit", detail)
        self.config.teacher_init = {
            "teacher": teacher.name_or_path or None,
            "teacher_num_layers": len(teacher_layers),
            "init": init,
            "copy_non_layer": copy_non_layer,
            **provenance,
        }
        self.teacher_init_report = report
        logger.info(report.summary())
        return report

    def fit_gene(self, teacher_layers: list[dict[str, torch.Tensor]], init: str) -> dict[str, tuple[torch.Tensor, str]]:
        """The method's layer parameters computed from the teacher's layers (`teacher_layers[l]`: layer l's
        parameters, keyed like the stock layer's). Returns `{name in self.gene: (value, how it was computed)}`."""
        raise NotImplementedError(f"{type(self).__name__} cannot fit its layer parameters to a teacher.")

    def teacher_provenance(self, teacher_num_layers: int) -> dict:
        """Method-specific facts about a teacher fit, added to `config.teacher_init` (e.g. SWS's stage split)."""
        return {}

    def _teacher_layers(self, teacher) -> list[dict[str, torch.Tensor]]:
        """The teacher's layers as `{stock layer parameter name: tensor}`, checked against this learngene's layer."""
        if not isinstance(teacher, PreTrainedModel):
            raise TypeError(f"teacher must be a transformers PreTrainedModel, got {type(teacher).__name__}.")
        mine, theirs = self.base.config.model_type, teacher.config.model_type
        if theirs != mine:
            raise ValueError(
                f"the teacher is a {theirs} model ({type(teacher).__name__}) but this learngene is {mine} "
                f"({self.config.base_model_class}); a learngene starts only from a teacher of its own architecture: "
                f"build it with {type(self).__name__}.from_teacher(teacher)."
            )
        _, layers = layer_list(teacher, spec_for(theirs))
        expected = {name: tuple(t.shape) for name, t in self.layer_parameters(0, self.config.aux_num_layers).items()}
        result = []
        for index, layer in enumerate(layers):
            params = dict(layer.named_parameters())
            if set(params) != set(expected):
                raise ValueError(
                    f"teacher layer {index} has parameters {sorted(set(params) - set(expected))} the learngene's layer "
                    f"lacks and lacks {sorted(set(expected) - set(params))}; the teacher's layers are not built like "
                    "this learngene's (another configuration of the architecture)."
                )
            for name, shape in expected.items():
                if tuple(params[name].shape) != shape:
                    raise ValueError(
                        f"teacher layer {index} {name} has shape {tuple(params[name].shape)} but the learngene's layer "
                        f"has {shape}: the widths differ ({_width_summary(teacher.config, self.base.config)}). Build "
                        f"the learngene with the teacher's width: {type(self).__name__}.from_teacher(teacher) or "
                        f"{type(self.config).__name__}.from_base(teacher)."
                    )
            result.append(params)
        return result

    def _copy_non_layer_from(self, teacher, report, copy_non_layer: bool) -> None:
        available = non_layer_parameters(teacher, self.spec)
        same_labels = same_label_space(teacher.config, self.base.config)
        for name, param in self.base.named_parameters():
            key, row = canonical_key(self.base, name), f"base.{name}"
            value = available.get(key)
            if not copy_non_layer:
                report.add(row, param.shape, "new", "copy_non_layer=False: its own initialization")
            elif value is None:
                report.add(row, param.shape, "new", f"not in the teacher ({type(teacher).__name__})")
            elif key.startswith("head:") and not same_labels:
                labels = (getattr(teacher.config, "num_labels", None), getattr(self.base.config, "num_labels", None))
                why = (
                    f"new head: {labels[0]} -> {labels[1]} labels"
                    if labels[0] != labels[1]
                    else ("new head: label names differ")
                )
                report.add(row, param.shape, "new", why)
            elif tuple(value.shape) != tuple(param.shape):
                why = f"shape differs: teacher {tuple(value.shape)}, learngene {tuple(param.shape)}"
                logger.warning("init_from_teacher: %s keeps its own initialization (%s).", name, why)
                report.add(row, param.shape, "new", why)
            else:
                param.copy_(value.to(param.dtype))
                report.add(row, param.shape, "teacher", "copied")
        if copy_non_layer:
            mine = {canonical_key(self.base, n) for n, _ in self.base.named_parameters()}
            report.unused = sorted(k.split(":", 1)[1] for k in available if k not in mine)

    # --- the learngene as an artifact -----------------------------------------------------------------------
    def model_card(self, repo_or_path, results: dict | None = None):
        from ..cards import learngene_card

        return learngene_card(self, repo_or_path, results)

    def learngene_num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def layer_num_parameters(self) -> int:
        return sum(p.numel() for p in self.gene.parameters())

    def descendant_num_parameters(self, num_layers: int, model_class: str | None = None, **config_overrides) -> int:
        """Parameters of the depth-`num_layers` descendant, counted on the meta device (nothing is allocated)."""
        _check_depth(num_layers)
        cls = resolve_model_class(model_class or self.config.base_model_class)
        with torch.device("meta"):
            model = build_from_config(cls, self.config.stock_config(num_layers, **config_overrides))
        return sum(p.numel() for p in model.parameters())

    # --- expansion ------------------------------------------------------------------------------------------
    def expand(self, num_layers: int, model_class: str | type | None = None, **config_overrides) -> PreTrainedModel:
        """A plain stock model with `num_layers` layers initialized from this learngene.

        Every tensor of the result is accounted for in `model.expansion_report`: generated by the method's
        rule, copied from the learngene, or newly initialized with a reason (a head whose label space
        changed, or a head the learngene does not have). A tensor with no source or with the wrong shape
        raises, and nothing is returned.
        """
        _check_depth(num_layers)
        return self._expand(num_layers, model_class, config_overrides, self.layer_parameters, self.describe_layer)

    def _expand(self, num_layers, model_class, config_overrides, layer_parameters, describe_layer) -> PreTrainedModel:
        """`expand` with the layer rule given as functions `(index, depth)`, for methods whose `expand` takes
        extra arguments (SWS's `layers_source`)."""
        _check_depth(num_layers)
        heads = getattr(self.base.config, "num_attention_heads", None)
        if "num_attention_heads" in config_overrides and config_overrides["num_attention_heads"] != heads:
            logger.warning(
                "expanding with num_attention_heads=%s while the learngene was trained with %s: the attention "
                "weights are copied unchanged and regrouped into different heads.",
                config_overrides["num_attention_heads"],
                heads,
            )
        cls = resolve_stock_class(model_class, self.config.base_model_class, self.base.config.model_type, "learngene")
        target = build_from_config(cls, self.config.stock_config(num_layers, **config_overrides))
        report = ExpansionReport(self.method_name, num_layers, cls.__name__)
        fill_stock_model(
            target,
            self.base,
            self.spec,
            report,
            lambda index: layer_parameters(index, num_layers),
            lambda index: describe_layer(index, num_layers),
            layer_source="generated",
            origin="learngene",
            origin_class=self.config.base_model_class,
        )
        target.config.learngene_ancestry = {
            "method": self.method_name,
            "learngene": self.name_or_path or None,
            "num_layers": num_layers,
        }
        target.expansion_report = report
        with_card_push(target, _descendant_card)
        logger.info(report.summary())
        return target


def resolve_stock_class(model_class, default: str, model_type: str, origin: str) -> type:
    """The stock class to build (`model_class`: a class, a class name or None for `default`), which must be of the
    same architecture (`model_type`) as the `origin` ("learngene", "teacher") it inherits from."""
    name = model_class.__name__ if isinstance(model_class, type) else model_class
    cls = resolve_model_class(name or default)
    if cls.config_class.model_type != model_type:
        raise ValueError(
            f"model_class={cls.__name__} is a {cls.config_class.model_type} model but this {origin} is "
            f"{model_type}; pick a {model_type} class."
        )
    return cls


def same_label_space(a: PreTrainedConfig, b: PreTrainedConfig) -> bool:
    """Whether a classification head trained under config `a` means the same thing under config `b`."""
    return getattr(a, "num_labels", None) == getattr(b, "num_labels", None) and getattr(a, "id2label", None) == getattr(
        b, "id2label", None
    )


def non_layer_parameters(model: PreTrainedModel, spec) -> dict[str, torch.Tensor]:
    """The parameters of a stock model outside its stack of layers (embeddings, final norm, head, ...), keyed by
    `canonical_key` so that they match across head classes."""
    prefix, _ = layer_list(model, spec)
    return {
        canonical_key(model, name): param
        for name, param in model.named_parameters()
        if _layer_index(name, prefix) is None
    }


def fill_stock_model(
    target, source, spec, report, layer_parameters, describe_layer, *, layer_source, origin, origin_class
) -> None:
    """Set every parameter of the stock model `target`, in place, and account for it in `report`.

    Layer `index` of `target` gets `layer_parameters(index)` (recorded as `layer_source` with `describe_layer(index)`);
    every other tensor is copied from the stock model `source` (the learngene's auxiliary network, or a teacher) by
    its `canonical_key`, except a head whose label space changed or that `source` lacks (recorded as new, with the
    reason). A tensor with no source or with the wrong shape raises before anything is written. `origin` names the
    source in messages ("learngene", "teacher"), `origin_class` its class.
    """
    target_prefix, _ = layer_list(target, spec)
    available = non_layer_parameters(source, spec)
    used = set()
    generated: dict[int, dict[str, torch.Tensor]] = {}
    new_state = {}
    src_labels = getattr(source.config, "num_labels", None)
    tgt_labels = getattr(target.config, "num_labels", None)
    same_labels = same_label_space(source.config, target.config)
    with torch.no_grad():
        for name, param in target.named_parameters():
            shape = tuple(param.shape)
            hit = _layer_index(name, target_prefix)
            if hit is not None:
                index, sub = hit
                if index not in generated:
                    generated[index] = layer_parameters(index)
                value = generated[index].get(sub)
                if value is None:
                    raise ValueError(f"{name}: the {origin} has no layer parameter {sub!r}.")
                _check_shape(name, shape, value, origin)
                new_state[name] = value
                report.add(name, shape, layer_source, describe_layer(index))
                continue
            key = canonical_key(target, name)
            value = available.get(key)
            is_head = key.startswith("head:")
            if value is not None:
                used.add(key)
            if is_head and (value is None or not same_labels):
                why = (
                    f"new head: {src_labels} -> {tgt_labels} labels"
                    if value is not None and src_labels != tgt_labels
                    else "new head: label names differ"
                    if value is not None
                    else f"new head: not in the {origin} ({origin_class} -> {type(target).__name__})"
                )
                report.add(name, shape, "new", why)
                continue
            if value is None:
                raise ValueError(
                    f"{name}: no tensor in the {origin} maps to this descendant tensor; the {origin} was built for "
                    f"{origin_class}."
                )
            _check_shape(name, shape, value, origin)
            new_state[name] = value
            report.add(name, shape, origin, "copied")
        for name, buf in target.named_buffers():
            report.add(name, buf.shape, "config", "buffer computed from the config")
        for name, param in target.named_parameters():
            if name in new_state:
                param.copy_(new_state[name].to(param.dtype))
    report.unused = sorted(k.split(":", 1)[1] for k in available if k not in used)


def _check_shape(name, shape, value, origin="learngene"):
    if tuple(value.shape) != shape:
        what = "a learngene expands in depth only, so keep the width and other shape settings of its base_config"
        if origin != "learngene":
            what = f"selecting a {origin}'s layers changes depth only, so keep the {origin}'s width and other shapes"
        raise ValueError(
            f"{name}: the {origin} gives shape {tuple(value.shape)} but the descendant expects {shape}; {what}."
        )
