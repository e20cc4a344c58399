"""Multi-label knowledge distillation, L2D (Yang et al., "Multi-Label Knowledge Distillation", ICCV 2023,
arXiv 2308.06453), as a `FrozenTeacherTrainer` subclass.

Softmax KD treats the classes of a multi-label problem as exclusive. L2D instead distills each label as its own
binary problem (MLD: a Bernoulli KL per label) and distills the geometry of the label-wise embeddings (one embedding
per image and class, e.g. the per-class decoder outputs of `LabelQueryForMultiLabelClassification`): pairwise
distances among the images that share a class (class-aware, CD) and among the labels present in one image
(instance-aware, ID), normalized by their mean so only the shape is matched (RKD-style Huber loss).

Follows the official code (penghui-yang/L2D) for the math and defaults; written from its description. Deviations:
the eps clamp of the sigmoids is applied in log space (stable in float32, where 1 - 1e-8 rounds to 1), rows are
selected by the label mask (the code selects non-zero rows after masking: the same unless a row is exactly 0), and a
learned projection joins embeddings of different widths (the official teacher and student are both 768 wide).
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedConfig

from .distillation_trainer import distillation_loss
from .frozen_models import (
    FrozenTeacherTrainer,
    StudentSideModule,
    _logits,
    _unwrap,
    frozen_init_kwargs,
    unwrap_parallel,
)
from .multilabel_kd_config import (
    BCE_REDUCTIONS,
    MULTILABEL_KD_TYPES,
    MultiLabelKDConfig,
)

logger = logging.getLogger(__name__)

PROJECTION_NAME = "l2d_embedding_projection"  # submodule name on the student
PROJECTION_FILE = "l2d_embedding_projection.safetensors"
EPS = 1e-8


def _count(n, fallback: int):
    """The divisor: `n` when given (a count over a whole accumulated batch), else `fallback`, never below 1."""
    if n is None:
        return max(fallback, 1)
    return n.clamp(min=1) if torch.is_tensor(n) else max(n, 1)


def multilabel_logit_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    eps: float = EPS,
) -> torch.Tensor:
    """MLD: `(1/N) sum_i sum_c KL(Bernoulli(p_t) || Bernoulli(p_s))`, `p = clamp(sigmoid(z), eps, 1 - eps)`.

    Every label is its own binary problem, so the teacher's confidence on one class does not take mass from another
    (as a softmax would). No temperature (official). The clamp is applied to the log-probabilities
    (`logsigmoid(z) >= log(eps)`, `logsigmoid(-z) >= log(eps)`), which is what the clamp means but stays finite in
    float32. N is `num_items_in_batch` when given (images in the whole accumulated batch), else the batch size.
    Computed in float32; >= 0, and 0 exactly when the sigmoids agree.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits have shape {tuple(student_logits.shape)} but teacher logits "
            f"{tuple(teacher_logits.shape)}; teacher and student must share the inputs and label set."
        )
    s, t = student_logits.float(), teacher_logits.float().to(student_logits.device)
    log_eps = math.log(eps)
    log_ps, log_qs = F.logsigmoid(s).clamp(min=log_eps), F.logsigmoid(-s).clamp(min=log_eps)
    log_pt, log_qt = F.logsigmoid(t).clamp(min=log_eps), F.logsigmoid(-t).clamp(min=log_eps)
    kl = log_pt.exp() * (log_pt - log_ps) + log_qt.exp() * (log_qt - log_qs)
    n = _count(num_items_in_batch, s.shape[0] if s.dim() > 1 else 1)
    return kl.sum() / n


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of each group, (G, n, D) -> (G, n, n): squared norms minus twice the
    Gram matrix, clamped at 1e-12 before the square root, diagonal 0 (as the official code)."""
    sq = x.pow(2).sum(-1)
    d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (x @ x.transpose(-1, -2))
    eye = torch.eye(x.shape[-2], dtype=torch.bool, device=x.device)
    return d2.clamp(min=1e-12).sqrt().masked_fill(eye, 0.0)


def _normalized_distances(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Distances among the selected rows (`pairs`: both rows selected, off the diagonal), divided by the mean of
    the positive ones; entries outside `pairs` are 0."""
    d = _pairwise_distances(x).masked_fill(~pairs, 0.0)
    positive = (pairs & (d > 0)).sum((-1, -2)).clamp(min=1)
    mean = d.sum((-1, -2)) / positive
    return d / mean.clamp(min=torch.finfo(d.dtype).tiny)[:, None, None]


