"""Config of a label-query multi-label classifier: any transformers backbone plus an ML-Decoder-style head."""

from __future__ import annotations

from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedConfig

from ...engine.learngene import reject_unknown_fields

LOSS_REDUCTIONS = ("mean", "sum")

# Keys of a saved backbone config that say where it came from, not what it is: dropped so that a config saved twice
# (or loaded from a folder) has the same `backbone_config`.
_NOT_ARCHITECTURE_KEYS = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures")


def _positive_int(value, name: str):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def build_backbone_config(model_type: str, values: dict) -> PreTrainedConfig:
    """The backbone's transformers config from its `model_type` and field values."""
    return AutoConfig.for_model(model_type, **{k: v for k, v in values.items() if k != "model_type"})


_LABEL_KEYS = ("id2label", "label2id", "num_labels")


def labeled_backbone(config: PreTrainedConfig, example: str, drop: tuple[str, ...] = ()) -> None:
    """Normalize `config.backbone_config` / `config.backbone_model_type` of a config whose backbone is a classifier
    that takes the outer config's labels (DPC, label distribution): one canonical dict without its label keys (and
    `drop`), the model type checked. `example` names a backbone type in the error messages."""
    backbone = config.backbone_config
    if isinstance(backbone, PreTrainedConfig):
        backbone = backbone.to_dict()
    if backbone is None:
        return  # an empty config (transformers builds one to read defaults); the model refuses it
    if not isinstance(backbone, dict):
        raise TypeError(
            f"`backbone_config` must be a dict (e.g. VGGConfig(...).to_dict()) or a PreTrainedConfig, got "
            f"{type(backbone).__name__}."
        )
    model_type = config.backbone_model_type or backbone.get("model_type")
    if model_type is None:
        raise ValueError(
            "`backbone_model_type` is missing: backbone_config has no 'model_type' key; set backbone_model_type "
            f"to the backbone's model type, e.g. {example}."
        )
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"`backbone_model_type`={model_type!r} is not a registered transformers model type.")
    if model_type == config.model_type:
        raise ValueError(f"`backbone_model_type` cannot be a {type(config).__name__} model; give the backbone's type.")
    values = {k: v for k, v in backbone.items() if k not in (*_LABEL_KEYS, *drop)}
    canonical = build_backbone_config(model_type, values).to_dict()
    config.backbone_config = {
        k: v for k, v in canonical.items() if k not in (*_NOT_ARCHITECTURE_KEYS, *_LABEL_KEYS[:2], *drop)
    }
    config.backbone_model_type = model_type


def labeled_backbone_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """The backbone's own transformers config, with the outer config's labels (see `labeled_backbone`)."""
    if config.backbone_config is None:
        raise ValueError(
            f"{type(config).__name__}.backbone_config is empty; give the backbone's config, e.g. "
            f"{type(config).__name__}(backbone_config=VGGConfig(...).to_dict(), id2label=...)."
        )
    return build_backbone_config(
        config.backbone_model_type, {**config.backbone_config, "id2label": dict(config.id2label)}
    )


