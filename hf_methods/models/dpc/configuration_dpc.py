"""Config of a DPC classifier: one or two networks, each an image classifier with a second (auxiliary) head."""

from __future__ import annotations

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..label_query.configuration_label_query import labeled_backbone, labeled_backbone_config


class DPCModelConfig(PreTrainedConfig):
    r"""A DPC classifier ("Dirichlet-based Prediction Calibration for Learning with Noisy Labels", AAAI 2024).

    Each network is an image classifier (any transformers `...ForImageClassification` whose last layer is an
    `nn.Linear` named `classifier_name`: the project's VGG / ResNet-12, ViT, ...) whose classifier is DPC's head 1,
    plus head 2 (`aux_classifier`: Linear(features, aux_hidden_size) - ReLU - Dropout(aux_dropout) - Linear(.,
    num_labels)) on the same features, as in the official PreAct-ResNet. DPC co-trains two networks and predicts with
    the sum of their head-1 logits; `num_networks=1` is a single network (DPC-lite).

    Args:
        backbone_config: the network's config as a dict (`VGGConfig(...).to_dict()`) or a `PreTrainedConfig`; its
            labels are replaced by this config's.
        backbone_model_type: its transformers `model_type`; taken from `backbone_config["model_type"]` when left out.
        num_networks: 2 (DPC) or 1 (DPC-lite).
        aux_hidden_size: hidden width of head 2 (official 1024).
        aux_dropout: dropout of head 2, in [0, 1) (official 0.5).
        classifier_name: name of the network's final `nn.Linear` in its `named_modules()` (head 1).
        num_labels / id2label: the classes.
    """

    model_type = "hf_methods_dpc"
    backbone_config: dict | None = None
    backbone_model_type: str | None = None
    num_networks: int = 2
    aux_hidden_size: int = 1024
    aux_dropout: float = 0.5
    classifier_name: str = "classifier"

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs, "network settings go inside backbone_config")
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        self._normalize_backbone()
        self.check_dpc()

    def _normalize_backbone(self):
        labeled_backbone(self, "'hf_methods_vgg' or 'vit'", drop=())

    def check_dpc(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        if self.num_networks not in (1, 2) or isinstance(self.num_networks, bool):
            raise ValueError(f"`num_networks` must be 2 (DPC) or 1 (DPC-lite), got {self.num_networks!r}.")
        if (
            isinstance(self.aux_hidden_size, bool)
            or not isinstance(self.aux_hidden_size, int)
            or self.aux_hidden_size < 1
        ):
            raise ValueError(f"`aux_hidden_size` must be a positive integer, got {self.aux_hidden_size!r}.")
        dropout = self.aux_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"`aux_dropout` must be in [0, 1), got {dropout!r}.")
        if not isinstance(self.classifier_name, str) or not self.classifier_name:
            raise ValueError(
                f"`classifier_name` must be a module name such as 'classifier', got {self.classifier_name!r}."
            )
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2, got {self.num_labels}.")

    def get_backbone_config(self) -> PreTrainedConfig:
        """The backbone's own transformers config, with this config's labels."""
        return labeled_backbone_config(self)
