"""Configs of LIRF's models: the training wrapper (`LIRFConfig`), the deposit module an owner keeps
(`LIRFDepositConfig`) and the recover network made at withdrawal (`LIRFRecoverConfig`)."""

from __future__ import annotations

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..label_query.configuration_label_query import labeled_backbone, labeled_backbone_config

RECOVER_MODES = ("replace", "sum")


def check_deposit_classes(classes, num_labels: int, field: str = "deposit_classes") -> list[int]:
    """`classes` as a sorted list of distinct label ids, each in `[0, num_labels)`, leaving at least one class
    preserved; else a ValueError naming `field` and the fix."""
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(
            f"`{field}` must be a non-empty list of label ids (the classes to deposit, e.g. [0, 1, 2]), got "
            f"{classes!r}."
        )
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int)]
    if bad:
        raise ValueError(f"`{field}` must hold integer label ids, got {bad[0]!r} in {list(classes)!r}.")
    outside = [c for c in classes if not 0 <= c < num_labels]
    if outside:
        raise ValueError(
            f"`{field}`: class {outside[0]} is outside the label space (num_labels={num_labels}: ids "
            f"0..{num_labels - 1}); give label ids of the original model."
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"`{field}` lists a class twice: {list(classes)!r}.")
    if len(classes) >= num_labels:
        raise ValueError(
            f"`{field}` holds all {num_labels} classes: nothing would be preserved; deposit a strict subset."
        )
    return sorted(classes)


class LIRFConfig(PreTrainedConfig):
    r"""LIRF, Learning with Recoverable Forgetting (Ye et al., ECCV 2022): an image classifier split into a lower and
    an upper part, with two fine-tuned copies of the lower part.

    `LIRFModel` holds `lower_target` (the target network's lower part: it forgets the deposit classes),
    `lower_deposit` (the deposit module: it keeps them), the original `upper` part (frozen, shared) and the original
    lower part `lower_original` (frozen; the distillation teacher while training, never exported).

    Args:
        backbone_config: the original classifier's config as a dict (`VGGConfig(...).to_dict()`) or a
            `PreTrainedConfig`; its labels are replaced by this config's.
        backbone_model_type: its transformers `model_type`; taken from `backbone_config["model_type"]` when left out.
        split_module_name: the module that ends the lower part (`split_model`): "stages.<i>" for the project's VGG /
            ResNet-12, "vit.embeddings" or "vit.layers.<i>" for a ViT.
        deposit_classes: label ids of the classes to deposit (forgotten by the target, kept by the deposit module);
            the official code deposits the first 3 of 10 ([0, 1, 2]).
        recover_mode: how the recover network combines the target logits z_T and the deposit logits z_R = up(low_R(x)):
            "replace" (default) takes the deposit classes' columns from z_R and the others from z_T, exactly the
            z_comb that LIRF's deposit loss trains; "sum" adds them (z_R + z_T), what the official code evaluates on
            preserved-class images (it uses z_comb on deposit-class images; which set an image belongs to is not
            known at test time, so each mode here applies one rule to every image).
        num_labels / id2label: the original classifier's classes.
    """

    model_type = "hf_methods_lirf"
    backbone_config: dict | None = None
    backbone_model_type: str | None = None
    split_module_name: str | None = None
    deposit_classes: list[int] | None = None
    recover_mode: str = "replace"

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        labeled_backbone(self, "'hf_methods_vgg', 'hf_methods_resnet12' or 'vit'")
        self.check_lirf()

    def check_lirf(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        if self.recover_mode not in RECOVER_MODES:
            raise ValueError(f"`recover_mode` must be one of {RECOVER_MODES}, got {self.recover_mode!r}.")
        if self.split_module_name is not None and (
            not isinstance(self.split_module_name, str) or not self.split_module_name
        ):
            raise ValueError(
                f"`split_module_name` must name the module that ends the lower part (e.g. 'stages.1'), got "
                f"{self.split_module_name!r}."
            )
        if self.deposit_classes is not None:
            self.deposit_classes = check_deposit_classes(self.deposit_classes, self.num_labels)

    def get_backbone_config(self) -> PreTrainedConfig:
        """The original classifier's own transformers config, with this config's labels."""
        return labeled_backbone_config(self)

    @property
    def preserved_classes(self) -> list[int]:
        deposit = set(self.deposit_classes or ())
        return [c for c in range(self.num_labels) if c not in deposit]


class LIRFDepositConfig(LIRFConfig):
    r"""The deposit module (`LIRFDepositModule`): the lower part that keeps the deposit classes. With the target
    network it was made with, it rebuilds the recover network (`LIRFRecoverModel.from_parts`).

    Args (beyond `LIRFConfig`'s; `recover_mode` is the mode the owner chose, used by `from_parts` unless overridden):
        upper_fingerprint: SHA-256 of the shared upper part's weights (`upper_fingerprint`): withdrawal refuses a
            target network whose upper part differs (the deposit module only works on top of that one).
    """

    model_type = "hf_methods_lirf_deposit"
    upper_fingerprint: str | None = None


class LIRFRecoverConfig(LIRFConfig):
    r"""The recover network (`LIRFRecoverModel`): the target network plus the deposit module, which classifies all
    classes again. Fields as `LIRFConfig`."""

    model_type = "hf_methods_lirf_recover"