class LabelQueryConfig(PreTrainedConfig):
    r"""A multi-label classifier: a transformers backbone (any model whose `AutoModel` returns token features in
    `last_hidden_state`, e.g. ViT, BERT, or a CNN's feature map) and an ML-Decoder-style head with one query per
    class. The head's per-class decoder outputs are the *label-wise embeddings* that L2D distills.

    Args:
        backbone_config: the backbone's config as a dict (`ViTConfig(...).to_dict()`) or a `PreTrainedConfig`.
        backbone_model_type: the backbone's transformers `model_type` (`"vit"`, `"bert"`, ...); taken from
            `backbone_config["model_type"]` when left out.
        backbone_hidden_size: width of the backbone's token features; left out, `hidden_size` (or the last of
            `hidden_sizes`, CNNs) of the backbone config.
        d_model: width of the decoder and of the label-wise embeddings (official L2D / ML-Decoder: 768).
        num_decoder_layers: cross-attention decoder layers (ML-Decoder: 1).
        num_attention_heads: heads of the decoder's cross-attention; must divide `d_model` (ML-Decoder: 8).
        dim_feedforward: hidden width of the decoder's feed-forward block (ML-Decoder: 2048).
        decoder_dropout: dropout in the decoder (ML-Decoder: 0.1).
        learnable_queries: train the class queries (True) or keep them fixed at their random init (False, the
            official L2D / ML-Decoder setting: queries then only name the classes).
        loss_reduction: `"mean"` (default) or `"sum"` of the binary cross-entropy the model returns when given
            `labels`.
        num_labels / id2label: the classes; one query and one logit each.
    """

    model_type = "hf_methods_label_query"
    backbone_config: dict | None = None
    backbone_model_type: str | None = None
    backbone_hidden_size: int | None = None
    d_model: int = 768
    num_decoder_layers: int = 1
    num_attention_heads: int = 8
    dim_feedforward: int = 2048
    decoder_dropout: float = 0.1
    learnable_queries: bool = False
    loss_reduction: str = "mean"

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs, "backbone settings go inside backbone_config")
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        if self.problem_type is None:
            self.problem_type = "multi_label_classification"
        self._normalize_backbone()
        self.check_label_query()

    def _normalize_backbone(self):
        config = self.backbone_config
        if isinstance(config, PreTrainedConfig):
            config = config.to_dict()
        if config is None:
            return  # an empty config (transformers builds one to read defaults); the model refuses it
        if not isinstance(config, dict):
            raise TypeError(
                f"`backbone_config` must be a dict (e.g. ViTConfig(...).to_dict()) or a PreTrainedConfig, got "
                f"{type(config).__name__}."
            )
        given = config.get("model_type")
        model_type = self.backbone_model_type or given
        if model_type is None:
            raise ValueError(
                "`backbone_model_type` is missing: backbone_config has no 'model_type' key; set backbone_model_type "
                "to the backbone's transformers model type, e.g. 'vit' or 'bert'."
            )
        if given is not None and self.backbone_model_type is not None and given != self.backbone_model_type:
            raise ValueError(
                f"`backbone_model_type`={self.backbone_model_type!r} but backbone_config has model_type={given!r}; "
                "make them agree (or leave backbone_model_type out)."
            )
        if model_type not in CONFIG_MAPPING:
            raise ValueError(
                f"`backbone_model_type`={model_type!r} is not a transformers model type; use one such as 'vit', "
                "'bert' or 'resnet'."
            )
        if model_type == self.model_type:
            raise ValueError("`backbone_model_type` cannot be a label-query model; give the backbone's own type.")
        canonical = build_backbone_config(model_type, config).to_dict()  # defaults filled in, one spelling
        self.backbone_config = {k: v for k, v in canonical.items() if k not in _NOT_ARCHITECTURE_KEYS}
        self.backbone_model_type = model_type

    def check_label_query(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        if self.backbone_hidden_size is not None:
            _positive_int(self.backbone_hidden_size, "backbone_hidden_size")
        for name in ("d_model", "num_decoder_layers", "num_attention_heads", "dim_feedforward"):
            _positive_int(getattr(self, name), name)
        if self.d_model % self.num_attention_heads:
            raise ValueError(
                f"`num_attention_heads`={self.num_attention_heads} must divide `d_model`={self.d_model}; pick a "
                "head count that divides the decoder width."
            )
        dropout = self.decoder_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"`decoder_dropout` must be in [0, 1), got {dropout!r}.")
        if not isinstance(self.learnable_queries, bool):
            raise ValueError(f"`learnable_queries` must be True or False, got {self.learnable_queries!r}.")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"`loss_reduction` must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}.")
        if self.num_labels < 1:
            raise ValueError(f"`num_labels` must be at least 1 (one query per class), got {self.num_labels}.")
        if self.problem_type != "multi_label_classification":
            raise ValueError(
                f"`problem_type` must be 'multi_label_classification' (sigmoid per class), got {self.problem_type!r}."
            )

    def get_backbone_config(self) -> PreTrainedConfig:
        """The backbone's own transformers config."""
        if self.backbone_config is None:
            raise ValueError(
                "LabelQueryConfig.backbone_config is empty; give the backbone's config, e.g. "
                "LabelQueryConfig(backbone_config=ViTConfig(...).to_dict(), num_labels=...)."
            )
        return build_backbone_config(self.backbone_model_type, self.backbone_config)

    @property
    def token_feature_size(self) -> int:
        """Width of the backbone's token features that the head reads."""
        if self.backbone_hidden_size is not None:
            return self.backbone_hidden_size
        backbone = self.get_backbone_config()
        size = getattr(backbone, "hidden_size", None)
        if size is None and getattr(backbone, "hidden_sizes", None):
            size = backbone.hidden_sizes[-1]
        if not isinstance(size, int):
            raise ValueError(
                f"Cannot tell the width of a {self.backbone_model_type!r} backbone's features (its config has no "
                "hidden_size); set `backbone_hidden_size`."
            )
        return size
