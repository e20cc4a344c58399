"""Learngene Pool stage 1 (arXiv 2312.05743): one teacher distilled into a smaller student with feature terms.

The student learns from the labels, the teacher's logits, and the teacher's block outputs and attention-branch outputs
at matched relative depths, through learned `Linear(d_teacher -> d_student)` projectors. The projectors are kept: they
initialize the stitch layers of Learngene Pool stage 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..engine.architectures import spec_for
from .frozen_models import FrozenTeacherTrainer, StudentSideModule, _logits, _unwrap, cast_floating, unwrap_parallel
from .pool_distillation_config import FEATURE_LOSSES, FEATURE_POSITIONS, PoolDistillationConfig

PROJECTORS_NAME = "pool_feature_projectors"  # submodule name on the student
PROJECTORS_FILE = "feature_projectors.safetensors"


def matched_layers(num_layers: int, positions: str) -> list[int]:
    """0-indexed blocks matched by `positions` in a stack of `num_layers` blocks (official `loss_pos`).

    `"[end]"` -> [L-1]; `"[mid,end]"` -> [round(2L/3)-1, L-1]; `"[front,end]"` -> [round(L/3)-1, round(2L/3)-1, L-1],
    clamped at 0: [3, 7, 11] for 12 blocks, [2, 5, 8] for 9. Very shallow stacks may repeat a block ([0, 0, 1] for 2).
    """
    if positions not in FEATURE_POSITIONS:
        raise ValueError(f"`feature_positions` must be one of {FEATURE_POSITIONS}, got {positions!r}.")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"`num_layers` must be a positive int, got {num_layers!r}.")
    last = num_layers - 1
    front, mid = round(num_layers / 3) - 1, round(2 * num_layers / 3) - 1
    ids = {"[end]": [last], "[mid,end]": [mid, last], "[front,end]": [front, mid, last]}[positions]
    return [max(i, 0) for i in ids]


class FeatureProjectors(nn.Module):
    """Per matched pair k, `hidden[k]` and `attention[k]`: `Linear(d_teacher -> d_student)` mapping teacher features
    into the student's width. A submodule of the student, so the optimizer, DDP and checkpoints see it."""

    def __init__(
        self,
        teacher_dim: int,
        student_dim: int,
        student_layers: Sequence[int],
        teacher_layers: Sequence[int],
        feature_positions: str,
        hidden: bool = True,
        attention: bool = True,
    ):
        super().__init__()
        if len(student_layers) != len(teacher_layers):
            raise ValueError(
                f"student_layers {list(student_layers)} and teacher_layers {list(teacher_layers)} "
                "must pair up (same length)."
            )
        n = len(student_layers)
        self.hidden = nn.ModuleList(nn.Linear(teacher_dim, student_dim) for _ in range(n if hidden else 0))
        self.attention = nn.ModuleList(nn.Linear(teacher_dim, student_dim) for _ in range(n if attention else 0))
        self.student_layers = [int(i) for i in student_layers]
        self.teacher_layers = [int(i) for i in teacher_layers]
        self.feature_positions = feature_positions

    def metadata(self) -> dict[str, str]:
        return {
            "student_layers": json.dumps(self.student_layers),
            "teacher_layers": json.dumps(self.teacher_layers),
            "feature_positions": self.feature_positions,
        }


