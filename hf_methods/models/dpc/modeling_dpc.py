"""DPC's classifier: one or two networks, each with DPC's two heads, as one `PreTrainedModel`.

DPC (Zong et al., AAAI 2024) co-trains two networks. Each has head 1 (its own classifier: the supervised EDL loss,
the clean/noisy margins and the prediction) and head 2 (a small MLP on the same features: the unlabeled MixMatch term
only). The prediction is the sum of both networks' head-1 logits, so the saved model is what the paper tests, and an
`image-classification` pipeline runs it. The networks are any transformers image classifiers; head 2 reads the input
of the network's final `nn.Linear` with a forward pre-hook, so no network needs a special forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel
from .configuration_dpc import DPCModelConfig


@dataclass
class DPCOutput(ModelOutput):
    """Output of a DPC classifier.

    Args:
        loss: cross-entropy of `logits` on class-index `labels`, when they are given (what `Trainer.evaluate`
            reports; DPC's trainers compute their own losses).
        logits: head-1 logits summed over the networks (one network's when `network=` is given), (batch, num_labels).
        aux_logits: head-2 logits, summed the same way.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_logits: torch.Tensor | None = None


class DPCNetwork(nn.Module):
    """One network: an image classifier (`backbone`, whose classifier is head 1) and `aux_classifier` (head 2)."""

    def __init__(self, config: DPCModelConfig):
        super().__init__()
        self.backbone = AutoModelForImageClassification.from_config(config.get_backbone_config())
        self.classifier_name = config.classifier_name
        head = self.classifier
        self.aux_classifier = nn.Sequential(
            nn.Linear(head.in_features, config.aux_hidden_size),
            nn.ReLU(),
            nn.Dropout(config.aux_dropout),
            nn.Linear(config.aux_hidden_size, head.out_features),
        )

    @property
    def classifier(self) -> nn.Linear:
        modules = dict(self.backbone.named_modules())
        layer = modules.get(self.classifier_name)
        if not isinstance(layer, nn.Linear):
            found = type(layer).__name__ if layer is not None else "no such module"
            raise ValueError(
                f"classifier_name={self.classifier_name!r}: the network has {found}; DPC needs the name of its final "
                "nn.Linear in model.named_modules()."
            )
        return layer

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        gray = getattr(self.backbone.config, "num_channels", 3) == 1
        if gray and pixel_values.dim() == 4 and pixel_values.shape[1] == 3:  # RGB (a pipeline's gray image)
            pixel_values = pixel_values.mean(dim=1, keepdim=True)
        features = []
        hook = self.classifier.register_forward_pre_hook(lambda module, args: features.append(args[0]))
        try:
            logits = self.backbone(pixel_values=pixel_values, **kwargs).logits
        finally:
            hook.remove()
        return logits, self.aux_classifier(features[-1])


class DPCForImageClassification(HfMethodsModel, PreTrainedModel):
    """`config.num_networks` DPC networks (`networks[k]`, each a `DPCNetwork`).

    A network that reads one channel (the digits) also takes RGB images, averaged to gray (`pipeline()` makes RGB of
    every image; for a gray image this is exact).

    `forward(pixel_values, labels=None, network=None)` returns a `DPCOutput`: the head-1 and head-2 logits summed over
    the networks (the paper's test-time prediction), or those of `networks[network]` alone. With `per_network=True`,
    `pixel_values` is (num_networks, batch, ...), network k reads `pixel_values[k]`, and the logits are
    (num_networks, batch, num_labels), not summed: how `DPCTrainer` trains both networks in one forward.
    """

    config_class = DPCModelConfig
    method_name = "DPC"
    base_model_prefix = "dpc"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False

    def __init__(self, config: DPCModelConfig):
        super().__init__(config)
        self.networks = nn.ModuleList(DPCNetwork(config) for _ in range(config.num_networks))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """Head 2 as PyTorch's default `nn.Linear` init (the official code's); the networks initialize themselves."""
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        network: int | None = None,
        per_network: bool = False,
        **kwargs,
    ) -> DPCOutput:
        if pixel_values is None:
            raise ValueError("DPCForImageClassification.forward needs pixel_values.")
        if network is not None and not 0 <= network < len(self.networks):
            raise ValueError(f"network must be in [0, {len(self.networks)}), got {network!r}.")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("output_hidden_states", "return_dict")}
        if per_network:  # one call trains every network on its own inputs (one forward for DDP)
            if pixel_values.shape[0] != len(self.networks):
                raise ValueError(
                    f"per_network=True takes pixel_values of shape (num_networks={len(self.networks)}, batch, ...), "
                    f"got {tuple(pixel_values.shape)}."
                )
            heads = [net(x, **kwargs) for net, x in zip(self.networks, pixel_values)]
            return DPCOutput(logits=torch.stack([h[0] for h in heads]), aux_logits=torch.stack([h[1] for h in heads]))
        chosen = self.networks if network is None else [self.networks[network]]
        heads = [net(pixel_values, **kwargs) for net in chosen]
        logits = torch.stack([h[0] for h in heads]).sum(0)
        aux_logits = torch.stack([h[1] for h in heads]).sum(0)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        return DPCOutput(loss=loss, logits=logits, aux_logits=aux_logits)

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import run_model_card

        backbone = type(self.networks[0].backbone).__name__
        n = self.config.num_networks
        metrics = {}
        if results:
            metrics = {k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))}
        return run_model_card(
            self,
            repo_or_path,
            method="DPC",
            title=f"DPC classifier ({n} x {backbone})",
            description=(
                f"{n} {backbone} network{'s' if n > 1 else ''} trained with Dirichlet-based Prediction Calibration "
                "for noisy labels. Each network has DPC's two heads; the prediction is the sum of the networks' "
                "head-1 logits."
            ),
            tags=["dpc", "noisy-labels"],
            training_setup=(results or {}).get("training_setup"),
            metrics=metrics,
            dataset=(results or {}).get("dataset"),
            pipeline_tag="image-classification",
            input_format=(results or {}).get("input_format"),
        )
