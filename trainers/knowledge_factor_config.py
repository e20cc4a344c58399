"""Arguments for `KnowledgeFactorTrainer` (and the plain multi-task baseline `MultiTaskDistillationTrainer`)."""

from dataclasses import dataclass, field
from typing import Literal

from .frozen_models_config import FrozenTeacherConfig, check_choices, check_temperature, check_weight
from .knowledge_factor_losses import INFOMAX_ESTIMATORS, LABEL_SMOOTHING_MODES

_LAMBDAS = ("lambda_logits", "lambda_infomax", "lambda_infomin", "lambda_task")


@dataclass
class KnowledgeFactorTrainingConfig(FrozenTeacherConfig):
    r"""
    [`~transformers.TrainingArguments`] plus the Knowledge Factorization loss of [`KnowledgeFactorTrainer`] (the
    teacher's fields come from [`FrozenTeacherConfig`]). The defaults are the official CIFAR-10 settings
    (`wideresnet28-2_resnet18_b128x1_cifar10_softtar_kf.py`).

    Per batch, with `c_l` the CKN's features, `tau_k` task k's TSN feature and `t_l` the teacher's features:

        loss = lambda_infomax * mean_l InfoMax(projector_l(t_l), c_l)
             + sum_k [ CE_ls(head_k(c_L + tau_k), y_k) + lambda_task * CE_ls(head_task_k(tau_k), y_k)
                       + lambda_logits * T^2 * KL(teacher_k / T || student_k / T) + lambda_infomin * InfoMin(tau_k) ]

    (the sum over tasks is inferred: the official multi-task classifier is not released).

    Parameters:
        temperature (`float`, *optional*, defaults to `10.0`):
            Softmax temperature T of the soft-target KD (official CIFAR-10: 10; ImageNet: 2).
        lambda_logits (`float`, *optional*, defaults to `0.1`):
            Weight of the KD term (the official `lambda_kd`).
        lambda_infomax (`float`, *optional*, defaults to `1.0`):
            Weight of InfoMax between the teacher's projected features and the CKN's (the official `lambda_feat`).
        lambda_infomin (`float`, *optional*, defaults to `1e-3`):
            Weight of the batch InfoMin bottleneck on every TSN feature (the official `beta`).
        lambda_task (`float`, *optional*, defaults to `1.0`):
            Weight of the TSN's own cross-entropy, `head_task(tau)` (the official `task_weight`; ImageNet: 0.1).
        label_smoothing_factor (`float`, *optional*, defaults to `0.1`):
            Label smoothing of both cross-entropies (official `label_smooth_val` 0.1).
        label_smoothing_mode (`str`, *optional*, defaults to `"classy_vision"`):
            mmcls' smoothing: `"classy_vision"` (what the official configs get, since they set no mode) smooths with
            `e / (1 + e)`; `"original"` with `e`.
        infomax_estimator (`str`, *optional*, defaults to `"official"`):
            `"official"`: the means over all batch^2 entries (the positive term scaled by 1/batch, the diagonal adding
            exp(0) = 1 to the negative term), as the official code; `"pairs"`: the means over the positive and the
            negative pairs (see `InfoMaxLoss`).
        teacher_feature_layers (`list[int]`, *optional*):
            Indices into the teacher's `hidden_states` of the features InfoMax matches to the CKN's feature layers,
            one each. Default: the teacher's last hidden states, as many as the CKN has feature layers (official
            CIFAR-10: the WRN's three stages for the ResNet-18's stages 1-3).
        distillation_type (`str`, *optional*, defaults to `"soft"`):
            `"soft"`: the loss above. `"none"`: no teacher; the KD and InfoMax terms are dropped (KF's other terms on
            the labels alone).
    """

    temperature: float = field(default=10.0, metadata={"help": "Temperature of the soft-target KD (official 10)."})
    lambda_logits: float = field(default=0.1, metadata={"help": "Weight of the KD term (official lambda_kd 0.1)."})
    lambda_infomax: float = field(
        default=1.0, metadata={"help": "Weight of InfoMax on the CKN's features (official lambda_feat 1.0)."}
    )
    lambda_infomin: float = field(
        default=1e-3, metadata={"help": "Weight of the batch InfoMin on each TSN feature (official beta 1e-3)."}
    )
    lambda_task: float = field(
        default=1.0, metadata={"help": "Weight of the TSN's own cross-entropy (official task_weight 1.0)."}
    )
    label_smoothing_factor: float = field(
        default=0.1, metadata={"help": "Label smoothing of the cross-entropies (official 0.1)."}
    )
    label_smoothing_mode: Literal["classy_vision", "original"] = field(
        default="classy_vision",
        metadata={"help": "mmcls' smoothing: 'classy_vision' uses e/(1+e) (the official configs'), 'original' e."},
    )
    infomax_estimator: Literal["official", "pairs"] = field(
        default="official",
        metadata={"help": "'official': means over all batch^2 entries (official code); 'pairs': over the pairs."},
    )
    teacher_feature_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Teacher hidden-state indices matched to the CKN's feature layers (default: the last ones)."},
    )
    distillation_type: Literal["soft", "none"] = field(
        default="soft", metadata={"help": "'soft': distill from the teacher; 'none': the label terms only."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_choices(
            self,
            {
                "distillation_type": ("soft", "none"),
                "label_smoothing_mode": LABEL_SMOOTHING_MODES,
                "infomax_estimator": INFOMAX_ESTIMATORS,
            },
        )
        check_temperature(self.temperature)
        for name in _LAMBDAS:
            check_weight(getattr(self, name), name)
        if not 0 <= self.label_smoothing_factor < 1:
            raise ValueError(f"`label_smoothing_factor` must be in [0, 1), got {self.label_smoothing_factor!r}.")
        layers = self.teacher_feature_layers
        if layers is not None and (
            not isinstance(layers, (list, tuple))
            or not layers
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
        ):
            raise ValueError(
                f"`teacher_feature_layers` must be a non-empty list of hidden-state indices, got {layers!r}."
            )
