"""The base of every trainer that holds frozen models beside the model it trains: a teacher (`DistillationTrainer`,
`RDDTrainer`, `MultiLabelKDTrainer`, `LearngenePoolDistillationTrainer`) or CPT's large and small models.

A frozen model only gives targets. It must not be a submodule of the trained model, or it would be optimized, wrapped
by DDP and written into every checkpoint. Here it is a trainer attribute, prepared by
`FrozenModelsTrainer._prepare_frozen`: frozen, in eval mode, in its configured dtype, on this process's device and
prepared by accelerate for evaluation only (replicated on every rank, also under FSDP), never saved. Under DeepSpeed
each gets its own inference engine, as TRL prepares a teacher (`_deepspeed_inference_engine`): partitioned under
ZeRO-3, a replica under ZeRO-1/2, never given optimizer state.

`FrozenModelsTrainer` also holds what these trainers share around their losses: losses that are sums over items divided
by `num_items_in_batch` (exact under gradient accumulation and DDP) and logged loss parts; its base `ResumableTrainer`
resumes checkpoints of models that rename keys on save (huggingface/transformers#43701). `FrozenTeacherTrainer` adds
the teacher: given or loaded by name, checked against the student's output size, and the model card of the student.
`StudentSideModule` is the mixin of trainers that also train a small module beside the student (feature projectors, an
embedding projection).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import transformers
from torch import nn
from transformers import PreTrainedModel

from ..compat import auto_class_name_for, untrack_prepared_model, uses_causal_lm_loss
from ..engine import LearngeneModel
from .frozen_models_config import FrozenModelsConfig, FrozenTeacherConfig
from .resumable import ResumableTrainer


# ---------------------------------------------------------------------------------------------- model plumbing
def output_size(model: nn.Module) -> int | None:
    """Size of the model's logits' last dimension: the output embedding's rows (LMs), else `config.num_labels`."""
    get_emb = getattr(model, "get_output_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if emb is not None:
        return emb.weight.shape[0]
    return getattr(getattr(model, "config", None), "num_labels", None)


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside DDP, DataParallel and DeepSpeed engine wrappers (under DeepSpeed a frozen model is an
    engine: `_deepspeed_inference_engine`)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) or (
        type(model).__name__ == "DeepSpeedEngine"
    ):
        model = model.module
    return model


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


def _logits(outputs) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) else outputs[0]


def label_names(model: nn.Module) -> dict[int, str] | None:
    """The model's `config.id2label`, or None when it has none or only transformers' defaults (`LABEL_0`, ...), which
    say nothing about what the classes are."""
    id2label = getattr(getattr(_unwrap(model), "config", None), "id2label", None)
    if not id2label:
        return None
    names = {int(k): str(v) for k, v in id2label.items()}
    return None if all(v == f"LABEL_{k}" for k, v in names.items()) else names


def _short_labels(names: dict[int, str], shown: int = 4) -> str:
    items = sorted(names.items())
    text = ", ".join(f"{k}: {v!r}" for k, v in items[:shown])
    return "{" + text + (", ..." if len(items) > shown else "") + "}"


def cast_floating(inputs: dict, dtype: str) -> dict:
    """`inputs` with their floating tensors in `dtype` (a config's `teacher_dtype`, `large_dtype`, ...), for a frozen
    model kept in that dtype; unchanged for "auto"."""
    if dtype == "auto":
        return inputs
    dtype = getattr(torch, dtype)
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}


def frozen_init_kwargs(init_kwargs: dict | None, dtype: str) -> dict:
    """`from_pretrained` keyword arguments of a frozen model loaded by name: the config's init kwargs, plus `dtype`
    unless it is "auto", and `trust_remote_code=False` unless the init kwargs opt in (a folder's own code never runs
    by accident)."""
    kwargs = {"trust_remote_code": False, **(init_kwargs or {})}
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


# ---------------------------------------------------------------------------------------------- the trainers
def _deepspeed_inference_engine(model: nn.Module, accelerator) -> nn.Module:
    """A frozen model under DeepSpeed, prepared as the ecosystem prepares a teacher or reference model (TRL's
    `prepare_deepspeed`): its own DeepSpeed engine with the run's config, without optimizer or scheduler. Under ZeRO-3
    its parameters are partitioned over the processes like the trained model's; under ZeRO-1/2, which partition only
    optimizer state and gradients (a frozen model has neither), it runs as stage 0, a replica on every process. The
    engine is never handed to the Trainer, so it gets no optimizer state and is never checkpointed."""
    import copy

    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage", 0) != 3:
        zero["stage"] = 0
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


