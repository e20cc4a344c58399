"""The base of the trainers that hold frozen models: which fields each config has (no inherited-then-forbidden ones),
the frozen-model fields' checks, `_prepare_frozen` (frozen, eval, dtype, DeepSpeed refused in one place), the dtype
helpers, and integer buffers copied out of a memory-mapped checkpoint."""

import dataclasses

import pytest
import torch
import transformers
from safetensors import safe_open
from torch import nn
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification

from hf_methods.trainers import (
    ConsistentProxyTuningConfig,
    ConsistentProxyTuningTrainer,
    DistillationConfig,
    DistillationTrainer,
    FrozenModelsConfig,
    FrozenModelsTrainer,
    FrozenTeacherConfig,
    FrozenTeacherTrainer,
    LearngenePoolDistillationTrainer,
    MultiLabelKDConfig,
    MultiLabelKDTrainer,
    PoolDistillationConfig,
    RDDConfig,
    RDDTrainer,
)
from hf_methods.trainers.frozen_models import cast_floating, detach_from_checkpoint, frozen_init_kwargs

TEACHER_FIELDS = {"teacher_model_name_or_path", "teacher_model_init_kwargs", "teacher_dtype"}


def added_fields(cls, base=TrainingArguments) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {f.name for f in dataclasses.fields(base)}


def vit(num_labels=4, seed=0):
    torch.manual_seed(seed)
    return ViTForImageClassification(
        ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=8,
            patch_size=4,
            num_channels=1,
            num_labels=num_labels,
        )
    )


def args(tmp_path, cls=DistillationConfig, **overrides):
    return cls(output_dir=str(tmp_path), report_to="none", use_cpu=True, **overrides)


# ---------------------------------------------------------------- configs: only the fields each trainer uses
def test_each_config_adds_only_the_fields_its_trainer_uses():
    assert added_fields(FrozenModelsConfig) == set()
    assert added_fields(FrozenTeacherConfig) == TEACHER_FIELDS
    kd = {"distillation_type", "alpha", "temperature", "kd_normalization"}
    assert added_fields(DistillationConfig, FrozenTeacherConfig) == kd
    assert added_fields(PoolDistillationConfig, FrozenTeacherConfig) == {
        "alpha",
        "temperature",
        "feature_positions",
        "feature_loss",
    }
    rdd = added_fields(RDDConfig, FrozenTeacherConfig)
    assert {"temperature", "lambda_logits"} <= rdd and not rdd & {"alpha", "distillation_type", "kd_normalization"}
    l2d = added_fields(MultiLabelKDConfig, FrozenTeacherConfig)
    assert {"distillation_type", "temperature", "kd_normalization", "lambda_logits"} <= l2d and "alpha" not in l2d
    cpt = added_fields(ConsistentProxyTuningConfig, FrozenModelsConfig)
    assert not cpt & (TEACHER_FIELDS | kd) and {"large_dtype", "small_dtype"} <= cpt
    for trainer, config in (
        (DistillationTrainer, DistillationConfig),
        (RDDTrainer, RDDConfig),
        (MultiLabelKDTrainer, MultiLabelKDConfig),
        (LearngenePoolDistillationTrainer, PoolDistillationConfig),
        (ConsistentProxyTuningTrainer, ConsistentProxyTuningConfig),
    ):
        assert issubclass(trainer, FrozenModelsTrainer) and trainer.config_class is config


@pytest.mark.parametrize(
    "cls", [FrozenTeacherConfig, DistillationConfig, RDDConfig, MultiLabelKDConfig, PoolDistillationConfig]
)
def test_teacher_fields_are_checked_once_for_every_config(tmp_path, cls):
    with pytest.raises(ValueError, match="`teacher_dtype` must be one of"):
        args(tmp_path, cls, teacher_dtype="int8")
    with pytest.raises(ValueError, match="`teacher_model_init_kwargs` must be a dict or a JSON object"):
        args(tmp_path, cls, teacher_model_init_kwargs="dtype=bfloat16")
    parsed = args(tmp_path, cls, teacher_model_init_kwargs='{"revision": "main"}')
    assert parsed.teacher_model_init_kwargs == {"revision": "main"}


def test_cpt_frozen_models_are_checked_by_the_same_base(tmp_path):
    with pytest.raises(ValueError, match="`small_dtype` must be one of"):
        args(tmp_path, ConsistentProxyTuningConfig, small_dtype="fp16")
    assert ConsistentProxyTuningConfig.frozen_models == ("large", "small")


