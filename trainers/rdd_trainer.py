"""Relative Difficulty Distillation (RDD, arXiv 2407.03719) for semantic segmentation as a `FrozenTeacherTrainer`.

The math follows the official code (sunyueue/RDD, `train_onlykd_two_stage_diff.py`): a pixel-wise KD term plus a
task cross-entropy that stage 1 re-weights by the teacher's own head disagreement and stage 2 restricts to the pixels
whose difficulty differs between teacher and student (XOR of OHEM masks).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSemanticSegmentation, PreTrainedModel

from .. import compat
from .frozen_models import FrozenTeacherTrainer, _logits, _unwrap, cast_floating, frozen_init_kwargs, unwrap_parallel
from .rdd_config import RDDConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- logits of stock segmentation models
def auxiliary_head(model: nn.Module) -> nn.Module | None:
    """The auxiliary (FCN) head of a stock transformers segmentation model, or None.

    UperNet, BEiT, Data2VecVision and DPT keep it as `model.auxiliary_head` (None when `use_auxiliary_head=False`)
    and use its output only inside their own loss; Segformer has none. Looks through DDP, PEFT and learngene wrappers.
    """
    return compat.auxiliary_head(_unwrap(unwrap_parallel(model)))


@contextmanager
def _capture_output(module: nn.Module | None):
    """Yields a list that receives `module`'s forward outputs while the `with` lasts (nothing when None)."""
    captured: list = []
    handle = None
    if module is not None:
        handle = module.register_forward_hook(lambda _m, _args, output: captured.append(output))
    try:
        yield captured
    finally:
        if handle is not None:
            handle.remove()