def save_feature_projectors(projectors: FeatureProjectors, folder: str) -> None:
    """Write `feature_projectors.safetensors` (keys `hidden.{k}.weight/bias`, `attention.{k}.weight/bias`)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in projectors.state_dict().items()}
    save_file(tensors, os.path.join(folder, PROJECTORS_FILE), metadata=projectors.metadata())


def load_feature_projectors(folder: str | os.PathLike) -> dict:
    """Read the projectors a `LearngenePoolDistillationTrainer` saved beside `model.safetensors`.

    Returns `{"hidden": [{"weight", "bias"}, ...], "attention": [...], "student_layers": [...], "teacher_layers":
    [...], "feature_positions": str, "state_dict": {flat key: tensor}}`; weights have shape (d_student, d_teacher).
    """
    path = os.path.join(os.fspath(folder), PROJECTORS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No {PROJECTORS_FILE} in {os.fspath(folder)!r}: it is written by LearngenePoolDistillationTrainer's "
            "save_model() / checkpoints beside model.safetensors (feature_loss='logits' trains no projectors)."
        )
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    state = load_file(path)
    result = {
        "state_dict": state,
        "student_layers": json.loads(metadata.get("student_layers", "[]")),
        "teacher_layers": json.loads(metadata.get("teacher_layers", "[]")),
        "feature_positions": metadata.get("feature_positions"),
    }
    for kind in ("hidden", "attention"):
        count = len({k.split(".")[1] for k in state if k.startswith(kind + ".")})
        result[kind] = [
            {"weight": state[f"{kind}.{k}.weight"], "bias": state[f"{kind}.{k}.bias"]} for k in range(count)
        ]
    return result


def _project(projector: Callable | None, teacher: torch.Tensor) -> torch.Tensor:
    if projector is None:
        return teacher.float()
    weight = getattr(projector, "weight", None)
    return projector(teacher.to(weight.dtype) if weight is not None else teacher).float()


def _feature_term(
    name: str,
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    projectors: Sequence[Callable] | None,
    valid: torch.Tensor,
    n: torch.Tensor | int,
) -> torch.Tensor:
    """Sum over pairs of the squared error over valid items, divided by n x (elements per item)."""
    if len(student) != len(teacher) or (projectors is not None and len(projectors) != len(student)):
        raise ValueError(
            f"{name}: got {len(student)} student features, {len(teacher)} teacher features and "
            f"{len(projectors) if projectors is not None else 'no'} projectors; they must pair up one to one."
        )
    total = None
    for k, (s, t) in enumerate(zip(student, teacher)):
        if s.shape[:-1] != t.shape[:-1]:
            raise ValueError(
                f"{name} pair {k}: student features {tuple(s.shape)} and teacher features {tuple(t.shape)} have "
                "different token counts; teacher and student must see the same tokens (same image size and patch "
                "size, or the same tokenization)."
            )
        p = _project(projectors[k] if projectors is not None else None, t)
        if p.shape != s.shape:
            raise ValueError(
                f"{name} pair {k}: projected teacher features {tuple(p.shape)} do not match the "
                f"student's {tuple(s.shape)}; give projectors mapping d_teacher -> d_student."
            )
        err = (s.float() - p).pow(2)[valid].sum() / (n * (s[0].numel()))
        total = err if total is None else total + err
    return total


def pool_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    student_hidden: Sequence[torch.Tensor] = (),
    teacher_hidden: Sequence[torch.Tensor] = (),
    student_attention: Sequence[torch.Tensor] = (),
    teacher_attention: Sequence[torch.Tensor] = (),
    *,
    hidden_projectors: Sequence[Callable] | None = None,
    attention_projectors: Sequence[Callable] | None = None,
    feature_loss: str = "all",
    alpha: float = 0.9,
    temperature: float = 1.0,
    num_items_in_batch: torch.Tensor | int | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Learngene Pool stage-1 loss (official `criterion2.py`, with alpha on the distillation part), in float32.

    - `cls = CE(z_s, y)`; `log = mean over batch x classes of -softmax(z_t / T) * log_softmax(z_s / T)` (a mean over
      B*C, not a sum over classes, and no T^2, as the official code);
    - `rep = sum_k MSE(h_s[k], P_hid_k(h_t[k]))`, `att = sum_k MSE(a_s[k], P_att_k(a_t[k]))` over matched pairs
      (MSE = mean over all elements); a projector of None is the identity;
    - `"all"`: `(1 - alpha) * cls + alpha * (log + rep + att)`; `"logits"`: `0.5 * cls + 0.5 * log`;
      `"logits+rep"`: `0.5 * cls + 0.5 * (log + rep)`.

    Every mean is a sum over valid examples (label != `ignore_index`) divided by `num_items_in_batch` when given
    (the count over a whole accumulated batch, so gradient accumulation is exact), else by the valid count here: with
    all examples valid this is exactly the per-batch mean. Logits are per example, shape (batch, classes).
    Returns `(loss, {"ce", "kd", "rep", "att"})`; a term that is not used is 0.
    """
    if feature_loss not in FEATURE_LOSSES:
        raise ValueError(f"`feature_loss` must be one of {FEATURE_LOSSES}, got {feature_loss!r}.")
    if student_logits.dim() != 2:
        raise ValueError(
            f"pool_distillation_loss needs per-example logits of shape (batch, classes), got "
            f"{tuple(student_logits.shape)}; token-level (language-model) logits are not supported."
        )
    if teacher_logits is None or teacher_logits.shape != student_logits.shape:
        got = None if teacher_logits is None else tuple(teacher_logits.shape)
        raise ValueError(
            f"Teacher logits have shape {got} but student logits have shape "
            f"{tuple(student_logits.shape)}; teacher and student must share inputs and label set."
        )
    ce_weight = 1 - alpha if feature_loss == "all" else 0.5
    if labels is None and ce_weight > 0:
        raise ValueError(
            f"The batch has no `labels`, but the cross-entropy term has weight {ce_weight}. Add labels, or use "
            "feature_loss='all' with alpha=1.0 (pure distillation)."
        )
    use_rep, use_att = feature_loss in ("all", "logits+rep"), feature_loss == "all"
    if use_rep and not student_hidden:
        raise ValueError(
            f"feature_loss={feature_loss!r} needs the matched hidden states (`student_hidden`, `teacher_hidden`)."
        )
    if use_att and not student_attention:
        raise ValueError(
            "feature_loss='all' needs the matched attention outputs (`student_attention`, `teacher_attention`)."
        )

    s, t = student_logits.float(), teacher_logits.float()
    batch, num_classes = s.shape
    if labels is not None:
        labels = labels.reshape(-1).to(s.device)
        valid = labels != ignore_index
    else:
        valid = torch.ones(batch, dtype=torch.bool, device=s.device)
    n = num_items_in_batch if num_items_in_batch is not None else valid.sum().clamp(min=1)
    if torch.is_tensor(n):
        n = n.to(s.device)

    zero = s.new_zeros(())
    ce = zero
    if labels is not None:
        ce = F.cross_entropy(s, labels, ignore_index=ignore_index, reduction="sum", label_smoothing=label_smoothing) / n
    T = temperature
    sce = -(F.softmax(t / T, dim=-1) * F.log_softmax(s / T, dim=-1))
    kd = sce[valid].sum() / (n * num_classes)
    rep = (
        _feature_term("hidden states", student_hidden, teacher_hidden, hidden_projectors, valid, n) if use_rep else zero
    )
    att = (
        _feature_term("attention outputs", student_attention, teacher_attention, attention_projectors, valid, n)
        if use_att
        else zero
    )
    if feature_loss == "all":
        loss = (1 - alpha) * ce + alpha * (kd + rep + att)
    else:
        loss = 0.5 * ce + 0.5 * (kd + rep)
    return loss, {"ce": ce, "kd": kd, "rep": rep, "att": att}