class FrozenModelsTrainer(ResumableTrainer):
    """A `Trainer` that holds frozen models beside the model it trains (see the module docstring).

    A subclass sets `config_class` (its `FrozenModelsConfig` subclass: `args` must be one, default `config_class()`)
    and `loss_parts` (the names of the unweighted loss terms added to the training logs), prepares each frozen model
    with `_prepare_frozen(model, dtype)`, and computes its loss in `compute_loss`, passing it through
    `_scale_and_record`. The loss is computed by the trainer, so `compute_loss_func` is refused.
    """

    config_class: type[FrozenModelsConfig] = FrozenModelsConfig
    loss_parts: tuple[str, ...] = ()

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args: FrozenModelsConfig | None = None,
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
    ):
        if args is None:
            args = self.config_class()
        elif not isinstance(args, self.config_class):
            raise TypeError(f"`args` must be a {self.config_class.__name__}, got {type(args).__name__}.")
        if compute_loss_func is not None:
            raise ValueError(f"{type(self).__name__} computes its own loss; do not pass `compute_loss_func`.")
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
        # Losses here are normalized by `num_items_in_batch`: make the Trainer count it over the whole accumulated batch
        # (and all processes). With labels the loss is then scaled for GA; without labels (pure KD)
        # `num_items_in_batch` is None and `training_step` divides the per-batch mean by the GA steps. A trainer whose
        # loss is a per-batch mean sets this back to False.
        self.model_accepts_loss_kwargs = True
        self.shift_labels = _is_causal_lm(self.model)
        # Count items over `labels[..., 1:]` exactly when we shift (the Trainer misses e.g. GPT2LMHeadModel).
        self._loss_shifts_labels = self.shift_labels
        self._loss_parts = {name: 0.0 for name in self.loss_parts}
        self._loss_parts_step = 0

    # --- frozen models --------------------------------------------------------------------------------------------
    def _check_frozen_support(self) -> None:
        """Where frozen models meet the distributed backend. DDP: each process holds a replica (nothing to do).
        FSDP: `_prepare_frozen` places the model itself, since `prepare_model` does not. DeepSpeed: each frozen model
        gets an inference engine (`_deepspeed_inference_engine`), which needs the deepspeed package."""
        if self.is_deepspeed_enabled:
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise ImportError("DeepSpeed training needs the deepspeed package: pip install deepspeed")

    def _refuse_shared_parameters(self, frozen: nn.Module | None, field: str, trained: str = "student") -> None:
        """A ValueError when the frozen model given as `field` is the trained model or shares a parameter with it:
        freezing it would freeze the trained model too (and backward would fail with "does not require grad")."""
        if frozen is None or self.model is None or not isinstance(frozen, nn.Module):
            return
        own = {id(p) for p in self.model.parameters()}
        if frozen is self.model or any(id(p) in own for p in frozen.parameters()):
            raise ValueError(
                f"`{field}` is the {trained} or shares its parameters, so freezing it would freeze the {trained} "
                "too; pass a separate model (a copy.deepcopy or another from_pretrained of the checkpoint)."
            )

    def _prepare_frozen(self, model: nn.Module | None, dtype: str) -> nn.Module | None:
        """A model that only gives targets (teacher, CPT's large and small): frozen, in eval mode, in `dtype`, on this
        process's device and prepared for evaluation only. A model dispatched over devices (`hf_device_map`) stays
        where it is."""
        if model is None:
            return None
        self._check_frozen_support()
        model.requires_grad_(False)
        model.eval()
        if dtype != "auto":
            model.to(getattr(torch, dtype))
        if getattr(model, "hf_device_map", None):
            return model
        if self.is_deepspeed_enabled:
            return _deepspeed_inference_engine(model, self.accelerator)
        model.to(self.args.device)  # under FSDP `prepare_model` does not place models
        prepared = self.accelerator.prepare_model(model, evaluation_mode=True)
        untrack_prepared_model(self.accelerator, prepared)  # not one of the trained models
        return prepared

    # --- the loss and its logs --------------------------------------------------------------------------------------
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

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds this process's mean of every loss part (unweighted, e.g. `ce_loss`, `kd_loss`) to the training logs."""
        steps = self.state.global_step - self._loss_parts_step
        if "loss" in logs and steps > 0:
            for key, value in self._loss_parts.items():
                logs[key] = float(value) / steps
            self._loss_parts = {key: 0.0 for key in self._loss_parts}
            self._loss_parts_step = self.state.global_step
        super().log(logs, start_time)