def segmentation_forward(model: nn.Module, inputs: dict) -> tuple:
    """`(outputs, logits, aux_logits)` of a segmentation model: one ordinary forward, aux logits from a hook.

    Stock models compute their auxiliary head in `forward` but return only the main logits; a forward hook on
    `auxiliary_head` keeps its output. That output is resized to the main logits' (h, w) with bilinear interpolation
    and `align_corners=False`, as the models themselves do, so for UperNet (logits at input size) it is exactly the
    tensor UperNet's own loss uses. Models without an auxiliary head give None, unless they return `aux_logits`.
    """
    with _capture_output(auxiliary_head(model)) as captured:
        outputs = model(**inputs)
    logits = _logits(outputs)
    aux = captured[-1] if captured else None
    if aux is None and isinstance(outputs, dict):
        aux = outputs.get("aux_logits")
    if aux is not None and aux.shape[-2:] != logits.shape[-2:]:
        aux = F.interpolate(aux, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    return outputs, logits, aux


# ---------------------------------------------------------------- the loss, as pure functions
def _resize(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with `align_corners=True` (the official code's upsampling to label size); a no-op when equal."""
    size = tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def difficulty_weights(teacher_logits: torch.Tensor, teacher_aux_logits: torch.Tensor) -> torch.Tensor:
    """Stage-1 pixel weights `w = exp(-KL(softmax(aux) || softmax(main)))`, shape (B, h, w), in (0, 1].

    Pixels where the teacher's main and auxiliary heads agree are easy (w = 1 exactly when they are equal);
    disagreement marks ambiguous pixels, whose CE then counts less. Computed in float32 at the logits' resolution.
    """
    if teacher_logits.shape != teacher_aux_logits.shape:
        raise ValueError(
            f"Teacher main logits {tuple(teacher_logits.shape)} and auxiliary logits "
            f"{tuple(teacher_aux_logits.shape)} must have the same shape (B, C, h, w)."
        )
    log_main = F.log_softmax(teacher_logits.float(), dim=1)
    log_aux = F.log_softmax(teacher_aux_logits.float(), dim=1)
    kl = F.kl_div(log_main, log_aux, log_target=True, reduction="none").sum(1)
    return torch.exp(-kl.clamp(min=0.0))  # clamp: rounding can make a zero KL slightly negative


def ohem_threshold(true_class_probs: torch.Tensor, valid: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """The OHEM threshold of the official `get_mask`: tau, raised to the `min_kept`-th smallest true-class
    probability when that one is larger, so that at least `min_kept` pixels are hard.

    Ignored pixels count with probability 1 (they sort last), exactly as the official code. When `min_kept` reaches
    the number of valid pixels the threshold reaches their largest probability: every valid pixel is hard (the
    official OHEM loss keeps all pixels then; its `get_mask` would fail).
    """
    q = true_class_probs.float().masked_fill(~valid, 1.0).reshape(-1)
    threshold = q.new_tensor(float(thresh))
    if min_kept > 0 and bool(valid.any()):
        q_k = q.kthvalue(min(q.numel(), min_kept)).values
        threshold = torch.where(q_k > threshold, q_k, threshold)
    return threshold


def ohem_hard_mask(
    logits: torch.Tensor, labels: torch.Tensor, thresh: float = 0.7, min_kept: int = 100000, ignore_index: int = 255
) -> torch.Tensor:
    """Boolean (B, H, W) mask of the pixels a network finds hard: valid and true-class probability <= the OHEM
    threshold (`ohem_threshold`). `logits` (B, C, h, w) are upsampled to the labels' (H, W) first (bilinear,
    `align_corners=True`, as the official code)."""
    logits = _resize(logits.float(), labels.shape[-2:])
    valid = labels != ignore_index
    safe = labels.masked_fill(~valid, 0).long()
    q = F.softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    return valid & (q.masked_fill(~valid, 1.0) <= ohem_threshold(q, valid, thresh, min_kept))


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`T^2 * sum KL(softmax(t / T) || softmax(s / T)) / (B * h * w)`: the pixel-wise KD of the official
    `CriterionKD` (batchmean over pixel rows), at the teacher's logit resolution, in float32.

    When the student's (h, w) differ from the teacher's (e.g. Segformer logits at 1/4 of the input, UperNet at the
    input size), the student logits are resized to the teacher's (bilinear, `align_corners=True`); the official code
    assumes equal sizes.
    """
    if student_logits.dim() != 4 or teacher_logits.dim() != 4 or student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(
            f"Pixel KD needs (B, C, h, w) logits with the same batch and classes; got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}."
        )
    s = _resize(student_logits.float(), teacher_logits.shape[-2:])
    num_classes = s.shape[1]
    s = s.permute(0, 2, 3, 1).reshape(-1, num_classes)
    t = teacher_logits.float().permute(0, 2, 3, 1).reshape(-1, num_classes)
    T = temperature
    return F.kl_div(
        F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True, reduction="batchmean"
    ) * (T * T)


def _weighted_ce(logits: torch.Tensor, targets: torch.Tensor, class_weights, ignore_index: int) -> torch.Tensor:
    """`CrossEntropyLoss(weight, ignore_index, reduction='mean')`, but 0 (with a zero, finite gradient) instead of
    the 0/0 NaN when every pixel is ignored."""
    per_pixel = F.cross_entropy(logits, targets, weight=class_weights, ignore_index=ignore_index, reduction="none")
    valid = targets != ignore_index
    if class_weights is None:
        denominator = valid.sum()
    else:
        denominator = class_weights[targets.masked_fill(~valid, 0)].masked_fill(~valid, 0.0).sum()
    return per_pixel.sum() / denominator.clamp(min=torch.finfo(per_pixel.dtype).tiny)


def rdd_task_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    stage: int,
    teacher_logits: torch.Tensor | None = None,
    teacher_aux_logits: torch.Tensor | None = None,
    student_aux_logits: torch.Tensor | None = None,
    aux_weight: float = 0.4,
    ohem_thresh: float = 0.7,
    min_kept: int = 100000,
    class_weights: torch.Tensor | list[float] | None = None,
    ignore_index: int = 255,
) -> tuple[torch.Tensor, dict]:
    """RDD's task loss for `stage` 1 or 2, or the plain CE of the `kd_only` baseline (`stage=0`).

    All logits (B, C, h, w) are upsampled to the labels' (H, W) (bilinear, `align_corners=True`); CE runs in float32.
    A label that is neither a class id in 0..C-1 nor `ignore_index` is an error (one min/max over the labels).

    - stage 0: `CE_w(z_s, y) + aux_weight * CE_w(a_s, y)`, class-weighted means over valid pixels.
    - stage 1: `mean over all B*H*W pixels of w * (CE(z_s, y) + aux_weight * CE(a_s, y))` with `w` =
      `difficulty_weights(z_t, a_t)` upsampled; ignored pixels add 0 but stay in the denominator (official). No
      teacher aux logits: w = 1 (the trainer allows that only with `stage1_without_aux_head="uniform_weights"`).
    - stage 2: `CE_w(z_s, y | M) + aux_weight * CE_w(a_s, y | M_aux)`, `M = hard(z_s) XOR hard(z_t)` (OHEM masks),
      `M_aux = hard(a_s) XOR hard(a_t)` (teacher main logits when it has no aux head); pixels outside M are ignored.
      An empty mask gives 0, not NaN.

    A term of the student's auxiliary head vanishes when `student_aux_logits` is None. Returns `(loss, stats)` with
    `stats["mean_weight"]` (stage 1: mean w over valid pixels) or `stats["mask_fraction"]` (stage 2: share of valid
    pixels in M).
    """
    if stage not in (0, 1, 2):
        raise ValueError(f"`stage` must be 0 (kd_only), 1 or 2, got {stage!r}.")
    if labels.dim() != 3:
        raise ValueError(f"Segmentation labels must have shape (B, H, W), got {tuple(labels.shape)}.")
    if stage > 0 and teacher_logits is None:
        raise ValueError(f"Stage {stage} of RDD needs `teacher_logits`.")
    labels = labels.long().to(student_logits.device)
    num_classes = student_logits.shape[1]
    if labels.numel():
        low, high = torch.aminmax(labels.masked_fill(labels == ignore_index, 0))  # one pass and one sync
        if bool((low < 0) | (high >= num_classes)):
            bad = int(low) if low < 0 else int(high)
            raise ValueError(
                f"`labels` hold {bad}, which is neither a class id in 0..{num_classes - 1} nor "
                f"ignore_index={ignore_index}; map such pixels to a class or to the ignore index."
            )
    size = labels.shape[-2:]
    if class_weights is not None and not torch.is_tensor(class_weights):
        class_weights = torch.tensor(class_weights)
    if class_weights is not None:
        class_weights = class_weights.to(device=student_logits.device, dtype=torch.float32)
        if class_weights.numel() != student_logits.shape[1]:
            raise ValueError(
                f"`class_weights` has {class_weights.numel()} entries but the logits have "
                f"{student_logits.shape[1]} classes; give one weight per class."
            )
    heads = [(student_logits, teacher_logits, 1.0)]
    if student_aux_logits is not None and aux_weight > 0:
        teacher_for_aux = teacher_aux_logits if teacher_aux_logits is not None else teacher_logits
        heads.append((student_aux_logits, teacher_for_aux, aux_weight))
    valid = labels != ignore_index
    stats: dict = {}

    if stage == 0:
        loss = sum(
            weight * _weighted_ce(_resize(s.float(), size), labels, class_weights, ignore_index)
            for s, _, weight in heads
        )
        return loss, stats

    if stage == 1:
        if teacher_aux_logits is None:
            w = torch.ones(labels.shape, device=labels.device)
        else:
            w = _resize(difficulty_weights(teacher_logits, teacher_aux_logits).unsqueeze(1), size).squeeze(1)
        ce = sum(
            weight * F.cross_entropy(_resize(s.float(), size), labels, ignore_index=ignore_index, reduction="none")
            for s, _, weight in heads
        )
        stats["mean_weight"] = w[valid].mean().detach() if valid.any() else w.new_ones(())
        return (w.to(ce.device) * ce).mean(), stats

    loss = student_logits.new_zeros((), dtype=torch.float32)
    for i, (s, t, weight) in enumerate(heads):
        s = _resize(s.float(), size)
        with torch.no_grad():
            mask = ohem_hard_mask(s.detach(), labels, ohem_thresh, min_kept, ignore_index) ^ ohem_hard_mask(
                t, labels, ohem_thresh, min_kept, ignore_index
            )
        if i == 0:
            stats["mask_fraction"] = mask.sum() / valid.sum().clamp(min=1)
        loss = loss + weight * _weighted_ce(s, labels.masked_fill(~mask, ignore_index), class_weights, ignore_index)
    return loss, stats


# ---------------------------------------------------------------- the trainer
class RDDTrainer(FrozenTeacherTrainer):
    """Trains a segmentation student with RDD against a frozen teacher (see `RDDConfig` for the loss).

    Student and teacher are transformers segmentation models (`UperNetForSemanticSegmentation`,
    `SegformerForSemanticSegmentation`, ...) or any model whose output has `logits` (B, C, h, w); the batch needs
    `pixel_values` and `labels` (B, H, W). Auxiliary logits come from the models' `auxiliary_head` through a forward
    hook (`segmentation_forward`). Stage 1 needs a teacher with an auxiliary head (e.g. UperNet with
    `use_auxiliary_head=True`); the student's is optional. The stage is read from `self.state.global_step`: stage 1
    while it is below `rdd_warmup_steps` (every micro-batch of one optimizer step sees the same stage). The official
    loop, counting from 1 with `iteration < warmup_iter`, runs one stage-1 iteration fewer.

    The teacher handling (frozen, eval mode, no gradient, never saved) is `FrozenTeacherTrainer`'s; a teacher given by
    name is loaded with `AutoModelForSemanticSegmentation`. Every loss term is a per-batch mean, as in the official
    code, so gradient accumulation averages micro-batch losses and DDP averages per-process ones. The logs get
    `task_loss` and `kd_loss` (unweighted).
    """

    config_class = RDDConfig
    loss_parts = ("task_loss", "kd_loss")
    card_tags = ("distillation", "knowledge-distillation", "semantic-segmentation", "rdd")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.args
        # Per-batch means (official): the Trainer divides by the accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        self._warned: set[str] = set()
        self.last_rdd_stats: dict = {}

        num_labels = getattr(getattr(_unwrap(self.model), "config", None), "num_labels", None)
        if config.class_weights is not None and num_labels is not None and len(config.class_weights) != num_labels:
            raise ValueError(
                f"`class_weights` has {len(config.class_weights)} entries but the student has num_labels="
                f"{num_labels}; give one weight per class (or None)."
            )
        self._class_weights = None if config.class_weights is None else torch.tensor(config.class_weights)
        self.teacher_has_aux_head = auxiliary_head(self.teacher_model) is not None
        if config.rdd_method == "rdd" and config.rdd_warmup_steps > 0 and not self.teacher_has_aux_head:
            name = type(_unwrap(self.accelerator.unwrap_model(self.teacher_model))).__name__
            if config.stage1_without_aux_head == "error":
                raise ValueError(
                    f"RDD stage 1 weighs pixels by the disagreement of the teacher's main and auxiliary heads, but the "
                    f"teacher ({name}) has no `auxiliary_head`. Use a teacher with one (e.g. UperNet with "
                    "use_auxiliary_head=True), set `rdd_warmup_steps=0` (stage 2 only), or set "
                    "`stage1_without_aux_head='uniform_weights'` (weight 1 for every pixel in stage 1)."
                )
            logger.warning(
                "The RDD teacher (%s) has no auxiliary head: stage 1 (the first %d steps) uses weight 1 for every "
                "pixel, i.e. plain CE + KD (stage1_without_aux_head='uniform_weights').",
                name,
                config.rdd_warmup_steps,
            )

    def _load_teacher(self, name_or_path: str) -> PreTrainedModel:
        kwargs = frozen_init_kwargs(self.args.teacher_model_init_kwargs, self.args.teacher_dtype)
        return AutoModelForSemanticSegmentation.from_pretrained(name_or_path, **kwargs)

    def _card_loss_description(self) -> str:
        args = self.args
        task = (
            "CE"
            if args.rdd_method == "kd_only"
            else f"the RDD task CE ({args.rdd_warmup_steps} stage-1 steps weighted by the teacher's head agreement, "
            f"then the pixels exactly one of teacher and student finds hard, OHEM tau {args.ohem_thresh:g})"
        )
        return (
            f"`RDDTrainer` ({args.rdd_method}): {task} + {args.aux_weight:g} x the auxiliary head's CE + "
            f"{args.lambda_logits:g} x pixel-wise soft KD (KL x T^2, T={args.temperature:g})"
        )

    def rdd_stage(self) -> int:
        """0 for `rdd_method="kd_only"`, else 1 while `state.global_step < rdd_warmup_steps`, then 2."""
        if self.args.rdd_method == "kd_only":
            return 0
        return 1 if self.state.global_step < self.args.rdd_warmup_steps else 2

    def _warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError("RDDTrainer needs pixel `labels` (B, H, W) in every batch (its task loss is a CE).")
        outputs, student_logits, student_aux = segmentation_forward(model, inputs)

        teacher_inputs = cast_floating(inputs, args.teacher_dtype)
        self.teacher_model.eval()
        with torch.no_grad():
            _, teacher_logits, teacher_aux = segmentation_forward(self.teacher_model, teacher_inputs)

        stage = self.rdd_stage()
        if stage == 1 and teacher_aux is None and args.stage1_without_aux_head == "error":
            raise ValueError(
                "RDD stage 1 needs the teacher's auxiliary logits, but its auxiliary head did not run in this forward. "
                "Set `stage1_without_aux_head='uniform_weights'` or `rdd_warmup_steps=0`."
            )
        if stage == 2 and not getattr(self, "_min_kept_checked", False):
            # Checked on the first stage-2 batch only: counting every step would force a device sync per step.
            self._min_kept_checked = True
            valid = int((labels != args.ignore_index).sum())
            if args.min_kept >= valid:
                self._warn_once(
                    "min_kept",
                    "min_kept=%d >= the %d valid pixels of a batch: every valid pixel is hard for both "
                    "teacher and student, so the stage-2 XOR mask is empty and only KD trains. Lower `min_kept` "
                    "(official 100000 is ~4.8%% of 4x512x1024 pixels).",
                    args.min_kept,
                    valid,
                )
        task, stats = rdd_task_loss(
            student_logits,
            labels,
            stage=stage,
            teacher_logits=teacher_logits,
            teacher_aux_logits=teacher_aux,
            student_aux_logits=student_aux,
            aux_weight=args.aux_weight,
            ohem_thresh=args.ohem_thresh,
            min_kept=args.min_kept,
            class_weights=self._class_weights,
            ignore_index=args.ignore_index,
        )
        kd = pixel_kd_loss(student_logits, teacher_logits, args.temperature)
        loss = task + args.lambda_logits * kd
        self.last_rdd_stats = {"stage": stage, **stats}
        loss = self._scale_and_record(model, loss, {"task_loss": task, "kd_loss": kd}, None)
        return (loss, outputs) if return_outputs else loss
