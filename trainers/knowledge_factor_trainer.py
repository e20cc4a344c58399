"""Knowledge Factorization (KF, Yang et al., ECCV 2022) as a `FrozenTeacherTrainer`: a `KnowledgeFactorModel` learns
from a frozen multi-task teacher (its multi-scale features and its logits) and the labels of every task.

`MultiTaskDistillationTrainer` is the plain baseline KF is compared with: any classifier whose logits are its tasks'
logits side by side, trained on the same label-smoothed cross-entropies and soft-target KD per task, without
factorization (and, with `distillation_type="none"`, how such a multi-task teacher or a student from scratch trains).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForImageClassification, PreTrainedModel

from .frozen_models import FrozenTeacherTrainer, _logits, _unwrap, frozen_init_kwargs, unwrap_parallel
from .knowledge_factor_config import KnowledgeFactorTrainingConfig
from .knowledge_factor_losses import (
    BatchInfoMinLoss,
    InfoMaxLoss,
    smoothed_cross_entropy,
    soft_target_loss,
    split_task_logits,
)


def _task_label_matrix(labels: torch.Tensor, task_num_labels: list[int], task_names: list[str]) -> torch.Tensor:
    """`labels` as (batch, tasks) class indices, or a ValueError naming the mismatch."""
    k = len(task_num_labels)
    if labels.dim() == 1 and k == 1:
        labels = labels.unsqueeze(1)
    if labels.dim() != 2 or labels.shape[1] != k:
        raise ValueError(
            f"labels must have shape (batch, {k}): one class index per task ({', '.join(task_names)}), got "
            f"{tuple(labels.shape)}."
        )
    return labels


class _MultiTaskTeacher:
    """What both trainers share: the teacher is an image classifier (loaded by name with
    `AutoModelForImageClassification`), whose logits are the tasks' logits side by side."""

    def _load_teacher(self, name_or_path: str) -> PreTrainedModel:
        kwargs = frozen_init_kwargs(self.args.teacher_model_init_kwargs, self.args.teacher_dtype)
        return AutoModelForImageClassification.from_pretrained(name_or_path, **kwargs)

    def _check_labels(self, inputs: dict) -> torch.Tensor:
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError(
                f"{type(self).__name__} needs `labels` in every batch: (batch, {len(self.task_num_labels)}) class "
                "indices, one per task."
            )
        return _task_label_matrix(labels, self.task_num_labels, self.task_names)


