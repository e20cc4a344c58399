"""Arguments for `MultiLabelKDTrainer` (multi-label distillation, L2D: Yang et al., ICCV 2023, arXiv 2308.06453)."""

from dataclasses import dataclass, field
from typing import Literal

from .frozen_models_config import FrozenTeacherConfig, check_choices, check_temperature, check_weight

DISTILLATION_TYPES = ("soft", "none")
MULTILABEL_KD_TYPES = ("l2d", "softmax")
BCE_REDUCTIONS = ("sum", "mean")
EMBEDDING_PROJECTIONS = ("linear", "none")
_LAMBDAS = ("lambda_bce", "lambda_logits", "lambda_le", "lambda_cd", "lambda_id")


@dataclass
class MultiLabelKDConfig(FrozenTeacherConfig):
    r"""
    [`FrozenTeacherConfig`] (the teacher's fields) for multi-label students (multi-hot float `labels`, one sigmoid per
    class).

    `multilabel_kd_type="l2d"` (default) is the official L2D objective:

        loss = lambda_bce * BCE(z_s, y) + lambda_le * (lambda_cd * L_CD + lambda_id * L_ID) + lambda_logits * L_MLD

    with L_MLD the per-label Bernoulli KL between teacher and student sigmoids (summed over classes, divided by the
    batch size) and L_CD / L_ID the normalized-distance Huber losses between teacher and student label-wise
    embeddings (class-aware: across the images that have a class; instance-aware: across the labels present in one
    image). Defaults are the official ones (10, 1, 100, 1000, BCE summed over batch and classes). The embedding terms
    need both models to return `label_embeddings` (e.g. `LabelQueryForMultiLabelClassification`); otherwise only
    the logit terms are used.

    `multilabel_kd_type="softmax"` is the naive baseline: the MLD term is replaced by the soft KD of
    `DistillationTrainer` (`T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`, normalized by `kd_normalization`), as if
    the classes were exclusive; no embedding terms. `distillation_type="none"` trains on `lambda_bce * BCE` alone.

    The terms are added with unbounded weights, the `lambda_*` fields (there is no `alpha`: nothing is a convex mix).
    `temperature` is only used by the softmax baseline (MLD has none, so it must stay 1.0 with "l2d").
    `ddp_find_unused_parameters` defaults to False: the embedding projection (see `embedding_projection`) runs outside
    the student's forward.

    Parameters:
        distillation_type (`str`, *optional*, defaults to `"soft"`):
            `"soft"`: distill from the teacher (`multilabel_kd_type` says how). `"none"`: `lambda_bce * BCE` only, no
            teacher. (`"hard"` is not defined for multi-label students.)
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the softmax-KD baseline (> 0).
        kd_normalization (`str`, *optional*, defaults to `"batchmean"`):
            Softmax baseline only: divide the summed KL by the items (`"batchmean"`) or by items x classes
            (`"numel"`).
        multilabel_kd_type (`str`, *optional*, defaults to `"l2d"`):
            `"l2d"` (MLD + label-wise embedding distillation) or `"softmax"` (softmax KD baseline).
        lambda_bce (`float`, *optional*, defaults to `1.0`):
            Weight of the binary cross-entropy on the labels.
        lambda_logits (`float`, *optional*, defaults to `10.0`):
            Weight of the logit distillation term (MLD, or softmax KD for the baseline).
        lambda_le (`float`, *optional*, defaults to `1.0`):
            Weight of the label-wise embedding distillation `lambda_cd * L_CD + lambda_id * L_ID` (0 turns it off).
        lambda_cd (`float`, *optional*, defaults to `100.0`):
            Weight of the class-aware term L_CD inside the embedding distillation.
        lambda_id (`float`, *optional*, defaults to `1000.0`):
            Weight of the instance-aware term L_ID inside the embedding distillation.
        bce_reduction (`str`, *optional*, defaults to `"sum"`):
            `"sum"`: BCE summed over the batch and the classes, as the official code (the lambdas are tuned for it).
            `"mean"`: divided by batch x classes (then the distillation terms weigh relatively much more).
        embedding_projection (`str`, *optional*, defaults to `"linear"`):
            When teacher and student label-wise embeddings differ in width: `"linear"` trains a
            `Linear(d_student -> d_teacher)` applied to the student embeddings (not in the official code, where both
            are 768 wide); `"none"` compares the distance matrices directly (they are n x n whatever the width).
    """

    distillation_type: Literal["soft", "none"] = field(
        default="soft",
        metadata={
            "help": "'soft': distill from the teacher (multilabel_kd_type says how); 'none': lambda_bce * BCE "
            "only, no teacher. 'hard' is not defined for multi-label students."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Temperature of the softmax-KD baseline (> 0); 'l2d' has none (keep 1.0)."}
    )
    kd_normalization: Literal["numel", "batchmean"] = field(
        default="batchmean",
        metadata={
            "help": "Softmax baseline only: divide the summed KL by the items ('batchmean', like MLD's sum over "
            "classes / N) or by items x classes ('numel')."
        },
    )
    multilabel_kd_type: Literal["l2d", "softmax"] = field(
        default="l2d",
        metadata={
            "help": "'l2d': per-label Bernoulli KL (MLD) + label-wise embedding distillation; 'softmax': the "
            "naive softmax-KD baseline over classes."
        },
    )
    lambda_bce: float = field(default=1.0, metadata={"help": "Weight of the BCE on the labels (official: 1)."})
    lambda_logits: float = field(default=10.0, metadata={"help": "Weight of the logit KD term (official MLD: 10)."})
    lambda_le: float = field(default=1.0, metadata={"help": "Weight of the label-wise embedding terms (official: 1)."})
    lambda_cd: float = field(default=100.0, metadata={"help": "Weight of the class-aware term (official: 100)."})
    lambda_id: float = field(default=1000.0, metadata={"help": "Weight of the instance-aware term (official: 1000)."})
    bce_reduction: Literal["sum", "mean"] = field(
        default="sum",
        metadata={"help": "'sum' over batch and classes (official, the lambdas assume it) or 'mean'."},
    )
    embedding_projection: Literal["linear", "none"] = field(
        default="linear",
        metadata={
            "help": "If embedding widths differ: 'linear' learns Linear(d_student -> d_teacher) (not in the "
            "official code); 'none' compares the width-free distance matrices directly."
        },
    )

    def __post_init__(self):
        # The embedding projection runs outside the student's forward, which DDP's unused-parameter search would
        # report as used twice; the trainer makes every parameter get a gradient, so the search is not needed.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        super().__post_init__()
        if self.distillation_type == "hard":
            raise ValueError(
                "`distillation_type`='hard' is not defined for multi-label students (there is no single argmax "
                "class); use 'soft' (with multilabel_kd_type 'l2d' or 'softmax') or 'none'."
            )
        check_choices(
            self,
            {
                "distillation_type": DISTILLATION_TYPES,
                "kd_normalization": ("numel", "batchmean"),
                "multilabel_kd_type": MULTILABEL_KD_TYPES,
                "bce_reduction": BCE_REDUCTIONS,
                "embedding_projection": EMBEDDING_PROJECTIONS,
            },
        )
        check_temperature(self.temperature)
        for name in _LAMBDAS:
            check_weight(getattr(self, name), name)
        if self.multilabel_kd_type == "l2d" and self.temperature != 1.0:
            raise ValueError(
                f"`temperature`={self.temperature} is only used by multilabel_kd_type='softmax'; MLD (L2D) has no "
                "temperature, so leave it at 1.0."
            )