def grouped_huber_distance(student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`sum_g huber_distance(student[g][rows[g]], teacher[g][rows[g]])` over the groups with >= 2 selected rows,
    all groups at once. `student` (G, n, D_s), `teacher` (G, n, D_t), `rows` (G, n) bool. Empty -> 0."""
    if student.shape[:2] != teacher.shape[:2] or rows.shape != student.shape[:2]:
        raise ValueError(
            f"Student embeddings {tuple(student.shape)}, teacher embeddings {tuple(teacher.shape)} and "
            f"the row mask {tuple(rows.shape)} must agree in their first two dimensions."
        )
    rows = rows.to(device=student.device, dtype=torch.bool)
    counts = rows.sum(-1)
    eligible = counts >= 2
    if not bool(eligible.any()):
        return student.float().sum() * 0.0  # 0 that keeps the graph (and dtype/device), never NaN
    s, t, rows, counts = student[eligible].float(), teacher[eligible].float(), rows[eligible], counts[eligible]
    eye = torch.eye(rows.shape[-1], dtype=torch.bool, device=rows.device)
    pairs = rows.unsqueeze(-1) & rows.unsqueeze(-2) & ~eye
    with torch.no_grad():
        t_hat = _normalized_distances(t.to(s.device), pairs)
    s_hat = _normalized_distances(s, pairs)
    per_pair = F.smooth_l1_loss(s_hat, t_hat, reduction="none", beta=1.0).masked_fill(~pairs, 0.0)
    return (per_pair.sum((-1, -2)) / counts).sum()


def huber_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-style distance loss between two sets of n rows, (n, D_s) and (n, D_t): pairwise Euclidean distances,
    each matrix divided by the mean of its positive entries, smooth-L1 (beta 1) summed over all n x n entries,
    divided by n. The teacher side gets no gradient. Invariant to scaling, rotating or translating either set, and
    defined for any widths (the matrices are n x n). Fewer than 2 rows -> 0; exactly 2 rows -> 0 too (the one
    normalized distance is 1 on both sides), so only groups of 3 or more carry structure.
    """
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"huber_distance needs two (n, D) matrices with the same n, got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}."
        )
    rows = torch.ones(1, student.shape[0], dtype=torch.bool, device=student.device)
    return grouped_huber_distance(student.unsqueeze(0), teacher.unsqueeze(0), rows)