class KnowledgeFactorTrainer(_MultiTaskTeacher, FrozenTeacherTrainer):
    """Trains a `KnowledgeFactorModel` with KF's loss (see `KnowledgeFactorTrainingConfig` for the formula and the
    official defaults): InfoMax between the teacher's projected multi-scale features and the CKN's, soft-target KD of
    every task's logits, label-smoothed cross-entropy of every task's prediction and of its TSN's own head, and the
    batch InfoMin bottleneck on every TSN's feature.

    The teacher is an image classifier whose logits are the tasks' logits side by side (`num_labels` = the student's
    `config.num_labels`, same `id2label`) or a tuple of per-task logits, and which returns `hidden_states` when called
    with `output_hidden_states=True` (the project's VGG / ResNet-12, transformers' ResNet, ViT, ...). It is frozen,
    placed, and never saved (`FrozenTeacherTrainer`). When the student has no feature projectors yet, they are built
    here from the widths the teacher's config gives for `teacher_feature_layers` (and saved with the student, as the
    official checkpoints keep `feat_fcs`; `assemble` drops them).

    Every term is a per-batch mean, as in the official code (no `num_items_in_batch`). A one-row batch (a last
    incomplete batch) skips InfoMax, which contrasts the rows of a batch, and InfoMin, which needs a batch variance.
    """

    config_class = KnowledgeFactorTrainingConfig
    loss_parts = ("infomax_loss", "kd_loss", "cls_loss", "task_loss", "infomin_loss")
    card_tags = ("distillation", "knowledge-distillation", "knowledge-factorization")
    card_method = "KF"

    def __init__(self, model=None, args=None, *posargs, teacher_model=None, **kwargs):
        super().__init__(model, args, *posargs, teacher_model=teacher_model, **kwargs)
        self.model_accepts_loss_kwargs = False  # per-batch means: the Trainer divides by the accumulation steps
        student = self._student()
        config = student.config
        self.task_num_labels, self.task_names = config.task_num_labels, config.task_names
        self.infomax = InfoMaxLoss(self.args.infomax_estimator)
        self.infomin = BatchInfoMinLoss()
        self.teacher_layers = None
        if self.teacher_model is not None:
            self.teacher_layers = self._teacher_layers(config)
            self._build_projectors(student)

    def _student(self):
        from ..models.knowledge_factor import KnowledgeFactorModel

        student = _unwrap(unwrap_parallel(self.model))
        if not isinstance(student, KnowledgeFactorModel):
            raise TypeError(
                f"KnowledgeFactorTrainer trains a KnowledgeFactorModel, got {type(student).__name__}; use "
                "MultiTaskDistillationTrainer for a plain multi-task classifier."
            )
        return student

    def _teacher_layers(self, config) -> list[int]:
        count = len(config.ckn_feature_layers)
        layers = self.args.teacher_feature_layers
        if layers is None:
            return list(range(-count, 0))
        if len(layers) != count:
            raise ValueError(
                f"`teacher_feature_layers` has {len(layers)} entries but the student's CKN has {count} feature layers "
                f"(ckn_feature_layers={config.ckn_feature_layers}); InfoMax pairs them one to one."
            )
        return list(layers)

    def _build_projectors(self, student) -> None:
        """The feature projectors (teacher width -> CKN width per layer), when the student has none yet."""
        from ..models.knowledge_factor import feature_projector, hidden_state_widths

        config = student.config
        teacher_config = getattr(unwrap_parallel(self.teacher_model), "config", None)
        widths = hidden_state_widths(teacher_config) if teacher_config is not None else None
        wanted = None
        if widths is not None and all(-len(widths) <= i < len(widths) for i in self.teacher_layers):
            wanted = [widths[i] for i in self.teacher_layers]
        if config.teacher_feature_sizes is not None:
            if wanted is not None and wanted != config.teacher_feature_sizes:
                raise ValueError(
                    f"the student's feature projectors take teacher widths {config.teacher_feature_sizes}, but the "
                    f"teacher's hidden states {self.teacher_layers} have widths {wanted}; build the student with "
                    "teacher_feature_sizes=None (the trainer then builds projectors for this teacher)."
                )
            return
        if wanted is None:
            raise ValueError(
                "cannot read the widths of the teacher's hidden states "
                f"{self.teacher_layers} from its config; build the student with teacher_feature_sizes (one width per "
                "CKN feature layer), or set teacher_feature_layers to indices the teacher has."
            )
        config.teacher_feature_sizes = wanted
        reference = next(student.parameters())
        student.feature_projectors.extend(
            feature_projector(t, s).to(device=reference.device, dtype=reference.dtype)
            for t, s in zip(wanted, config.ckn_feature_sizes)
        )

    def _teacher_signals(self, inputs: dict) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
        """(the teacher's pooled features at `teacher_layers`, its per-task logits)."""
        from ..models.knowledge_factor import global_pool

        outputs = self._teacher_outputs({**inputs, "output_hidden_states": True})
        states = outputs.get("hidden_states") if isinstance(outputs, dict) else getattr(outputs, "hidden_states", None)
        if not states:
            raise ValueError(
                "the teacher returned no hidden_states with output_hidden_states=True; KF's InfoMax needs its "
                "multi-scale features: give a teacher whose forward returns them (e.g. the project's VGG, "
                "transformers' ResNet or ViT), or use distillation_type='none'."
            )
        if any(not -len(states) <= i < len(states) for i in self.teacher_layers):
            raise ValueError(
                f"teacher_feature_layers {self.teacher_layers} do not fit the teacher, which returns {len(states)} "
                "hidden states."
            )
        features = [global_pool(states[i]).float() for i in self.teacher_layers]
        return features, split_task_logits(_logits(outputs), self.task_num_labels)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = self._check_labels(inputs)
        distill = self.teacher_model is not None
        teacher_features, teacher_logits = self._teacher_signals(inputs) if distill else (None, None)
        # InfoMax contrasts the rows of a batch (and its projectors hold a BatchNorm): a one-row batch skips it
        contrast = distill and labels.shape[0] > 1
        outputs = model(**inputs, teacher_features=teacher_features if contrast else None)
        labels = labels.to(outputs.logits[0].device)
        zero = outputs.logits[0].new_zeros((), dtype=torch.float32)
        infomax = zero
        if contrast:
            pairs = zip(outputs.teacher_projections, outputs.ckn_hidden_states)
            infomax = torch.stack([self.infomax(u, v) for u, v in pairs]).mean()
        cls, task, kd, infomin = zero, zero, zero, zero
        smoothing, mode = args.label_smoothing_factor, args.label_smoothing_mode
        for k in range(len(self.task_num_labels)):
            y = labels[:, k]
            cls = cls + smoothed_cross_entropy(outputs.logits[k], y, smoothing, mode)
            task = task + smoothed_cross_entropy(outputs.task_logits[k], y, smoothing, mode)
            infomin = infomin + self.infomin(outputs.tsn_features[k])
            if distill:
                kd = kd + soft_target_loss(outputs.logits[k], teacher_logits[k], args.temperature)
        loss = (
            args.lambda_infomax * infomax
            + args.lambda_logits * kd
            + cls
            + args.lambda_task * task
            + args.lambda_infomin * infomin
        )
        parts = {"infomax_loss": infomax, "kd_loss": kd, "cls_loss": cls, "task_loss": task, "infomin_loss": infomin}
        loss = self._scale_and_record(model, loss, parts, None)
        return (loss, outputs) if return_outputs else loss

    def _card_loss_description(self) -> str:
        a = self.args
        return (
            f"Knowledge Factorization: InfoMax x {a.lambda_infomax:g} ({a.infomax_estimator} estimator) on the CKN's "
            f"features, soft-target KD x {a.lambda_logits:g} (T={a.temperature:g}), label-smoothed cross-entropy "
            f"({a.label_smoothing_factor:g}) of every task, its TSN's own head x {a.lambda_task:g}, batch InfoMin x "
            f"{a.lambda_infomin:g}"
        )


