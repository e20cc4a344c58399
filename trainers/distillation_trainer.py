"""Knowledge distillation (DeiT-style soft / hard KD) as a `transformers.Trainer` subclass."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel, Trainer

from ..compat import auto_class_name_for, checkpoint_keys_need_reload, untrack_prepared_model, uses_causal_lm_loss
from ..engine import LearngeneModel
from .distillation_config import DistillationConfig

def output_size(model: nn.Module) -> int | None:
    """Size of the model's logits' last dimension: the output embedding's rows (LMs), else `config.num_labels`."""
    get_emb = getattr(model, "get_output_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if emb is not None:
        return emb.weight.shape[0]
    return getattr(getattr(model, "config", None), "num_labels", None)


def _unwrap(model: nn.Module) -> nn.Module:
    """The stock model behind a PEFT wrapper or an hf_methods learngene (whose forward runs a stock model)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    return model.base if isinstance(model, LearngeneModel) else model


def _is_causal_lm(model: nn.Module) -> bool:
    """Whether the model predicts token i+1 at position i (so logits and labels must be shifted)."""
    model = _unwrap(model)
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    return auto_class_name_for(type(model).__name__) == "AutoModelForCausalLM" or uses_causal_lm_loss(model)


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
        ce = F.cross_entropy(
            s, labels, ignore_index=ignore_index, reduction="sum", label_smoothing=label_smoothing
        ) / n
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


def _saved_keys(folder: str) -> set[str] | None:
    """Tensor names of a checkpoint folder's safetensors weights (no tensor is read), or None."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return set(json.load(f)["weight_map"])
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        with safe_open(single, framework="pt") as f:
            return set(f.keys())
    return None


def _logits(outputs) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) else outputs[0]




def cast_floating(inputs: dict, dtype: str) -> dict:
    """`inputs` with their floating tensors in `dtype` (a config's `teacher_dtype`, `large_dtype`, ...), for a frozen
    model kept in that dtype; unchanged for "auto"."""
    if dtype == "auto":
        return inputs
    dtype = getattr(torch, dtype)
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}


def frozen_init_kwargs(init_kwargs: dict | None, dtype: str) -> dict:
    """`from_pretrained` keyword arguments of a frozen model loaded by name: the config's init kwargs, plus `dtype`
    unless it is "auto"."""
    kwargs = dict(init_kwargs or {})
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    return kwargs