def _layers_and_spec(model: nn.Module):
    """The stock model's layer list and its `ArchitectureSpec` (through DDP, PEFT and learngene wrappers)."""
    stock = _unwrap(unwrap_parallel(model))
    spec = spec_for(getattr(stock.config, "model_type", None))
    return stock.base_model.get_submodule(spec.layers), spec


@contextmanager
def capture_features(model: nn.Module, layer_ids: Sequence[int], attention: bool = True):
    """Forward hooks, live only inside the `with`: yields `(hidden, attn)` dicts filled by the next forward with,
    for each block i in `layer_ids`, the block's output and its attention submodule's output (first element of a
    tuple). Pre-norm models: the attention branch after the output projection, before the residual add. BERT
    (post-norm): `BertAttention`'s output, which already includes the residual add and LayerNorm.

    Block outputs come from hooks rather than `output_hidden_states`, whose last entry is after the final norm for
    GPT-2 and Llama. Hooks removed on exit also never fire again in gradient-checkpointing recomputation.
    """
    hidden: dict[int, torch.Tensor] = {}
    attn: dict[int, torch.Tensor] = {}
    if not layer_ids:
        yield hidden, attn
        return
    layers, spec = _layers_and_spec(model)
    if attention and spec.attention is None:
        raise ValueError(
            f"model_type={spec.model_type!r} has no attention submodule registered; call "
            "hf_methods.engine.register_architecture(..., attention='<path of the attention module in one layer>')."
        )

    def keep(store, i):
        def hook(_module, _args, output):
            store[i] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    handles = []
    try:
        for i in sorted(set(layer_ids)):
            handles.append(layers[i].register_forward_hook(keep(hidden, i)))
            if attention:
                handles.append(layers[i].get_submodule(spec.attention).register_forward_hook(keep(attn, i)))
        yield hidden, attn
    finally:
        for handle in handles:
            handle.remove()