class MultiTaskDistillationTrainer(_MultiTaskTeacher, FrozenTeacherTrainer):
    """The plain multi-task baseline: a classifier (`...ForImageClassification`) whose logits are its tasks' logits
    side by side (`num_labels` = the sum of `task_num_labels`), trained per task on the label-smoothed cross-entropy
    plus `lambda_logits * T^2 * KL` against the teacher (`distillation_type="none"`: the cross-entropies alone,
    e.g. to train the multi-task teacher or a student from scratch). It reads `temperature`, `lambda_logits`,
    `label_smoothing_factor`, `label_smoothing_mode` and `distillation_type` of its `KnowledgeFactorTrainingConfig`;
    the KF-only fields are ignored."""

    config_class = KnowledgeFactorTrainingConfig
    loss_parts = ("cls_loss", "kd_loss")

    def __init__(
        self,
        model=None,
        args=None,
        *posargs,
        task_num_labels: list[int],
        task_names: list[str] | None = None,
        teacher_model=None,
        **kwargs,
    ):
        super().__init__(model, args, *posargs, teacher_model=teacher_model, **kwargs)
        self.model_accepts_loss_kwargs = False
        if not task_num_labels or not all(isinstance(n, int) and n >= 2 for n in task_num_labels):
            raise ValueError(f"`task_num_labels` must list every task's class count (>= 2), got {task_num_labels!r}.")
        self.task_num_labels = list(task_num_labels)
        self.task_names = list(task_names or [f"task_{k}" for k in range(len(task_num_labels))])
        width = getattr(getattr(_unwrap(unwrap_parallel(self.model)), "config", None), "num_labels", None)
        if width is not None and width != sum(self.task_num_labels):
            raise ValueError(
                f"the model has {width} logits but the tasks have {self.task_num_labels} classes "
                f"({sum(self.task_num_labels)} together); give it num_labels = the sum, the tasks side by side."
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = self._check_labels(inputs)
        outputs = model(**inputs)
        logits = split_task_logits(_logits(outputs), self.task_num_labels)
        labels = labels.to(logits[0].device)
        teacher = None
        if self.teacher_model is not None:
            teacher = split_task_logits(_logits(self._teacher_outputs(inputs)), self.task_num_labels)
        cls = logits[0].new_zeros((), dtype=torch.float32)
        kd = cls
        for k, z in enumerate(logits):
            cls = cls + smoothed_cross_entropy(z, labels[:, k], args.label_smoothing_factor, args.label_smoothing_mode)
            if teacher is not None:
                kd = kd + soft_target_loss(z, teacher[k], args.temperature)
        loss = cls + args.lambda_logits * kd
        loss = self._scale_and_record(model, loss, {"cls_loss": cls, "kd_loss": kd}, None)
        return (loss, outputs) if return_outputs else loss

    def _card_loss_description(self) -> str:
        a = self.args
        return (
            f"per task: label-smoothed cross-entropy ({a.label_smoothing_factor:g}) + soft-target KD x "
            f"{a.lambda_logits:g} (T={a.temperature:g})"
        )
