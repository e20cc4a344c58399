"""Arguments for `RDDTrainer` (Relative Difficulty Distillation for semantic segmentation, arXiv 2407.03719)."""

import math
from dataclasses import dataclass, field
from typing import Literal

from .frozen_models_config import FrozenTeacherConfig, check_choices, check_temperature, check_weight

RDD_METHODS = ("rdd", "kd_only")
STAGE1_WITHOUT_AUX_HEAD = ("error", "uniform_weights")
# The 19 Cityscapes class weights of the official OHEM loss: an example for `class_weights`, never a default.
CITYSCAPES_CLASS_WEIGHTS = [
    0.8373,
    0.918,
    0.866,
    1.0345,
    1.0166,
    0.9969,
    0.9754,
    1.0489,
    0.8786,
    1.0023,
    0.9539,
    0.9843,
    1.1116,
    0.9037,
    1.0865,
    1.0955,
    1.0865,
    1.1529,
    1.0507,
]


@dataclass
class RDDConfig(FrozenTeacherConfig):
    r"""
    [`FrozenTeacherConfig`] (the teacher's fields) plus the settings of Relative Difficulty Distillation (RDD) for
    semantic segmentation.

    RDD adds no loss term: the loss is `task + lambda_logits * KD`, where KD is the pixel-wise
    `T^2 * KL(softmax(teacher / T) || softmax(student / T))` averaged over pixels, and the *task* cross-entropy is
    re-weighted by how hard each pixel is. Stage 1 (the first `rdd_warmup_steps` optimizer steps, "teacher-full
    evaluated"): each pixel's CE is weighted by `exp(-KL(teacher aux head || teacher main head))`, so pixels on which
    the teacher's two heads disagree count less. Stage 2 ("teacher-student evaluated"): the CE only covers pixels
    that exactly one of teacher and student finds hard (OHEM: probability of the true class <= threshold).

    The KD term is added with an unbounded weight, `lambda_logits` (the paper's lambda_kd), not mixed with the task
    loss by `alpha` as in [`DistillationConfig`]; the KL is averaged over pixels, as in the official code.

    Parameters:
        rdd_method (`str`, *optional*, defaults to `"rdd"`):
            `"rdd"`: the two-stage method. `"kd_only"`: the plain baseline
            `CE + aux_weight * CE_aux + lambda_logits * KD` (same KD term, unweighted CE), for comparisons under the
            same budget.
        rdd_warmup_steps (`int`, *optional*, defaults to `4000`):
            Optimizer steps of stage 1; stage 2 starts when `state.global_step == rdd_warmup_steps`. The official
            scripts use 4000 of 40000 iterations (argparse default 8000). 0 skips stage 1.
        ohem_thresh (`float`, *optional*, defaults to `0.7`):
            OHEM threshold tau in [0, 1] on the true-class probability (stage 2).
        min_kept (`int`, *optional*, defaults to `100000`):
            OHEM keeps at least this many pixels hard per batch: if the `min_kept`-th smallest true-class probability
            exceeds tau, it becomes the threshold. The official value suits 4 x 512 x 1024 pixels per GPU (~4.8%);
            scale it to your batch. When it reaches the number of valid pixels, every valid pixel is hard for both
            networks and the stage-2 mask is empty (the trainer warns once).
        aux_weight (`float`, *optional*, defaults to `0.4`):
            Weight of the student's auxiliary-head CE (the term vanishes when the student has no auxiliary head).
        class_weights (`list[float]`, *optional*):
            Per-class CE weights of stage 2 and of `"kd_only"` (stage 1 uses none, as the official code). The official
            code uses the Cityscapes weights `CITYSCAPES_CLASS_WEIGHTS`; None (default) means all 1.
        lambda_logits (`float`, *optional*, defaults to `1.0`):
            Weight of the pixel-wise logit KD term (>= 0), the paper's lambda_kd (named as L2D's weight of its logit
            KD term: see "One vocabulary" in the README).
        temperature (`float`, *optional*, defaults to `1.0`):
            KD temperature T (> 0).
        ignore_index (`int`, *optional*, defaults to `255`):
            Label of pixels that count nowhere. The official code uses -1; transformers' segmentation models
            (UperNet `loss_ignore_index`, Segformer `semantic_loss_ignore_index`) and datasets use 255.
        stage1_without_aux_head (`str`, *optional*, defaults to `"error"`):
            What happens when the teacher has no auxiliary head (e.g. Segformer), so stage 1 cannot judge difficulty.
            `"error"`: the trainer raises at init. `"uniform_weights"`: every pixel gets weight 1 (stage 1 is then
            plain CE + KD), logged once.
    """

    temperature: float = field(default=1.0, metadata={"help": "KD temperature T (> 0); official 1.0."})
    rdd_method: Literal["rdd", "kd_only"] = field(
        default="rdd",
        metadata={"help": "'rdd': two-stage relative-difficulty task loss; 'kd_only': plain CE + KD baseline."},
    )
    rdd_warmup_steps: int = field(
        default=4000,
        metadata={
            "help": "Optimizer steps of stage 1 (teacher aux/main disagreement weights); stage 2 (XOR of "
            "OHEM masks) from then on. Official scripts: 4000 of 40000."
        },
    )
    ohem_thresh: float = field(default=0.7, metadata={"help": "OHEM threshold on the true-class probability, [0, 1]."})
    min_kept: int = field(
        default=100000,
        metadata={"help": "OHEM keeps at least this many hard pixels per batch (official: 100000 of 4x512x1024)."},
    )
    aux_weight: float = field(default=0.4, metadata={"help": "Weight of the student's auxiliary-head CE (>= 0)."})
    class_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Per-class CE weights of stage 2 and kd_only (official: the 19 Cityscapes weights); "
            "empty means all 1."
        },
    )
    lambda_logits: float = field(
        default=1.0, metadata={"help": "Weight of the pixel-wise logit KD term (>= 0): the paper's lambda_kd."}
    )
    ignore_index: int = field(
        default=255,
        metadata={"help": "Ignored label (transformers segmentation models use 255; the official code -1)."},
    )
    stage1_without_aux_head: Literal["error", "uniform_weights"] = field(
        default="error",
        metadata={"help": "Teacher without an auxiliary head: 'error' at init, or 'uniform_weights' (w = 1)."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_temperature(self.temperature)
        check_choices(self, {"rdd_method": RDD_METHODS, "stage1_without_aux_head": STAGE1_WITHOUT_AUX_HEAD})
        for name in ("rdd_warmup_steps", "min_kept"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0, got {value!r}.")
        if not 0.0 <= self.ohem_thresh <= 1.0:
            raise ValueError(
                f"`ohem_thresh` must be in [0, 1] (a probability of the true class), got {self.ohem_thresh}."
            )
        for name in ("aux_weight", "lambda_logits"):
            check_weight(getattr(self, name), name)
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
            weights = self.class_weights
            if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
                raise ValueError(
                    "`class_weights` must be None or one finite non-negative weight per class (not all 0), got "
                    f"{self.class_weights}."
                )