def detach_from_checkpoint(model: nn.Module) -> nn.Module:
    """Copy the integer buffers of a model loaded by name (e.g. BatchNorm's `num_batches_tracked`) out of the
    checkpoint. `from_pretrained` leaves them as views of the memory-mapped safetensors file, which keeps the whole
    file resident: a frozen model loaded in bfloat16 from a float32 checkpoint then saved no memory at all (measured
    by `benchmarks/bench_frozen_memory.py`: 352 MiB vs 118 MiB resident for RDD's teacher)."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if not buffer.is_floating_point():
                setattr(module, name, buffer.clone())  # stays a buffer, persistent or not as it was
    return model

class DistillationTrainer(Trainer):
    """Trains a student on `(1 - alpha) * CE + alpha * KD` against a frozen teacher (DeiT soft/hard distillation).

    Why a trainer and not a model: the teacher must not be a submodule of the student, or it would be optimized and
    written into every checkpoint. Here it is a trainer attribute (`self.teacher_model`): frozen, in eval mode, run
    under `torch.no_grad()`, placed on each process's device by `accelerator.prepare_model(evaluation_mode=True)`
    (replicated on every rank, also under FSDP), never saved.

    `teacher_model` is a `PreTrainedModel` or a Hub id / folder (default `args.teacher_model_name_or_path`), loaded
    with `args.teacher_model_init_kwargs` by the Auto class whose mapping lists the student's class
    (`AutoModelForCausalLM`, `AutoModelForImageClassification`, `AutoModelForSequenceClassification`, ...). For
    other students, pass a loaded teacher. Output sizes (vocabulary or `num_labels`) are checked in `__init__`.

    The loss is a sum over items divided by `num_items_in_batch`, so gradient accumulation and multi-process training
    give the same update as one big batch. Causal LMs are shifted. DeepSpeed is not supported (`NotImplementedError`).
    """

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args: DistillationConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        compute_loss_func=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
    ):
        if args is None:
            args = DistillationConfig()
        elif not isinstance(args, DistillationConfig):
            raise TypeError(f"`args` must be a DistillationConfig, got {type(args).__name__}.")
        if compute_loss_func is not None:
            raise ValueError("DistillationTrainer computes its own loss; do not pass `compute_loss_func`.")
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        # Our loss is normalized by `num_items_in_batch`: make the Trainer count it over the whole accumulated batch
        # (and all processes). With labels the loss is then scaled for GA; without labels (pure KD)
        # `num_items_in_batch` is None and `training_step` divides the per-batch mean by the GA steps.
        self.model_accepts_loss_kwargs = True
        self.shift_labels = _is_causal_lm(self.model)
        # Count items over `labels[..., 1:]` exactly when we shift (the Trainer misses e.g. GPT2LMHeadModel).
        self._loss_shifts_labels = self.shift_labels
        self._loss_parts = {"ce_loss": 0.0, "kd_loss": 0.0}
        self._loss_parts_step = 0

        self.teacher_model = None
        self.teacher_ref = None
        if args.distillation_type == "none":
            return
        teacher = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        # Where the teacher came from, for the model card's ancestry (a Hub id there becomes `base_model`).
        self.teacher_ref = teacher if isinstance(teacher, str) else getattr(teacher, "name_or_path", None) or None
        if teacher is None:
            raise ValueError(
                f"distillation_type={args.distillation_type!r} needs a teacher: pass `teacher_model=` or set "
                "`teacher_model_name_or_path`, or use distillation_type='none' for plain cross-entropy."
            )
        if self.is_deepspeed_enabled:
            raise NotImplementedError(
                "DistillationTrainer does not support DeepSpeed yet (the teacher would need its own DeepSpeed engine). "
                "Use DDP or FSDP."
            )
        if isinstance(teacher, str):
            teacher = detach_from_checkpoint(self._load_teacher(teacher))
        student_size, teacher_size = output_size(self.model), output_size(teacher)
        if None not in (student_size, teacher_size) and student_size != teacher_size:
            has_vocab = getattr(self.model, "get_output_embeddings", lambda: None)() is not None
            kind = "vocabulary size" if has_vocab else "num_labels"
            raise ValueError(
                f"Teacher and student output sizes differ: teacher {teacher_size}, student {student_size} ({kind}). "
                "Distillation needs the same label set / vocabulary."
            )
        self.teacher_model = self._prepare_frozen(teacher, args.teacher_dtype)

    def _prepare_frozen(self, model: nn.Module | None, dtype: str) -> nn.Module | None:
        """A model that only gives targets (teacher, CPT's large and small): frozen, in eval mode, in `dtype`, on this
        process's device and prepared for evaluation only. A model dispatched over devices (`hf_device_map`) stays
        where it is."""
        if model is None:
            return None
        model.requires_grad_(False)
        model.eval()
        if dtype != "auto":
            model.to(getattr(torch, dtype))
        if getattr(model, "hf_device_map", None):
            return model
        model.to(self.args.device)  # under FSDP `prepare_model` does not place models
        prepared = self.accelerator.prepare_model(model, evaluation_mode=True)
        untrack_prepared_model(self.accelerator, prepared)  # not one of the trained models
        return prepared

    def _load_teacher(self, name_or_path: str) -> PreTrainedModel:
        student_cls = type(_unwrap(self.model))
        auto_name = auto_class_name_for(student_cls.__name__)
        if auto_name is not None:
            kwargs = frozen_init_kwargs(self.args.teacher_model_init_kwargs, self.args.teacher_dtype)
            return getattr(transformers, auto_name).from_pretrained(name_or_path, **kwargs)
        raise ValueError(
            f"Cannot tell which Auto class loads a teacher for a {student_cls.__name__} student; "
            "pass `teacher_model` as a loaded PreTrainedModel."
        )

    # transformers resumes with a raw `load_state_dict(strict=False)` of the checkpoint, skipping the key renaming that
    # `from_pretrained` applies and `save_pretrained` reverts (e.g. ViT). The weights then silently stay unloaded
    # (huggingface/transformers#43701; `compat.checkpoint_keys_need_reload`). Reload them through `from_pretrained`.
    def _load_renamed_checkpoint(self, folder: str, model: nn.Module) -> bool:
        model = self.accelerator.unwrap_model(model)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or not isinstance(model, PreTrainedModel):
            return False
        keys = _saved_keys(folder)
        if keys is None or not checkpoint_keys_need_reload(keys, model):
            return False
        model.load_state_dict(type(model).from_pretrained(folder).state_dict())
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._load_renamed_checkpoint(resume_from_checkpoint, model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._load_renamed_checkpoint(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        student_logits = _logits(outputs)

        teacher_logits = None
        if args.distillation_type != "none" and args.alpha > 0:
            teacher_inputs = cast_floating(inputs, args.teacher_dtype)
            self.teacher_model.eval()
            with torch.no_grad():
                teacher_logits = _logits(self.teacher_model(**teacher_inputs))

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

    def _scale_and_record(self, model, loss, parts: dict, num_items_in_batch):
        """The loss scaled as the default `compute_loss` does (`num_items_in_batch` counts all processes, and DDP
        averages gradients); `parts` (unweighted loss terms) are accumulated for the training logs."""
        scale = 1.0
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            scale = self.accelerator.num_processes // self.get_tp_size()
        if model.training:  # for the logs: what each part adds to the logged loss
            steps = getattr(self, "current_gradient_accumulation_steps", 1)  # set by train()
            factor = scale if num_items_in_batch is not None else 1.0 / steps
            for key, value in parts.items():
                self._loss_parts[key] = self._loss_parts.get(key, 0.0) + value.detach() * factor
        return loss * scale

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, **_) -> None:
        """Write the hf-methods card of the student (`Trainer.push_to_hub` uploads it): teacher -> student
        ancestry, the distillation setup and the last evaluation metrics; never the teacher's weights."""
        if not self.is_world_process_zero():
            return
        from ..cards import distilled_card

        metrics = next((e for e in reversed(self.state.log_history) if any(k.startswith("eval_") for k in e)), {})
        repo = self.hub_model_id if self.args.push_to_hub and self.hub_model_id else model_name or self.args.output_dir
        card = distilled_card(self.accelerator.unwrap_model(self.model), self.teacher_ref, self.args, repo,
                              metrics, dataset=dataset_name)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds this process's mean `ce_loss` and `kd_loss` (unweighted) to the training logs."""
        steps = self.state.global_step - self._loss_parts_step
        if "loss" in logs and steps > 0:
            for key, value in self._loss_parts.items():
                logs[key] = float(value) / steps
            self._loss_parts = {key: 0.0 for key in self._loss_parts}
            self._loss_parts_step = self.state.global_step
        super().log(logs, start_time)


class StudentSideModule:
    """Mixin for trainers that train a module beside the student (Learngene Pool's feature projectors, L2D's
    embedding projection): attached to the student as submodule `side_module_name`, so the optimizer, DDP and
    resume see it, but kept out of the student's own files and saved beside them.

    A subclass sets `side_module_name` and implements `_new_side_module()` (a fresh module, or None when the run
    needs none: it is also called while `Trainer.__init__` runs, before the subclass has its settings),
    `_save_side_module(module, folder)` and `_load_side_module(module, folder)` (a no-op when its file is missing).
    """

    side_module_name: str

    def _new_side_module(self) -> nn.Module | None:
        raise NotImplementedError

    def _save_side_module(self, module: nn.Module, folder: str) -> None:
        raise NotImplementedError

    def _load_side_module(self, module: nn.Module, folder: str) -> None:
        raise NotImplementedError

    def _attach_side_module(self, model: nn.Module) -> None:
        if self.side_module_name in dict(model.named_children()):
            return
        module = self._new_side_module()
        if module is None:
            return
        ref = next(model.parameters())
        model.add_module(self.side_module_name,
                         module.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None))

    def call_model_init(self, trial=None):
        model = super().call_model_init(trial)
        self._attach_side_module(model)  # re-created by train(): give it its side module again
        return model

    @property
    def side_module(self) -> nn.Module | None:
        return dict(self.accelerator.unwrap_model(self.model).named_children()).get(self.side_module_name)

    @contextmanager
    def _without_side_module(self, model: nn.Module | None = None):
        """Detach the side module while the student is saved or loaded, so its files hold only its own weights."""
        host = self.accelerator.unwrap_model(model if model is not None else self.model)
        host = host.module if isinstance(host, nn.parallel.DistributedDataParallel) else host
        module = dict(host.named_children()).get(self.side_module_name)
        if module is not None:
            delattr(host, self.side_module_name)
        try:
            yield module
        finally:
            if module is not None:
                host.add_module(self.side_module_name, module)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is not None:  # e.g. gathered by FSDP: split it
            prefix = self.side_module_name + "."
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        with self._without_side_module() as module:
            super()._save(output_dir, state_dict=state_dict)
        if module is not None and self.args.should_save:
            self._save_side_module(module, output_dir)

    def _load_side_module_from(self, folder: str, model: nn.Module | None = None) -> None:
        host = self.accelerator.unwrap_model(model if model is not None else self.model)
        module = dict(host.named_children()).get(self.side_module_name)
        if module is not None:
            self._load_side_module(module, folder)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with self._without_side_module(model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_side_module_from(resume_from_checkpoint, model)

    def _load_best_model(self):
        with self._without_side_module():
            super()._load_best_model()
        self._load_side_module_from(self.state.best_model_checkpoint)
