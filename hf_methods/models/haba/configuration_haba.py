"""Config of a factorized synthetic data set (HaBa): bases per class and shared hallucinators."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..convnets.configuration_convnets import _is_int, _positive_int


def image_hw(image_size) -> tuple[int, int]:
    """(height, width) of an `image_size` given as one int (square) or a pair."""
    if _is_int(image_size):
        return image_size, image_size
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2 and all(_is_int(v) for v in image_size):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(f"`image_size` must be an integer or a [height, width] pair of integers, got {image_size!r}.")


class HaBaConfig(PreTrainedConfig):
    r"""A data set factorized into bases and hallucinators (HaBa, Liu et al., NeurIPS 2022), `HaBaDataset`.

    Every class holds `images_per_class` bases; `num_hallucinators` small networks are shared by all classes, and
    every (base, hallucinator) pair is one training image: `num_labels * images_per_class * num_hallucinators` images
    from `num_labels * images_per_class` stored bases. A hallucinator is `H(b) = ConvT_k(scale * Conv_k(b) + shift)`
    (kernel `kernel_size`, no padding; `scale` and `shift` hold one value per channel and position of the convolution's
    output, initialized to 1 and 0), as in the official `StyleTranslator`.

    Args:
        num_channels: channels of the generated images (what a network trained on the set reads).
        base_channels: channels of the stored bases (empty: `num_channels`; 1 with `num_channels=3` is the official
            `--single_channel` variant, whose hallucinators turn one-channel bases into colour images).
        hallucinator_channels: channels between a hallucinator's convolution and its transposed convolution (empty:
            `num_channels`, the official `mid_channel`).
        image_size: height and width of the images (one int for a square, or [height, width]); at least
            `kernel_size` each.
        images_per_class: bases per class (the distillation's "ipc"), at least 1.
        num_hallucinators: hallucinators shared across the classes (the official `n_style`, 5), at least 1.
        kernel_size: kernel of both convolutions of a hallucinator (official 3).
        hallucinator_init: "default" (the official code: PyTorch's default init of both convolutions, so a fresh
            hallucinator scrambles its base) or "identity" (not in the paper or code: centre-tap kernels, so a fresh
            hallucinator copies its base into the image's interior, its `kernel_size // 2`-pixel border
            zero,
            plus N(0, `hallucinator_init_std`) noise on both kernels so the hallucinators differ; useful when the
            distillation is short, as on CPU).
        hallucinator_init_std: std of that noise (identity init only).
        initial_synthetic_lr: the learnable learning rate of the distillation's inner loop starts here (the official
            `lr_teacher`: 0.01 at ipc 1 and 50, 0.001 at ipc 10); the learned value is the model's `synthetic_lr`,
            the learning rate a network trained on the set should use.
        image_mean / image_std: per-channel standardization of the real images the set was distilled from (the
            generated `pixel_values` live in that standardized space); a record for users and cards.
        distillation: the distiller settings the set was learned with (a record for the card; not used here).
        num_labels / id2label: the classes (at least 2).
    """

    model_type = "hf_methods_haba"
    num_channels: int = 3
    base_channels: int | None = None
    hallucinator_channels: int | None = None
    image_size: int | list[int] = 32
    images_per_class: int = 1
    num_hallucinators: int = 5
    kernel_size: int = 3
    hallucinator_init: str = "default"
    hallucinator_init_std: float = 0.1
    initial_synthetic_lr: float = 0.01
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    distillation: dict | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        if self.base_channels is None:
            self.base_channels = self.num_channels
        if self.hallucinator_channels is None:
            self.hallucinator_channels = self.num_channels
        if isinstance(self.image_size, tuple):
            self.image_size = list(self.image_size)
        self.check_haba()

    def check_haba(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        for name in ("num_channels", "base_channels", "hallucinator_channels", "kernel_size"):
            _positive_int(getattr(self, name), name)
        ipc = self.images_per_class
        if not _is_int(ipc) or ipc < 1:
            raise ValueError(f"`images_per_class` (ipc) must be an integer >= 1 (bases per class), got {ipc!r}.")
        n = self.num_hallucinators
        if not _is_int(n) or n < 1:
            raise ValueError(
                f"`num_hallucinators` must be an integer >= 1, got {n!r}; a set of plain distilled images (no "
                "hallucinators) is `hf_methods.trainers.haba_distiller.DistilledImages`."
            )
        height, width = image_hw(self.image_size)
        if min(height, width) < self.kernel_size:
            raise ValueError(
                f"`image_size` {self.image_size!r} is smaller than `kernel_size` {self.kernel_size}: a hallucinator's "
                "unpadded convolution needs images at least kernel_size high and wide; use larger images or a "
                "smaller kernel_size."
            )
        if self.hallucinator_init not in ("default", "identity"):
            raise ValueError(f"`hallucinator_init` must be 'default' or 'identity', got {self.hallucinator_init!r}.")
        std = self.hallucinator_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
            raise ValueError(f"`hallucinator_init_std` must be a finite number >= 0, got {std!r}.")
        lr = self.initial_synthetic_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"`initial_synthetic_lr` must be a finite number >= 0, got {lr!r}.")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if values is not None and (not isinstance(values, (list, tuple)) or len(values) != self.num_channels):
                raise ValueError(f"`{name}` must hold one number per channel ({self.num_channels}), got {values!r}.")
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2 (the classes of the set), got {self.num_labels}.")

    @property
    def image_hw(self) -> tuple[int, int]:
        return image_hw(self.image_size)
