"""Knowledge distillation (DeiT-style soft / hard KD) as a `transformers.Trainer` subclass.

The frozen-model plumbing this trainer shares with the other distillation trainers (teacher placement, dtype, never
saved, the resume workaround) is in `frozen_models.py`; its names stay importable from here.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .distillation_config import DistillationConfig
from .frozen_models import (  # noqa: F401 - re-exported: they were defined here before frozen_models.py
    FrozenTeacherTrainer,
    StudentSideModule,
    _is_causal_lm,
    _logits,
    _unwrap,
    cast_floating,
    detach_from_checkpoint,
    frozen_init_kwargs,
    output_size,
)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`T^2 * KL(softmax(t / T) || softmax(s / T))`, summed over classes, averaged over the batch (reduction
    "batchmean": the soft KD of KF's official `SoftTarget` and, over T^2, of LIRF)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher logits have shape {tuple(teacher_logits.shape)} but the student's have "
            f"{tuple(student_logits.shape)}; they must share the task's classes."
        )
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * t
        * t
    )


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    distillation_type: str = "soft",
    alpha: float = 0.5,
    temperature: float = 1.0,
    kd_normalization: str = "numel",
    shift_labels: bool = False,
    num_items_in_batch: torch.Tensor | int | None = None,
    mask: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(1 - alpha) * CE(student, labels) + alpha * KD(student, teacher)`, computed in float32.

    Every term is a sum over valid items (samples, or tokens of a language model) divided by `num_items_in_batch`
    when given (the count over a whole accumulated batch), else by the number of valid items here. Items whose label is
    `ignore_index` (or whose `mask` is 0 when there are no labels) count nowhere.

    - soft KD: `T^2 * sum KL(softmax(t / T) || softmax(s / T))` over items, divided by the item count
      (`kd_normalization="batchmean"`) or by item count x num_classes (`"numel"`, DeiT/TLEG).
    - hard KD: cross-entropy of the student against the teacher's argmax (DeiT hard distillation).
    - `distillation_type="none"`: plain cross-entropy; the teacher is ignored.

    `shift_labels=True` (causal LMs) drops the last position of the logits and the first of the labels / mask.
    Returns `(loss, ce, kd)`; a term that is not computed is 0.
    """
    if distillation_type not in ("soft", "hard", "none"):
        raise ValueError(f"`distillation_type` must be 'soft', 'hard' or 'none', got {distillation_type!r}.")
    if kd_normalization not in ("numel", "batchmean"):
        raise ValueError(f"`kd_normalization` must be 'numel' or 'batchmean', got {kd_normalization!r}.")
    if distillation_type == "none":
        alpha = 0.0
    if alpha > 0:
        if teacher_logits is None:
            raise ValueError(f"distillation_type={distillation_type!r} with alpha={alpha} needs teacher logits.")
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"Teacher logits have shape {tuple(teacher_logits.shape)} but student logits have shape "
                f"{tuple(student_logits.shape)}; teacher and student must share the output space and the inputs."
            )
    if labels is None and alpha < 1:
        raise ValueError(
            f"The batch has no `labels`, but alpha={alpha} < 1 gives the cross-entropy term weight {1 - alpha}. "
            "Add labels to the batch or set alpha=1.0 (pure distillation)."
        )

    s = student_logits.float()
    t = teacher_logits.float() if alpha > 0 else None
    if shift_labels:
        s = s[..., :-1, :]
        t = t[..., :-1, :] if t is not None else None
        labels = labels[..., 1:] if labels is not None else None
        mask = mask[..., 1:] if mask is not None else None
    num_classes = s.shape[-1]
    s = s.reshape(-1, num_classes)
    if labels is not None:
        labels = labels.reshape(-1).to(s.device)
        valid = labels != ignore_index
    elif mask is not None:
        valid = mask.reshape(-1).to(s.device).bool()
    else:
        valid = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
    n = num_items_in_batch if num_items_in_batch is not None else valid.sum().clamp(min=1)
    if torch.is_tensor(n):
        n = n.to(s.device)

    zero = s.new_zeros(())
    ce = zero
    if labels is not None:
        ce = F.cross_entropy(s, labels, ignore_index=ignore_index, reduction="sum", label_smoothing=label_smoothing) / n
    kd = zero
    if alpha > 0:
        s_valid, t_valid = s[valid], t.reshape(-1, num_classes)[valid]
        if distillation_type == "soft":
            T = temperature
            kl = F.kl_div(
                F.log_softmax(s_valid / T, dim=-1), F.log_softmax(t_valid / T, dim=-1), log_target=True, reduction="sum"
            )
            kd = kl * T * T / (n * num_classes if kd_normalization == "numel" else n)
        else:
            kd = F.cross_entropy(s_valid, t_valid.argmax(dim=-1), reduction="sum") / n
    loss = (1 - alpha) * ce + alpha * kd
    return loss, ce, kd