def labelwise_embedding_distillation(
    student_embeddings: torch.Tensor,
    teacher_embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    lambda_cd: float = 100.0,
    lambda_id: float = 1000.0,
    projection: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L2D's label-wise embedding distillation, `(lambda_cd * L_CD + lambda_id * L_ID, L_CD, L_ID)`.

    Embeddings are (N, C, D); a label is positive where `labels > 0.5`.
    - CD (class-aware): for each class with >= 2 positive images, `huber_distance` among those images' embeddings
      of that class; summed over classes.
    - ID (instance-aware): for each image with >= 2 positive labels, `huber_distance` among its embeddings of those
      labels; summed over images.
    Classes / images below 2 positives are skipped; nothing eligible gives 0. `projection` (e.g. a learned
    `Linear(d_student -> d_teacher)`) is applied to the student embeddings first. A term whose weight is 0 is not
    computed (returned as 0).
    """
    if student_embeddings.dim() != 3 or teacher_embeddings.dim() != 3:
        raise ValueError(
            f"label-wise embeddings must be (batch, classes, width), got {tuple(student_embeddings.shape)}"
            f" and {tuple(teacher_embeddings.shape)}."
        )
    if student_embeddings.shape[:2] != teacher_embeddings.shape[:2] or labels.shape != student_embeddings.shape[:2]:
        raise ValueError(
            f"Student embeddings {tuple(student_embeddings.shape)}, teacher embeddings "
            f"{tuple(teacher_embeddings.shape)} and labels {tuple(labels.shape)} must agree in (batch, "
            "classes)."
        )
    s = student_embeddings
    if projection is not None:
        weight = getattr(projection, "weight", None)
        s = projection(s.to(weight.dtype) if weight is not None else s)
    s, t = s.float(), teacher_embeddings.detach().float()
    positive = labels.to(s.device) > 0.5
    zero = s.sum() * 0.0
    cd = grouped_huber_distance(s.transpose(0, 1), t.transpose(0, 1), positive.t()) if lambda_cd else zero
    id_ = grouped_huber_distance(s, t, positive) if lambda_id else zero
    return lambda_cd * cd + lambda_id * id_, cd, id_


def l2d_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    student_embeddings: torch.Tensor | None = None,
    teacher_embeddings: torch.Tensor | None = None,
    *,
    multilabel_kd_type: str = "l2d",
    lambda_bce: float = 1.0,
    lambda_logits: float = 10.0,
    lambda_le: float = 1.0,
    lambda_cd: float = 100.0,
    lambda_id: float = 1000.0,
    bce_reduction: str = "sum",
    temperature: float = 1.0,
    kd_normalization: str = "batchmean",
    projection: nn.Module | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`lambda_bce * BCE + lambda_le * (lambda_cd * L_CD + lambda_id * L_ID) + lambda_logits * L_logits`.

    - BCE on multi-hot `labels` (soft targets allowed; a value outside [0, 1] is an error): summed over images and
      classes (`bce_reduction="sum"`, official) or divided by N x C (`"mean"`).
    - `multilabel_kd_type="l2d"`: L_logits = MLD (`multilabel_logit_distillation`); the embedding terms
      (`labelwise_embedding_distillation`) when both embeddings are given and `lambda_le > 0`.
    - `"softmax"` (baseline): L_logits = `T^2 * KL(softmax(z_t / T) || softmax(z_s / T))` summed, divided by N
      (`kd_normalization="batchmean"`) or N x C (`"numel"`), as `distillation_loss`; no embedding terms.
    - `teacher_logits=None`: BCE only.
    N is `num_items_in_batch` when given (images over a whole accumulated batch, so gradient accumulation reproduces
    the big batch for BCE and the logit term), else the batch size; the embedding terms are sums over the groups in
    this batch, as in the official code. Returns `(loss, {"bce", "kd", "cd", "id"})` (unweighted parts, 0 when
    unused), in float32.
    """
    if multilabel_kd_type not in MULTILABEL_KD_TYPES:
        raise ValueError(f"`multilabel_kd_type` must be one of {MULTILABEL_KD_TYPES}, got {multilabel_kd_type!r}.")
    if bce_reduction not in BCE_REDUCTIONS:
        raise ValueError(f"`bce_reduction` must be one of {BCE_REDUCTIONS}, got {bce_reduction!r}.")
    if student_logits.dim() != 2:
        raise ValueError(f"Multi-label logits must be (batch, classes), got {tuple(student_logits.shape)}.")
    s = student_logits.float()
    batch, num_classes = s.shape
    use_teacher = teacher_logits is not None
    use_le = (
        use_teacher
        and multilabel_kd_type == "l2d"
        and lambda_le > 0
        and student_embeddings is not None
        and teacher_embeddings is not None
    )
    if labels is None and (lambda_bce > 0 or use_le):
        raise ValueError(
            "The batch has no `labels`: the BCE term (lambda_bce > 0) and the label-wise embedding terms need "
            "multi-hot labels. Add them, or set lambda_bce=0 and lambda_le=0 (pure logit distillation)."
        )
    if labels is not None:
        labels = labels.to(s.device).float()
        if labels.shape != s.shape:
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} but the logits {tuple(s.shape)}: give multi-hot "
                "float labels of shape (batch, num_classes)."
            )
        if labels.numel():
            low, high = torch.aminmax(labels)  # one pass and one sync; NaN fails both comparisons
            if not bool((low >= 0) & (high <= 1)):
                raise ValueError(
                    f"`labels` must be multi-hot (or soft) targets in [0, 1], got values from {float(low):g} to "
                    f"{float(high):g}; map each class to 0/1 (or a probability) before training."
                )
    n = _count(num_items_in_batch, batch)
    zero = s.sum() * 0.0
    parts = {"bce": zero, "kd": zero, "cd": zero, "id": zero}
    if labels is not None:
        bce = F.binary_cross_entropy_with_logits(s, labels, reduction="sum")
        parts["bce"] = bce if bce_reduction == "sum" else bce / (n * num_classes)
    if use_teacher:
        if multilabel_kd_type == "l2d":
            parts["kd"] = multilabel_logit_distillation(s, teacher_logits, n)
        else:
            if teacher_logits.shape != s.shape:
                raise ValueError(
                    f"Teacher logits have shape {tuple(teacher_logits.shape)} but student logits "
                    f"{tuple(s.shape)}; teacher and student must share the inputs and label set."
                )
            if batch:
                _, _, parts["kd"] = distillation_loss(
                    s,
                    teacher_logits,
                    None,
                    distillation_type="soft",
                    alpha=1.0,
                    temperature=temperature,
                    kd_normalization=kd_normalization,
                    num_items_in_batch=n,
                )
    if use_le:
        _, parts["cd"], parts["id"] = labelwise_embedding_distillation(
            student_embeddings,
            teacher_embeddings,
            labels,
            lambda_cd=lambda_cd,
            lambda_id=lambda_id,
            projection=projection,
        )
    loss = (
        lambda_bce * parts["bce"]
        + lambda_logits * parts["kd"]
        + lambda_le * (lambda_cd * parts["cd"] + lambda_id * parts["id"])
    )
    return loss, parts