class FrozenTeacherTrainer(FrozenModelsTrainer):
    """A `FrozenModelsTrainer` whose frozen model is a teacher distilled into the trained model (the student).

    `teacher_model` is a `PreTrainedModel` or a Hub id / folder (default `args.teacher_model_name_or_path`), loaded
    with `args.teacher_model_init_kwargs` in `args.teacher_dtype` by `_load_teacher` (default: the Auto class whose
    mapping lists the student's class: `AutoModelForCausalLM`, `AutoModelForImageClassification`, ...; for other
    students, pass a loaded teacher). Output sizes (vocabulary or `num_labels`) and label names (`id2label`, unless
    either is transformers' default `LABEL_i`) are checked in `__init__`, and a teacher that is the student or shares
    its parameters is refused. The teacher is then `self.teacher_model`, prepared by `_prepare_frozen`;
    `self.teacher_ref` says where it came from (for the card).

    A subclass sets `config_class` (a `FrozenTeacherConfig` subclass holding its loss fields), overrides
    `_uses_teacher()` when a setting trains without one, and describes its loss for the model card
    (`_card_loss_description`, `card_tags`, `card_method`).
    """

    config_class = FrozenTeacherConfig
    card_tags: tuple[str, ...] = ("distillation", "knowledge-distillation")
    card_method: str | None = None  # the registered method whose citation the card carries; None: DeiT's KD

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args: FrozenTeacherConfig | None = None,
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
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_loss_func=compute_loss_func,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self.teacher_model = None
        self.teacher_ref = None
        if not self._uses_teacher():
            return
        teacher = teacher_model if teacher_model is not None else self.args.teacher_model_name_or_path
        # Where the teacher came from, for the model card's ancestry (a Hub id there becomes `base_model`).
        self.teacher_ref = teacher if isinstance(teacher, str) else getattr(teacher, "name_or_path", None) or None
        if teacher is None:
            raise ValueError(self._missing_teacher_message())
        self._refuse_shared_parameters(teacher, "teacher_model")
        self._check_frozen_support()  # before loading anything
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
        student_labels, teacher_labels = label_names(self.model), label_names(teacher)
        if None not in (student_labels, teacher_labels) and student_labels != teacher_labels:
            raise ValueError(
                f"the teacher's id2label {_short_labels(teacher_labels)} differs from the student's "
                f"{_short_labels(student_labels)}, so it would teach the wrong classes; give the teacher the student's "
                "labels (same names, same order) or remap its head to the student's label order."
            )
        self.teacher_model = self._prepare_frozen(teacher, self.args.teacher_dtype)

    def _uses_teacher(self) -> bool:
        """Whether this run distills from a teacher (False: no teacher is needed nor loaded): not when a config's
        `distillation_type` is "none"."""
        return getattr(self.args, "distillation_type", None) != "none"

    def _missing_teacher_message(self) -> str:
        message = f"{type(self).__name__} needs a teacher: pass `teacher_model=` or set `teacher_model_name_or_path`"
        if hasattr(self.args, "distillation_type"):
            return f"{message}, or use distillation_type='none' to train on the labels alone."
        return message + "."

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

    def _teacher_outputs(self, inputs: dict):
        """The teacher's outputs for the student's `inputs` (floating inputs cast to `teacher_dtype`), no gradient."""
        teacher_inputs = cast_floating(inputs, self.args.teacher_dtype)
        self.teacher_model.eval()
        with torch.no_grad():
            return self.teacher_model(**teacher_inputs)

    # --- the card ---------------------------------------------------------------------------------------------------
    def _card_loss_description(self) -> str:
        """What the student was trained on, one sentence fragment for its model card (a subclass names its loss)."""
        return f"`{type(self).__name__}` against the frozen teacher"

    def _student_num_parameters(self) -> int:
        return sum(p.numel() for p in self.accelerator.unwrap_model(self.model).parameters())

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, **_) -> None:
        """Write the hf-methods card of the student (`Trainer.push_to_hub` uploads it): teacher -> student ancestry, the
        loss (`_card_loss_description`) and the last evaluation metrics; never the teacher's weights."""
        if not self.is_world_process_zero():
            return
        from ..cards import DISTILLATION_CITATION, _auto_class, _data, hub_id, link, render_card
        from ..registry import citation
        from ..report import fmt_params

        args = self.args
        student = self.accelerator.unwrap_model(self.model)
        params = self._student_num_parameters()
        metrics = next((e for e in reversed(self.state.log_history) if any(k.startswith("eval_") for k in e)), {})
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        repo = self.hub_model_id if args.push_to_hub and self.hub_model_id else model_name or args.output_dir
        teacher = str(self.teacher_ref) if self.teacher_ref else "a teacher model"
        loss = self._card_loss_description()
        setup = (
            f"{loss}; {args.num_train_epochs:g} epochs, learning rate {args.learning_rate}, batch "
            f"{args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulation "
            "steps."
        )
        model_class = type(student).__name__
        data = _data(
            os.path.basename(str(repo).rstrip("/")),
            list(self.card_tags),
            model_class,
            base_model=hub_id(self.teacher_ref),
            dataset=dataset_name,
        )
        card = render_card(
            "distilled",
            data,
            title=f"{model_class} distilled from {teacher}",
            model_class=model_class,
            params=fmt_params(params),
            teacher_link=link(teacher),
            teacher_params=None,
            loss_description=loss,
            auto_class=_auto_class(model_class),
            repo_or_path=str(repo),
            training_setup=setup,
            metrics=[(k, f"{v:.4g}") for k, v in sorted(metrics.items())],
            citation=citation(self.card_method) if self.card_method else DISTILLATION_CITATION,
        )
        card.save(os.path.join(args.output_dir, "README.md"))


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
        model.add_module(
            self.side_module_name, module.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        )

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
        host = unwrap_parallel(host)
        module = dict(host.named_children()).get(self.side_module_name)
        if module is not None:
            delattr(host, self.side_module_name)
        try:
            yield module
        finally:
            if module is not None:
                host.add_module(self.side_module_name, module)

    def _student_num_parameters(self) -> int:
        with self._without_side_module():
            return super()._student_num_parameters()

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
