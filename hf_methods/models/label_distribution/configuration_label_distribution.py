"""Config of a label-distribution model: any transformers classifier whose softmax is read as a label distribution."""

from __future__ import annotations

import dataclasses

from transformers import CONFIG_MAPPING, PreTrainedConfig

from ...engine.learngene import _known_config_keys
from ..label_query.configuration_label_query import _NOT_ARCHITECTURE_KEYS, build_backbone_config


class LabelDistributionConfig(PreTrainedConfig):
    r"""A label-distribution learner (LDL): a classifier backbone (any transformers `...ForImageClassification` or
    `...ForSequenceClassification`: ViT, BERT, the project's VGG / ResNet-12, ...) whose softmax over `num_labels` is
    the predicted distribution, trained with KL(d || p).

    Args:
        backbone_config: the classifier's config as a dict (`ViTConfig(...).to_dict()`) or a `PreTrainedConfig`; its
            labels are replaced by this config's.
        backbone_model_type: its transformers `model_type`; taken from `backbone_config["model_type"]` when left out.
        num_labels / id2label: the labels the distributions are over.
    """

    model_type = "hf_methods_label_distribution"
    backbone_config: dict | None = None
    backbone_model_type: str | None = None

    def __post_init__(self, **kwargs):
        unknown = sorted(
            set(kwargs)
            - _known_config_keys(type(self))
            - {"num_labels", "attn_implementation", "experts_implementation"}
        )
        if unknown:
            base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
            own = sorted(f.name for f in dataclasses.fields(type(self)) if f.name not in base)
            raise ValueError(
                f"LabelDistributionConfig got unknown field(s) {unknown}. Its own fields are {own}; remove or rename "
                "the unknown ones (backbone settings go inside backbone_config)."
            )
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        self._normalize_backbone()
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2 (a distribution over labels), got {self.num_labels}.")

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
        model_type = self.backbone_model_type or config.get("model_type")
        if model_type is None:
            raise ValueError(
                "`backbone_model_type` is missing: backbone_config has no 'model_type' key; set backbone_model_type "
                "to the backbone's model type, e.g. 'vit', 'bert' or 'hf_methods_vgg'."
            )
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"`backbone_model_type`={model_type!r} is not a registered transformers model type.")
        if model_type == self.model_type:
            raise ValueError("`backbone_model_type` cannot be a label-distribution model; give the backbone's type.")
        values = {k: v for k, v in config.items() if k not in ("id2label", "label2id", "num_labels", "problem_type")}
        canonical = build_backbone_config(model_type, values).to_dict()
        drop = (*_NOT_ARCHITECTURE_KEYS, "id2label", "label2id", "problem_type")
        self.backbone_config = {k: v for k, v in canonical.items() if k not in drop}
        self.backbone_model_type = model_type

    def get_backbone_config(self) -> PreTrainedConfig:
        """The backbone's own transformers config, with this config's labels."""
        if self.backbone_config is None:
            raise ValueError(
                "LabelDistributionConfig.backbone_config is empty; give the backbone's config, e.g. "
                "LabelDistributionConfig(backbone_config=ViTConfig(...).to_dict(), id2label=...)."
            )
        return build_backbone_config(
            self.backbone_model_type, {**self.backbone_config, "id2label": dict(self.id2label)}
        )