def label_embedding_dim(model: nn.Module) -> int | None:
    """Width of a model's `label_embeddings` if it says so (`label_embedding_dim`), else None."""
    dim = getattr(_unwrap(unwrap_parallel(model)), "label_embedding_dim", None)
    return dim if isinstance(dim, int) else None


def _embeddings(outputs) -> torch.Tensor | None:
    return outputs.get("label_embeddings") if isinstance(outputs, dict) else None


class MultiLabelKDTrainer(StudentSideModule, FrozenTeacherTrainer):
    """Distills a frozen multi-label teacher into a student with L2D (or the softmax-KD baseline); see
    `MultiLabelKDConfig` for the loss and `l2d_loss` for its normalization. The batch's `labels` are multi-hot
    (batch, classes), converted to float.

    The teacher is handled by `FrozenTeacherTrainer`: a trainer attribute, frozen, in eval mode, under `no_grad`,
    never saved. A teacher given by name is loaded as a `LabelQueryForMultiLabelClassification` when its config says
    so, else by the Auto class matching the student.

    Label-wise embedding terms need `label_embeddings` from both models (`LabelQueryForMultiLabelClassification`
    returns them). Without them, e.g. a stock `ViTForImageClassification` with
    `problem_type="multi_label_classification"`, only BCE + the logit term are used (logged once). When the widths
    differ and `embedding_projection="linear"`, a `Linear(d_student -> d_teacher)` is trained with the student (not
    in the official code): it is the student's `l2d_embedding_projection` submodule, so the optimizer, DDP,
    checkpoints and resuming see it, but saving writes it to `l2d_embedding_projection.safetensors` beside a
    `model.safetensors` holding the student's own weights only. `model.save_pretrained` called by hand while it is
    attached would include it.

    `num_items_in_batch` counts images (not label entries) over the accumulated batch and all processes: BCE and
    the logit term of k accumulated micro-batches equal the official loss of the whole batch; the embedding terms
    are computed within each micro-batch (structure is per batch) and summed.
    """

    config_class = MultiLabelKDConfig
    loss_parts = ("bce_loss", "kd_loss", "cd_loss", "id_loss")
    card_tags = ("distillation", "knowledge-distillation", "multi-label", "l2d")
    card_method = "L2D"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.args
        self._said_logit_only = False
        self._projection_dims = None
        use_le = config.distillation_type != "none" and config.multilabel_kd_type == "l2d" and config.lambda_le > 0
        if not use_le or config.embedding_projection != "linear":
            return
        dims = (label_embedding_dim(self.model), label_embedding_dim(self.accelerator.unwrap_model(self.teacher_model)))
        if None in dims or dims[0] == dims[1]:
            return
        if config.ddp_find_unused_parameters:
            raise ValueError(
                "`ddp_find_unused_parameters` must be False (or unset) here: the student's label embeddings "
                f"({dims[0]} wide) are projected to the teacher's ({dims[1]}) by a layer that runs outside the "
                "student's forward, which DDP's unused-parameter search does not support. Or set "
                "embedding_projection='none'."
            )
        self._projection_dims = dims
        self._attach_side_module(self.model)

    # --- the teacher ------------------------------------------------------------------------------------------------
    def _load_teacher(self, name_or_path: str):
        from ..models.label_query import (
            LabelQueryConfig,
            LabelQueryForMultiLabelClassification,
        )

        config, _ = PreTrainedConfig.get_config_dict(name_or_path)
        if config.get("model_type") == LabelQueryConfig.model_type:
            kwargs = frozen_init_kwargs(self.args.teacher_model_init_kwargs, self.args.teacher_dtype)
            return LabelQueryForMultiLabelClassification.from_pretrained(name_or_path, **kwargs)
        return super()._load_teacher(name_or_path)

    # --- the embedding projection (a side module of the student) ------------------------------------------------
    side_module_name = PROJECTION_NAME

    def _new_side_module(self) -> nn.Module | None:
        dims = getattr(self, "_projection_dims", None)
        return None if dims is None else nn.Linear(*dims)

    @property
    def embedding_projection(self) -> nn.Linear | None:
        """The trained `Linear(d_student -> d_teacher)` on the student's label embeddings (None when not used)."""
        return self.side_module

    def _save_side_module(self, projection: nn.Module, output_dir: str) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()}
        save_file(
            tensors,
            os.path.join(output_dir, PROJECTION_FILE),
            metadata={"in_features": str(projection.in_features), "out_features": str(projection.out_features)},
        )

    def _load_side_module(self, projection: nn.Module, folder: str) -> None:
        path = os.path.join(folder, PROJECTION_FILE)
        if not os.path.isfile(path):
            return
        state = load_file(path)
        if state["weight"].shape != projection.weight.shape:
            raise ValueError(
                f"{path} maps width {state['weight'].shape[1]} -> {state['weight'].shape[0]}, but this "
                f"run needs {projection.in_features} -> {projection.out_features}; resume with the same "
                "teacher and student."
            )
        projection.load_state_dict(state)

    # --- the loss -----------------------------------------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """Count images (rows of `labels`), not label entries: the N that the loss divides by."""
        rows = [
            {"labels": b["labels"].new_zeros(b["labels"].shape[0])}
            for b in batch_samples
            if torch.is_tensor(b.get("labels")) and b["labels"].dim() > 0
        ]
        if len(rows) != len(batch_samples):
            return None
        return super()._get_num_items_in_batch(rows, device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        student_logits = _logits(outputs)

        teacher_logits = teacher_embeddings = None
        if args.distillation_type != "none":
            teacher_outputs = self._teacher_outputs(inputs)
            teacher_logits, teacher_embeddings = _logits(teacher_outputs), _embeddings(teacher_outputs)

        student_embeddings = _embeddings(outputs)
        projection = self.accelerator.unwrap_model(model)._modules.get(PROJECTION_NAME)
        wants_le = args.distillation_type != "none" and args.multilabel_kd_type == "l2d" and args.lambda_le > 0
        if wants_le and (student_embeddings is None or teacher_embeddings is None):
            if not self._said_logit_only:
                missing = "student" if student_embeddings is None else "teacher"
                logger.info(
                    f"The {missing} returns no `label_embeddings`: L2D uses only its logit terms (BCE + MLD) "
                    "for this run. Models such as LabelQueryForMultiLabelClassification return them."
                )
                self._said_logit_only = True
        elif wants_le:
            width = student_embeddings.shape[-1] if projection is None else projection.out_features
            if width != teacher_embeddings.shape[-1] and args.embedding_projection == "linear":
                raise ValueError(
                    f"Student label embeddings are {student_embeddings.shape[-1]} wide and the teacher's "
                    f"{teacher_embeddings.shape[-1]}, but no projection was created before training because a model "
                    "has no `label_embedding_dim` attribute. Give both models that attribute, or set "
                    "embedding_projection='none'."
                )

        if torch.is_tensor(num_items_in_batch) and num_items_in_batch.numel() > 1:
            num_items_in_batch = num_items_in_batch.reshape(-1)[0]  # DataParallel hands one copy per GPU
        loss, parts = l2d_loss(
            student_logits,
            teacher_logits,
            labels,
            student_embeddings if wants_le else None,
            teacher_embeddings if wants_le else None,
            multilabel_kd_type=args.multilabel_kd_type,
            lambda_bce=args.lambda_bce,
            lambda_logits=args.lambda_logits,
            lambda_le=args.lambda_le,
            lambda_cd=args.lambda_cd,
            lambda_id=args.lambda_id,
            bce_reduction=args.bce_reduction,
            temperature=args.temperature,
            kd_normalization=args.kd_normalization,
            projection=projection,
            num_items_in_batch=num_items_in_batch,
        )
        if projection is not None and model.training:
            # a batch with no eligible class or image leaves the projection out of the graph; DDP (without the
            # unused-parameter search) needs a gradient for every parameter, so give it an exact 0. Through the
            # projection's forward, not its tensors: ZeRO-3 gathers a module's parameters around its own forward only
            loss = loss + projection(loss.new_zeros(1, projection.in_features)).sum() * 0.0
        named = {"bce_loss": parts["bce"], "kd_loss": parts["kd"], "cd_loss": parts["cd"], "id_loss": parts["id"]}
        loss = self._scale_and_record(model, loss, named, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    # --- the card -----------------------------------------------------------------------------------------------------
    def _card_loss_description(self) -> str:
        """The multi-label loss (the distillation card of `DistillationTrainer` assumes softmax KD)."""
        args = self.args
        bce = f"{args.lambda_bce:g} x BCE ({args.bce_reduction} over images and classes)"
        if args.distillation_type == "none":
            return f"no distillation: {bce} only"
        if args.multilabel_kd_type == "softmax":
            return (
                f"`MultiLabelKDTrainer`, softmax-KD baseline: {bce} + {args.lambda_logits:g} x soft KD "
                f"(KL x T^2, T={args.temperature:g}, {args.kd_normalization})"
            )
        return (
            f"`MultiLabelKDTrainer`, L2D: {bce} + {args.lambda_logits:g} x MLD (per-label Bernoulli KL) + "
            f"{args.lambda_le:g} x ({args.lambda_cd:g} x class-aware + {args.lambda_id:g} x instance-aware "
            "label-wise embedding distillation)"
        )
