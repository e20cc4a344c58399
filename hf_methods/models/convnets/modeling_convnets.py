"""Plain CNN image classifiers as transformers models: VGG and the few-shot ResNet-12.

Stock transformers has neither a VGG nor the ResNet-12 of few-shot learning (its ResNet
is the ImageNet ResNet-18/50 family with a 7x7 stem). Genetic Transfer Learning (GTL)
evaluates on VGG-11 and ResNet-12, so both are provided here as `PreTrainedModel`s:
they save and load with safetensors, run in the `Trainer`, and load through
`AutoModelForImageClassification` once registered.

Layout, shared by both: `stages` is a `ModuleList` of stages, each a `ModuleList` of
blocks; every conv is registered immediately before its BatchNorm (so a walk over
`named_modules()` sees each conv followed by the norm of its output channels, which
filter-level transfer relies on). A 2x2 max-pool with `ceil_mode=True` ends every
stage, so tiny inputs (16x16 through five VGG stages) keep a 1x1 map instead of
vanishing. The head is global average pooling, dropout and `classifier` (a Linear).
Written from the papers' descriptions; names are our own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from ...modeling import HfMethodsModel
from .configuration_convnets import ResNet12Config, VGGConfig


class VGGBlock(nn.Module):
    """3x3 conv (padding 1) -> BatchNorm (or identity) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResNet12Shortcut(nn.Module):
    """1x1 conv + BatchNorm: the projection shortcut of a block that changes width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class ResNet12Block(nn.Module):
    """Three conv3x3-BN (LeakyReLU between) plus the shortcut, then LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, slope: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm3 = nn.BatchNorm2d(out_channels)
        if in_channels != out_channels:
            self.shortcut = ResNet12Shortcut(in_channels, out_channels)
        else:
            self.shortcut = nn.Identity()
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.act(self.norm2(self.conv2(h)))
        h = self.norm3(self.conv3(h))
        return self.act(h + self.shortcut(x))


class ConvNetPreTrainedModel(HfMethodsModel, PreTrainedModel):
    """Shared base: stages of blocks, a max-pool after each, then the classifier
    head. Subclasses build `self.stages` with `_build_stages()`."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False  # plain mean cross-entropy; no num_items_in_batch

    def _build_stages(self, config, make_block):
        self.stages = nn.ModuleList()
        in_channels = config.num_channels
        for width, depth in zip(config.hidden_sizes, config.depths, strict=True):
            stage = nn.ModuleList()
            for _ in range(depth):
                stage.append(make_block(in_channels, width))
                in_channels = width
            self.stages.append(stage)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)

    @torch.no_grad()
    def _init_weights(self, module):
        """Convs: Kaiming-normal (fan_out, ReLU gain; as torchvision's VGG/ResNet and
        the few-shot ResNet-12 codebases), zero biases. BatchNorm: weight 1, bias 0,
        running statistics reset. Classifier: N(0, 0.01) weight, zero bias (as
        torchvision's VGG). The `transformers.initialization` functions skip tensors
        already loaded from a checkpoint."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.01)
            init.zeros_(module.bias)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """Logits (batch, num_labels); `loss` = mean cross-entropy when integer class
        `labels` (batch,) are given; `hidden_states` = the output of every stage
        (after its max-pool; the last is what the head pools) when
        `output_hidden_states`. Other keyword arguments are ignored."""
        if pixel_values is None:
            raise ValueError(f"{type(self).__name__}.forward needs pixel_values.")
        channels = self.config.num_channels
        if pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {channels}, height, width) "
                f"(config.num_channels={channels}), got "
                f"{tuple(pixel_values.shape)}; convert the images (e.g. grayscale "
                "<-> RGB) or build the model with a matching num_channels."
            )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict

        hidden = pixel_values
        hidden_states = []
        for stage in self.stages:
            for block in stage:
                hidden = block(hidden)
            hidden = self.pool(hidden)
            hidden_states.append(hidden)
        pooled = self.avgpool(hidden).flatten(1)
        logits = self.classifier(self.dropout(pooled))

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels).float(), labels.view(-1))
        states = tuple(hidden_states) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (loss, logits, states) if v is not None)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=states)


class VGGForImageClassification(ConvNetPreTrainedModel):
    """VGG (Simonyan & Zisserman, 2015) with a global-average-pool head.

    Why it exists: stock transformers has no VGG, and Genetic Transfer Learning's
    paper evaluates VGG-11. The default `VGGConfig()` is VGG-11 with BatchNorm
    (`vgg11_bn`'s 8 convs, 9.22M conv+BN parameters; `batch_norm=False` gives plain
    VGG-11's 9.22M); unlike torchvision the three 4096-wide FC layers are replaced
    by global average pooling + one Linear, as in CIFAR-style VGGs, so any input size
    works. Modules: `stages[s][b].conv` / `.norm` / `.act`, `pool`, `classifier`.
    """

    config_class = VGGConfig
    base_model_prefix = "vgg"
    method_name = "VGG"

    def __init__(self, config: VGGConfig):
        super().__init__(config)
        self._build_stages(config, lambda cin, cout: VGGBlock(cin, cout, config.batch_norm))
        self.post_init()


class ResNet12ForImageClassification(ConvNetPreTrainedModel):
    """The few-shot ResNet-12 (TADAM, MetaOptNet, FEAT, ...) with a global-average-
    pool head.

    Why it exists: stock transformers' ResNet is the ImageNet family (7x7 stem,
    basic/bottleneck blocks), not the ResNet-12 of few-shot learning that Genetic
    Transfer Learning's paper evaluates. The default `ResNet12Config()` is the
    standard 64-160-320-640 ResNet-12 (4 blocks x 3 convs, LeakyReLU 0.1, 12.4M
    backbone parameters). DropBlock, used by some codebases for training, is not
    part of the model. Modules: `stages[s][b].conv1` / `.norm1` / `.conv2` /
    `.norm2` / `.conv3` / `.norm3` / `.shortcut.conv` / `.shortcut.norm`, `pool`,
    `classifier`.
    """

    config_class = ResNet12Config
    base_model_prefix = "resnet12"
    method_name = "ResNet-12"

    def __init__(self, config: ResNet12Config):
        super().__init__(config)
        self._build_stages(
            config,
            lambda cin, cout: ResNet12Block(cin, cout, config.leaky_relu_slope),
        )
        self.post_init()
