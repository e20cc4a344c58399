"""Arguments for `LearngenePoolDistillationTrainer` (Learngene Pool stage 1, arXiv 2312.05743)."""

from dataclasses import dataclass, field
from typing import Literal

from .frozen_models_config import FrozenTeacherConfig, check_alpha, check_temperature

FEATURE_POSITIONS = ("[end]", "[mid,end]", "[front,end]")
FEATURE_LOSSES = ("all", "logits", "logits+rep")


@dataclass
class PoolDistillationConfig(FrozenTeacherConfig):
    r"""
    [`FrozenTeacherConfig`] (the teacher's fields) plus the distillation settings of Learngene Pool stage 1.

    With `feature_loss="all"` the loss is `(1 - alpha) * CE + alpha * (log + rep + att)`: `log` is the soft
    cross-entropy between temperature-scaled teacher and student logits, `rep` and `att` the MSE between student block
    outputs / attention-branch outputs and linearly projected teacher ones at matched layers.

    Defaults follow the official code: `alpha=0.9` here is the official `alpha=0.1`, because the official code puts
    alpha on the cross-entropy and we put it on the distillation part (`loss = (1 - alpha) * CE + alpha * KD`), as
    every trainer here does. The logit term is always the soft one, a mean over batch x classes as in the official
    code. `ddp_find_unused_parameters` defaults to False (True is refused): the projectors run outside the student's
    forward.

    Parameters:
        alpha (`float`, *optional*, defaults to `0.9`):
            Weight of the distillation part in `[0, 1]` (with `feature_loss="all"`).
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the soft logit term (> 0).
        feature_positions (`str`, *optional*, defaults to `"[front,end]"`):
            Which blocks are matched (same relative positions in teacher and student). `"[end]"`: the last block.
            `"[mid,end]"`: the blocks at 2/3 of the depth and the last. `"[front,end]"`: 1/3, 2/3 and the last.
        feature_loss (`str`, *optional*, defaults to `"all"`):
            `"all"`: `(1 - alpha) * CE + alpha * (log + rep + att)`. `"logits"`: `0.5 * CE + 0.5 * log`.
            `"logits+rep"`: `0.5 * CE + 0.5 * (log + rep)`. `alpha` is only used by `"all"`.
    """

    alpha: float = field(
        default=0.9,
        metadata={
            "help": "Weight of the distillation part in [0, 1]: loss = (1 - alpha) * CE + alpha * "
            "(log + rep + att). 0.9 here = the official alpha 0.1, which weighs the CE."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Temperature of the soft logit term (> 0)."})
    feature_positions: Literal["[end]", "[mid,end]", "[front,end]"] = field(
        default="[front,end]",
        metadata={
            "help": "Matched blocks: '[end]' (last), '[mid,end]' (2/3 and last) or '[front,end]' (1/3, 2/3, last)."
        },
    )
    feature_loss: Literal["all", "logits", "logits+rep"] = field(
        default="all",
        metadata={
            "help": "'all': (1-alpha)*CE + alpha*(log+rep+att); 'logits': 0.5*CE + 0.5*log; "
            "'logits+rep': 0.5*CE + 0.5*(log+rep)."
        },
    )

    def __post_init__(self):
        # The feature projectors run outside the student's forward, which DDP's unused-parameter search would report
        # as used twice ("mark a variable ready only once"); every parameter gets a gradient, so the search is moot.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        elif self.ddp_find_unused_parameters:
            raise ValueError(
                "`ddp_find_unused_parameters` must be False (or unset) for Learngene Pool distillation: the feature "
                "projectors run outside the student's forward, which DDP's unused-parameter search does not support."
            )
        super().__post_init__()
        check_alpha(self.alpha)
        check_temperature(self.temperature)
        if self.feature_positions not in FEATURE_POSITIONS:
            raise ValueError(f"`feature_positions` must be one of {FEATURE_POSITIONS}, got {self.feature_positions!r}.")
        if self.feature_loss not in FEATURE_LOSSES:
            raise ValueError(f"`feature_loss` must be one of {FEATURE_LOSSES}, got {self.feature_loss!r}.")
