"""A label-distribution learner on any transformers classifier (images or text).

Label distribution learning predicts, per example, how much each label describes it: a distribution, not one label.
The simplest model that does it on any backbone is the backbone's own classifier read through a softmax, trained with
KL(d || p). So the backbone is a stock `...ForImageClassification` / `...ForSequenceClassification` built from
`config.backbone_config`, and an `image-classification` / `text-classification` pipeline returns the predicted
distribution as its scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel
from ...trainers.ldl_losses import check_label_distributions, label_distribution_kl
from .configuration_label_distribution import LabelDistributionConfig


@dataclass
class LabelDistributionOutput(ModelOutput):
    """Output of a label-distribution learner.

    Args:
        loss: mean KL(label_distribution || distribution), when `label_distribution` is given.
        logits: (batch, num_labels).
        distribution: `softmax(logits)`, the predicted label distribution.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    distribution: torch.Tensor | None = None


def _classifier_auto_class(backbone_config):
    if type(backbone_config) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        return AutoModelForImageClassification
    if type(backbone_config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        return AutoModelForSequenceClassification
    raise ValueError(
        f"backbone_model_type={backbone_config.model_type!r} has no image or sequence classification model in "
        "transformers; use a classifier backbone such as 'vit', 'bert' or 'hf_methods_vgg'."
    )


class LabelDistributionModel(HfMethodsModel, PreTrainedModel):
    """`backbone` (a stock classifier) whose softmax is the predicted label distribution.

    `forward(pixel_values=... | input_ids=..., label_distribution=None, **backbone_inputs)` returns a
    `LabelDistributionOutput`; `label_distribution` (batch, num_labels) rows must be distributions (an error names the
    first row that is not).
    """

    config_class = LabelDistributionConfig
    method_name = "label distribution learning"
    base_model_prefix = "ldl"

    def __init__(self, config: LabelDistributionConfig):
        super().__init__(config)
        backbone_config = config.get_backbone_config()
        self.backbone = _classifier_auto_class(backbone_config).from_config(backbone_config)
        self.main_input_name = self.backbone.main_input_name
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        label_distribution: torch.Tensor | None = None,
        **kwargs,
    ) -> LabelDistributionOutput:
        """The inputs are named so that the `Trainer` keeps those columns (it drops what `forward` does not name)."""
        given = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids, "inputs_embeds": inputs_embeds}  # fmt: skip
        inputs = {k: v for k, v in given.items() if v is not None}
        for ignored in ("labels", "return_dict", "output_hidden_states"):
            kwargs.pop(ignored, None)
        logits = self.backbone(**inputs, **kwargs).logits
        loss = None
        if label_distribution is not None:
            if label_distribution.shape != logits.shape:
                raise ValueError(
                    f"label_distribution has shape {tuple(label_distribution.shape)} but the logits "
                    f"{tuple(logits.shape)}: one distribution over the {logits.shape[-1]} labels per example."
                )
            check_label_distributions(label_distribution)
            loss = label_distribution_kl(logits, label_distribution.to(logits.device)).mean()
        return LabelDistributionOutput(loss=loss, logits=logits, distribution=torch.softmax(logits.float(), dim=-1))

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import run_model_card

        backbone = type(self.backbone).__name__
        results = results or {}
        return run_model_card(
            self,
            repo_or_path,
            method="Label distribution learning",
            title=f"Label-distribution learner ({backbone})",
            description=(
                f"A {backbone} whose softmax over {self.config.num_labels} labels is a predicted label distribution "
                "(how much each label describes the input), trained with KL(d || p)."
            ),
            tags=["label-distribution-learning"],
            training_setup=results.get("training_setup"),
            metrics={k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))},
            dataset=results.get("dataset"),
            input_format=results.get("input_format"),
        )