class DistillationTrainer(FrozenTeacherTrainer):
    """Trains a student on `(1 - alpha) * CE + alpha * KD` against a frozen teacher (DeiT soft/hard distillation).

    Why a trainer and not a model: the teacher must not be a submodule of the student, or it would be optimized and
    written into every checkpoint. Here it is a trainer attribute (`self.teacher_model`): frozen, in eval mode, run
    under `torch.no_grad()`, placed on each process's device by `accelerator.prepare_model(evaluation_mode=True)`
    (replicated on every rank, also under FSDP), never saved (`FrozenTeacherTrainer`).

    `teacher_model` is a `PreTrainedModel` or a Hub id / folder (default `args.teacher_model_name_or_path`), loaded
    with `args.teacher_model_init_kwargs` by the Auto class whose mapping lists the student's class
    (`AutoModelForCausalLM`, `AutoModelForImageClassification`, `AutoModelForSequenceClassification`, ...). For
    other students, pass a loaded teacher. Output sizes (vocabulary or `num_labels`) are checked in `__init__`.

    The loss is a sum over items divided by `num_items_in_batch`, so gradient accumulation and multi-process training
    give the same update as one big batch. Causal LMs are shifted. Under DeepSpeed the teacher gets an inference engine
    (`FrozenModelsTrainer._prepare_frozen`: partitioned under ZeRO-3, a replica under ZeRO-1/2).
    """

    config_class = DistillationConfig
    loss_parts = ("ce_loss", "kd_loss")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        student_logits = _logits(outputs)

        teacher_logits = None
        if args.distillation_type != "none" and args.alpha > 0:
            teacher_logits = _logits(self._teacher_outputs(inputs))

        if torch.is_tensor(num_items_in_batch) and num_items_in_batch.numel() > 1:
            num_items_in_batch = num_items_in_batch.reshape(-1)[0]  # DataParallel hands one copy per GPU
        mask = inputs.get("attention_mask") if labels is None and student_logits.dim() == 3 else None
        loss, ce, kd = distillation_loss(
            student_logits,
            teacher_logits,
            labels,
            distillation_type=args.distillation_type,
            alpha=args.alpha,
            temperature=args.temperature,
            kd_normalization=args.kd_normalization,
            shift_labels=self.shift_labels,
            num_items_in_batch=num_items_in_batch,
            mask=mask,
            label_smoothing=args.label_smoothing_factor,
        )
        loss = self._scale_and_record(model, loss, {"ce_loss": ce, "kd_loss": kd}, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, **_) -> None:
        """Write the hf-methods card of the student (`Trainer.push_to_hub` uploads it): teacher -> student
        ancestry, the distillation setup and the last evaluation metrics; never the teacher's weights."""
        if not self.is_world_process_zero():
            return
        from ..cards import distilled_card

        metrics = next((e for e in reversed(self.state.log_history) if any(k.startswith("eval_") for k in e)), {})
        repo = self.hub_model_id if self.args.push_to_hub and self.hub_model_id else model_name or self.args.output_dir
        card = distilled_card(
            self.accelerator.unwrap_model(self.model), self.teacher_ref, self.args, repo, metrics, dataset=dataset_name
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))