class LearngenePoolDistillationTrainer(StudentSideModule, FrozenTeacherTrainer):
    """Learngene Pool stage 1: distills the frozen teacher into a student with fewer and/or narrower blocks.

    Loss: see `pool_distillation_loss`. Blocks are matched at the same relative depths (`matched_layers`), and
    per pair two `Linear(d_teacher -> d_student)` projectors (block output, attention output) are trained with the
    student. They live on the student as the `pool_feature_projectors` submodule, so the optimizer, DDP, checkpoints and
    resuming see them; saving writes `model.safetensors` with the student's own weights only (a stock checkpoint) and
    the projectors to `feature_projectors.safetensors` beside it (`load_feature_projectors`). Note that
    `model.save_pretrained` called by hand while they are attached would include them.

    The projectors run outside the student's forward, so DDP must not look for unused parameters: the config sets
    `ddp_find_unused_parameters=False`. Teacher and student must produce the same number of tokens.
    """

    config_class = PoolDistillationConfig
    loss_parts = ("ce_loss", "kd_loss", "rep_loss", "att_loss")
    card_tags = ("distillation", "knowledge-distillation", "learngene-pool")
    card_method = "Learngene Pool"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.args
        self._use_rep = config.feature_loss in ("all", "logits+rep")
        self._use_att = config.feature_loss == "all"
        self._student_layers = self._teacher_layers = []
        if not self._use_rep:
            return
        teacher = self.accelerator.unwrap_model(self.teacher_model)
        depths = {}
        for name, model in (("teacher", teacher), ("student", self.model)):
            layers, spec = _layers_and_spec(model)
            if self._use_att and spec.attention is None:
                raise ValueError(
                    f"The {name} (model_type={spec.model_type!r}) has no attention submodule registered, which "
                    "feature_loss='all' needs; register it with hf_methods.engine.register_architecture(..., "
                    "attention='<path>') or use feature_loss='logits+rep'."
                )
            depths[name] = len(layers)
        self._student_layers = matched_layers(depths["student"], config.feature_positions)
        self._teacher_layers = matched_layers(depths["teacher"], config.feature_positions)
        self._dims = (_unwrap(teacher).config.hidden_size, _unwrap(self.model).config.hidden_size)
        self._attach_side_module(self.model)

    side_module_name = PROJECTORS_NAME

    def _card_loss_description(self) -> str:
        args = self.args
        log = f"soft CE of the logits (T={args.temperature:g})"
        terms = {
            "all": f"{log} + block-output MSE + attention-output MSE at {args.feature_positions}",
            "logits+rep": f"{log} + block-output MSE at {args.feature_positions}",
            "logits": log,
        }[args.feature_loss]
        weights = f"{1 - args.alpha:g} x CE + {args.alpha:g} x" if args.feature_loss == "all" else "0.5 x CE + 0.5 x"
        return f"`LearngenePoolDistillationTrainer` (Learngene Pool stage 1): {weights} ({terms})"

    def _new_side_module(self) -> nn.Module | None:
        if not getattr(self, "_student_layers", None):
            return None
        return FeatureProjectors(
            *self._dims,
            self._student_layers,
            self._teacher_layers,
            self.args.feature_positions,
            hidden=self._use_rep,
            attention=self._use_att,
        )

    @property
    def feature_projectors(self) -> FeatureProjectors | None:
        """The trained teacher -> student projectors (None with feature_loss='logits')."""
        return self.side_module

    def _save_side_module(self, projectors: nn.Module, output_dir: str) -> None:
        save_feature_projectors(projectors, output_dir)

    def _load_side_module(self, projectors: nn.Module, folder: str) -> None:
        if not os.path.isfile(os.path.join(folder, PROJECTORS_FILE)):
            return
        saved = load_feature_projectors(folder)
        if (saved["student_layers"], saved["teacher_layers"]) != (projectors.student_layers, projectors.teacher_layers):
            raise ValueError(
                f"{os.path.join(folder, PROJECTORS_FILE)} pairs student blocks {saved['student_layers']} with teacher "
                f"blocks {saved['teacher_layers']}, but this run pairs {projectors.student_layers} with "
                f"{projectors.teacher_layers}; resume with the same models and `feature_positions`."
            )
        projectors.load_state_dict(saved["state_dict"])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        features = self._use_rep
        s_ids, t_ids = self._student_layers, self._teacher_layers

        teacher_inputs = cast_floating(inputs, args.teacher_dtype)
        self.teacher_model.eval()
        with torch.no_grad(), capture_features(self.teacher_model, t_ids if features else (), self._use_att) as t_f:
            teacher_logits = _logits(self.teacher_model(**teacher_inputs))
        with capture_features(model, s_ids if features else (), self._use_att) as s_f:
            outputs = model(**inputs)
        student_logits = _logits(outputs)

        hidden = ([s_f[0][i] for i in s_ids], [t_f[0][j] for j in t_ids]) if self._use_rep else ((), ())
        attn = ([s_f[1][i] for i in s_ids], [t_f[1][j] for j in t_ids]) if self._use_att else ((), ())
        for k, (s, t) in enumerate(zip(*hidden)):
            if s.shape[:-1] != t.shape[:-1]:
                raise ValueError(
                    f"Student block {s_ids[k]} outputs {tuple(s.shape)} but teacher block {t_ids[k]} outputs "
                    f"{tuple(t.shape)}: the token counts differ. Teacher and student must see the same tokens "
                    "(same image_size and patch_size)."
                )
        projectors = self.accelerator.unwrap_model(model)._modules.get(PROJECTORS_NAME)
        if torch.is_tensor(num_items_in_batch) and num_items_in_batch.numel() > 1:
            num_items_in_batch = num_items_in_batch.reshape(-1)[0]  # DataParallel hands one copy per GPU
        loss, parts = pool_distillation_loss(
            student_logits,
            teacher_logits,
            labels,
            *hidden,
            *attn,
            hidden_projectors=projectors.hidden if self._use_rep else None,
            attention_projectors=projectors.attention if self._use_att else None,
            feature_loss=args.feature_loss,
            alpha=args.alpha,
            temperature=args.temperature,
            num_items_in_batch=num_items_in_batch,
            label_smoothing=args.label_smoothing_factor,
        )
        named = {"ce_loss": parts["ce"], "kd_loss": parts["kd"], "rep_loss": parts["rep"], "att_loss": parts["att"]}
        loss = self._scale_and_record(model, loss, named, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss
