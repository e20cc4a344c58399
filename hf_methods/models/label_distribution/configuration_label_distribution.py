"""Config of a label-distribution model: any transformers classifier whose softmax is read as a label distribution."""

from __future__ import annotations

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..label_query.configuration_label_query import labeled_backbone, labeled_backbone_config


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
        reject_unknown_fields(self, kwargs, "backbone settings go inside backbone_config")
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        self._normalize_backbone()
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2 (a distribution over labels), got {self.num_labels}.")

    def _normalize_backbone(self):
        labeled_backbone(self, "'vit', 'bert' or 'hf_methods_vgg'", drop=("problem_type",))

    def get_backbone_config(self) -> PreTrainedConfig:
        """The backbone's own transformers config, with this config's labels."""
        return labeled_backbone_config(self)
