"""Splitting an image classifier into a lower part (input -> features) and an upper part (features -> logits), as LIRF
needs: `upper(lower(x))` equals the classifier's logits.

The parts are `nn.Module`s that hold the classifier's own submodules (not copies), so loading a part's state dict
into a part of a freshly built classifier fills that classifier: how LIRF exports a stock target network.
"""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn


class ConvNetLower(nn.Module):
    """The first stages of a project VGG / ResNet-12, each followed by the max-pool: image -> feature map."""

    def __init__(self, stages, pool: nn.Module, num_channels: int):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.pool = pool
        self.num_channels = num_channels

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}; convert the images or use a model built for that many channels."
            )
        hidden = pixel_values
        for stage in self.stages:
            for block in stage:
                hidden = block(hidden)
            hidden = self.pool(hidden)
        return hidden


class ConvNetUpper(nn.Module):
    """The remaining stages, global average pooling, dropout and the classifier: feature map -> logits."""

    def __init__(self, stages, pool: nn.Module, avgpool: nn.Module, dropout: nn.Module, classifier: nn.Module):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.pool = pool
        self.avgpool = avgpool
        self.dropout = dropout
        self.classifier = classifier

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            for block in stage:
                hidden = block(hidden)
            hidden = self.pool(hidden)
        return self.classifier(self.dropout(self.avgpool(hidden).flatten(1)))


class ViTLower(nn.Module):
    """A ViT's patch embeddings and first encoder layers: image -> token states."""

    def __init__(self, embeddings: nn.Module, layers):
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = self.embeddings.patch_embeddings.projection.weight
        hidden = self.embeddings(pixel_values.to(weight.dtype))
        for layer in self.layers:
            hidden = layer(hidden, None)
        return hidden


class ViTUpper(nn.Module):
    """A ViT's remaining layers, final layer norm and classifier on the [CLS] token: token states -> logits."""

    def __init__(self, layers, layernorm: nn.Module, classifier: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.layernorm = layernorm
        self.classifier = classifier

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden, None)
        return self.classifier(self.layernorm(hidden)[:, 0, :])


def _kind(model: nn.Module) -> str:
    from transformers import ViTForImageClassification

    from ..convnets import ConvNetPreTrainedModel

    if isinstance(model, ConvNetPreTrainedModel):
        return "convnet"
    if isinstance(model, ViTForImageClassification):
        return "vit"
    raise ValueError(
        f"split_model splits the project's VGGForImageClassification / ResNet12ForImageClassification and "
        f"transformers' ViTForImageClassification, got {type(model).__name__}; train or convert the original model "
        "to one of those."
    )


def split_points(model: nn.Module) -> list[str]:
    """The names `split_model` accepts for `model`, shallowest first: the module that ends the lower part."""
    if _kind(model) == "convnet":
        return [f"stages.{i}" for i in range(len(model.stages))]
    return ["vit.embeddings"] + [f"vit.layers.{i}" for i in range(len(model.vit.layers))]


def split_model(model: nn.Module, split_module_name: str) -> tuple[nn.Module, nn.Module]:
    """(lower, upper) of an image classifier, with `upper(lower(pixel_values))` = `model(pixel_values).logits` (in
    eval mode). The lower part ends with (includes) `split_module_name`:

    - project VGG / ResNet-12: "stages.<i>" -> lower = stages 0..i (each with its max-pool), upper = the other stages,
      average pooling, dropout and classifier ("stages.<last>" leaves the head alone in the upper part);
    - transformers ViT: "vit.embeddings" or "vit.layers.<i>" -> lower = patch embeddings + layers 0..i, upper = the
      other layers, the final layer norm and the classifier on the [CLS] token.

    The parts share the model's modules (no copy). LIRF's official code splits ResNet-18 after layer2 (of 4): about
    half way, e.g. "stages.1" of a 3- or 4-stage network.
    """
    kind = _kind(model)
    names = split_points(model)
    if split_module_name not in names:
        raise ValueError(
            f"split_module_name={split_module_name!r} is not a split point of this {type(model).__name__}; it must "
            f"name the module that ends the lower part, one of {names}."
        )
    if kind == "convnet":
        k = int(re.fullmatch(r"stages\.(\d+)", split_module_name).group(1)) + 1
        lower = ConvNetLower(model.stages[:k], model.pool, model.config.num_channels)
        upper = ConvNetUpper(model.stages[k:], model.pool, model.avgpool, model.dropout, model.classifier)
        return lower, upper
    k = 0 if split_module_name == "vit.embeddings" else int(split_module_name.rsplit(".", 1)[1]) + 1
    layers = list(model.vit.layers)
    return ViTLower(model.vit.embeddings, layers[:k]), ViTUpper(layers[k:], model.vit.layernorm, model.classifier)


def upper_fingerprint(upper: nn.Module) -> str:
    """SHA-256 of a part's weights and buffers (names, dtypes, shapes, values): equal exactly when the upper part of
    a target network is the one a deposit module was made with (safetensors round trips are bit-exact)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(upper.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
