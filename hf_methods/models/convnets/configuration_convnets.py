"""Configs of the plain CNN backbones that stock transformers lacks: VGG and the few-shot ResNet-12."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value, name: str):
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _positive_int_list(value, name: str) -> list[int]:
    """`value` as a list of positive ints (one per stage), or a ValueError naming
    `name`."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"`{name}` must be a non-empty list of positive integers (one per stage), got {value!r}.")
    bad = [v for v in value if not _is_int(v) or v < 1]
    if bad:
        raise ValueError(
            f"`{name}` must hold positive integers only (one per stage), got {list(value)!r}; {bad[0]!r} is not one."
        )
    return list(value)


def _check_convnet(config: PreTrainedConfig):
    """Checks shared by both backbones; a ValueError names the first bad field and
    the fix."""
    _positive_int(config.num_channels, "num_channels")
    config.hidden_sizes = _positive_int_list(config.hidden_sizes, "hidden_sizes")
    config.depths = _positive_int_list(config.depths, "depths")
    if len(config.hidden_sizes) != len(config.depths):
        raise ValueError(
            f"`hidden_sizes` has {len(config.hidden_sizes)} entries but `depths` has "
            f"{len(config.depths)}; give one width and one depth per stage (same "
            "length)."
        )
    dropout = config.classifier_dropout
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"`classifier_dropout` must be in [0, 1), got {dropout!r}.")
    if config.num_labels < 2:
        raise ValueError(
            f"`num_labels` must be at least 2 (the loss is a softmax cross-entropy "
            f"over the classes), got {config.num_labels}."
        )
    if config.problem_type != "single_label_classification":
        raise ValueError(
            "`problem_type` must be 'single_label_classification' (softmax "
            f"cross-entropy), got {config.problem_type!r}; leave it out."
        )


class VGGConfig(PreTrainedConfig):
    r"""A VGG network (Simonyan & Zisserman, 2015) for image classification, with a
    global-average-pool head.

    Stages of 3x3 convolutions (padding 1), each followed by BatchNorm (optional) and
    ReLU; a 2x2 max-pool (ceil mode) ends every stage. The head averages the last
    feature map over space, applies dropout and one linear layer. The defaults are
    VGG-11 (configuration "A"); VGG-13 is `depths=[2, 2, 2, 2, 2]`, VGG-16
    `[2, 2, 3, 3, 3]`, VGG-19 `[2, 2, 4, 4, 4]`.

    Args:
        num_channels: channels of the input images.
        hidden_sizes: output channels of every conv of each stage.
        depths: number of 3x3 convs of each stage (same length as `hidden_sizes`).
        batch_norm: BatchNorm after every conv (then the convs have no bias); False
            gives the original VGG (biased convs, no norm).
        classifier_dropout: dropout before the linear classifier, in [0, 1).
        num_labels / id2label: the classes (at least 2; cross-entropy loss).
    """

    model_type = "hf_methods_vgg"
    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512, 512)
    depths: list[int] | tuple[int, ...] = (1, 1, 2, 2, 2)
    batch_norm: bool = True
    classifier_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        if self.problem_type is None:
            self.problem_type = "single_label_classification"
        self.check_vgg()

    def check_vgg(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        _check_convnet(self)
        if not isinstance(self.batch_norm, bool):
            raise ValueError(  # noqa: TRY004 - config errors are ValueErrors
                f"`batch_norm` must be True or False, got {self.batch_norm!r}."
            )


class ResNet12Config(PreTrainedConfig):
    r"""The ResNet-12 of few-shot learning (TADAM, MetaOptNet, FEAT, ...): four
    stages of residual blocks of three 3x3 convs, for image classification with a
    global-average-pool head.

    A block is conv-BN-LeakyReLU, conv-BN-LeakyReLU, conv-BN, plus a shortcut (1x1
    conv + BN when the channels change, identity otherwise), then LeakyReLU; a 2x2
    max-pool (ceil mode) ends every stage. The defaults are the standard ResNet-12
    (widths 64-160-320-640, one block per stage: 12 convs on the main path, 12.4M
    backbone parameters); `hidden_sizes=[64, 128, 256, 512]` is the narrower variant
    of TADAM/ProtoNet codebases.

    Args:
        num_channels: channels of the input images.
        hidden_sizes: output channels of each stage.
        depths: residual blocks of each stage (same length as `hidden_sizes`).
        leaky_relu_slope: negative slope of every LeakyReLU (0.1 in ResNet-12; 0
            makes it a ReLU).
        classifier_dropout: dropout before the linear classifier, in [0, 1).
        num_labels / id2label: the classes (at least 2; cross-entropy loss).
    """

    model_type = "hf_methods_resnet12"
    num_channels: int = 3
    hidden_sizes: list[int] | tuple[int, ...] = (64, 160, 320, 640)
    depths: list[int] | tuple[int, ...] = (1, 1, 1, 1)
    leaky_relu_slope: float = 0.1
    classifier_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        if self.problem_type is None:
            self.problem_type = "single_label_classification"
        self.check_resnet12()

    def check_resnet12(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        _check_convnet(self)
        slope = self.leaky_relu_slope
        if not _is_number(slope) or slope < 0:
            raise ValueError(f"`leaky_relu_slope` must be a number >= 0 (0.1 in ResNet-12), got {slope!r}.")