# ---------------------------------------------------------------- preparing frozen models
def test_prepare_frozen_freezes_and_casts_and_prepares_deepspeed_in_one_place(tmp_path, monkeypatch):
    trainer = DistillationTrainer(
        model=vit(),
        args=args(tmp_path),
        teacher_model=vit(seed=1),
        train_dataset=[{"pixel_values": torch.zeros(1, 8, 8), "labels": torch.tensor(0)}],
    )
    teacher = trainer.teacher_model
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in trainer.model.parameters())
    frozen = trainer._prepare_frozen(nn.Linear(2, 2), "bfloat16")
    assert frozen.weight.dtype == torch.bfloat16 and not frozen.weight.requires_grad and not frozen.training
    assert trainer._prepare_frozen(None, "auto") is None

    trainer.is_deepspeed_enabled = True  # what the accelerator state says under DeepSpeed
    import importlib.util

    from hf_methods.trainers import frozen_models

    engines = []  # the DeepSpeed branch, without DeepSpeed (its real runs: tests/trainers/test_deepspeed.py)
    monkeypatch.setattr(frozen_models, "_deepspeed_inference_engine", lambda model, acc: engines.append(model) or model)
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ImportError, match="needs the deepspeed package: pip install deepspeed"):
            trainer._prepare_frozen(nn.Linear(2, 2), "auto")
    else:
        linear = nn.Linear(2, 2)
        assert trainer._prepare_frozen(linear, "auto") is linear and engines == [linear]
    assert trainer._prepare_frozen(None, "auto") is None  # a model CPT runs without (cached logits) needs nothing
    for cls in (
        DistillationTrainer,
        RDDTrainer,
        MultiLabelKDTrainer,
        LearngenePoolDistillationTrainer,
        ConsistentProxyTuningTrainer,
        FrozenTeacherTrainer,
    ):
        assert cls._prepare_frozen is FrozenModelsTrainer._prepare_frozen, cls
        assert cls._check_frozen_support is FrozenModelsTrainer._check_frozen_support, cls


def test_args_of_another_trainer_are_refused_naming_the_config_class(tmp_path):
    with pytest.raises(TypeError, match="`args` must be a DistillationConfig, got TrainingArguments"):
        DistillationTrainer(
            model=vit(), args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True), teacher_model=vit()
        )
    with pytest.raises(ValueError, match="DistillationTrainer computes its own loss"):
        DistillationTrainer(model=vit(), args=args(tmp_path), teacher_model=vit(), compute_loss_func=lambda *a: 0)


def test_the_teacher_base_writes_a_student_card(tmp_path):
    trainer = FrozenTeacherTrainer(model=vit(), args=args(tmp_path, FrozenTeacherConfig), teacher_model=vit(seed=1))
    assert trainer.teacher_model is not None and trainer.loss_parts == ()
    trainer.create_model_card()
    text = (tmp_path / "README.md").read_text()
    assert "`FrozenTeacherTrainer` against the frozen teacher" in text and "touvron2021deit" in text
    with pytest.raises(ValueError, match="FrozenTeacherTrainer needs a teacher"):
        FrozenTeacherTrainer(model=vit(), args=args(tmp_path, FrozenTeacherConfig))


def test_dtype_helpers():
    inputs = {"pixel_values": torch.ones(2, 3), "input_ids": torch.ones(2, dtype=torch.long), "flag": True}
    cast = cast_floating(inputs, "bfloat16")
    assert cast["pixel_values"].dtype == torch.bfloat16 and cast["input_ids"].dtype == torch.long and cast["flag"]
    assert cast_floating(inputs, "auto") is inputs
    no_code = {"trust_remote_code": False}  # a folder's own code never runs unless the init kwargs opt in
    assert frozen_init_kwargs({"revision": "main"}, "float16") == {
        **no_code,
        "revision": "main",
        "dtype": torch.float16,
    }
    assert frozen_init_kwargs(None, "auto") == no_code
    assert frozen_init_kwargs({"trust_remote_code": True}, "auto") == {"trust_remote_code": True}


def test_frozen_models_loaded_by_name_own_their_integer_buffers(tmp_path):
    """from_pretrained leaves int64 buffers (BatchNorm's num_batches_tracked) as views of the memory-mapped
    checkpoint, which keeps the whole file resident; detach_from_checkpoint copies them out, values unchanged."""
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_channels=1, num_labels=3, layer_type="basic"
    )
    transformers.ResNetForImageClassification(config).save_pretrained(tmp_path)
    loaded = transformers.ResNetForImageClassification.from_pretrained(tmp_path, dtype=torch.bfloat16)
    before = {n: b.untyped_storage().data_ptr() for n, b in loaded.named_buffers() if not b.is_floating_point()}
    assert before
    detach_from_checkpoint(loaded)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        for name, buffer in loaded.named_buffers():
            if not buffer.is_floating_point():
                assert buffer.untyped_storage().data_ptr() != before[name], name
                assert torch.equal(buffer, f.get_tensor(name)), name
