"""Nonsense is refused with one sentence naming the field, the bad value and the fix, never accepted silently.

One test (or parametrized group) per case of the issue "never accept nonsense silently": depth overrides that
contradict the requested depth, loss knobs (temperature, alpha, lambda_*), label values, teacher label maps, a teacher
that is the student, the dtype and values of loaded weights, bool / sequence config fields, depth bounds, head counts.
"""

import copy
import math
import os
import sys

import pytest
import torch
import transformers as T
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))  # tiny.py: tiny stock configs

from tiny import bert_config, gpt2_config, llama_config, stock_model, vit_config  # noqa: E402

from hf_methods.engine import select_teacher_layers  # noqa: E402
from hf_methods.engine.architectures import layer_list, spec_for  # noqa: E402
from hf_methods.engine.learngene import MAX_NUM_LAYERS  # noqa: E402
from hf_methods.models.gtl import GTLConfig  # noqa: E402
from hf_methods.models.learngene_pool import LearngenePoolConfig  # noqa: E402
from hf_methods.models.sws import SWSConfig, SWSModel  # noqa: E402
from hf_methods.models.tleg import TLEGConfig, TLEGModel  # noqa: E402
from hf_methods.trainers import (  # noqa: E402
    DistillationConfig,
    DistillationTrainer,
    MultiLabelKDConfig,
    MultiLabelKDTrainer,
    PoolDistillationConfig,
    RDDConfig,
    l2d_loss,
    rdd_task_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tleg(base=None, cls="ViTForImageClassification", **kw):
    return TLEGModel(TLEGConfig.from_base(base or vit_config(), cls, aux_num_layers=2, **kw))


def sws(**kw):
    return SWSModel(SWSConfig.from_base(vit_config(), "ViTForImageClassification", stage_sizes=[1, 1, 1], **kw))


TRAIN = {"output_dir": "unused", "report_to": "none", "use_cpu": True, "save_strategy": "no", "disable_tqdm": True}


# ---------------------------------------------------------------- 1. a depth override that contradicts num_layers
@pytest.mark.parametrize(
    "base, cls, depth_field",
    [
        (vit_config, "ViTForImageClassification", "num_hidden_layers"),
        (gpt2_config, "GPT2LMHeadModel", "n_layer"),
        (gpt2_config, "GPT2LMHeadModel", "num_hidden_layers"),  # GPT-2's alias of n_layer
    ],
)
def test_expand_refuses_a_depth_override_that_contradicts_num_layers(base, cls, depth_field):
    gene = tleg(base(), cls)
    message = rf"{depth_field}=7 .*contradicts num_layers=2"
    with pytest.raises(ValueError, match=message):
        gene.expand(2, **{depth_field: 7})
    with pytest.raises(ValueError, match=message):
        gene.descendant_num_parameters(2, **{depth_field: 7})
    model = gene.expand(2, **{depth_field: 2})  # agreeing with num_layers is allowed
    assert len(layer_list(model, spec_for(model.config.model_type))[1]) == 2


def test_sws_expand_and_teacher_layer_selection_refuse_a_contradicting_depth_override():
    with pytest.raises(ValueError, match=r"num_hidden_layers=7 .*contradicts num_layers=3"):
        sws().expand(3, num_hidden_layers=7)
    teacher = stock_model("vit", 4)
    with pytest.raises(ValueError, match=r"num_hidden_layers=3 .*contradicts num_layers=2"):
        select_teacher_layers(teacher, 2, num_hidden_layers=3)
    assert select_teacher_layers(teacher, 2, num_hidden_layers=2).config.num_hidden_layers == 2


# ---------------------------------------------------------------- 2. temperature, alpha, lambda_* of trainer configs
TEMPERATURE_CONFIGS = [
    (DistillationConfig, {}),
    (PoolDistillationConfig, {}),
    (RDDConfig, {}),
    (MultiLabelKDConfig, {"multilabel_kd_type": "softmax"}),  # the only one of its types with a temperature
]


@pytest.mark.parametrize("config_class, extra", TEMPERATURE_CONFIGS, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1.0, True, "2"])
def test_temperature_must_be_a_finite_number_above_zero(config_class, extra, value):
    with pytest.raises(ValueError, match=r"^`temperature` must be a finite number > 0 .*got "):
        config_class(**TRAIN, **extra, temperature=value)


@pytest.mark.parametrize("config_class", [DistillationConfig, PoolDistillationConfig])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -0.1, 1.5, True, "0.5"])
def test_alpha_must_be_a_finite_number_in_0_1(config_class, value):
    with pytest.raises(ValueError, match=r"^`alpha` must be a number in \[0, 1\]"):
        config_class(**TRAIN, alpha=value)


@pytest.mark.parametrize("name", ["lambda_logits", "aux_weight"])
@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0, True])
def test_rdd_weights_must_be_finite_and_non_negative(name, value):
    with pytest.raises(ValueError, match=rf"^`{name}` must be a finite number >= 0"):
        RDDConfig(**TRAIN, **{name: value})


def test_rdd_class_weights_must_be_finite():
    with pytest.raises(ValueError, match=r"^`class_weights` must be None or one finite"):
        RDDConfig(**TRAIN, class_weights=[1.0, math.inf, 1.0])


def test_good_loss_knobs_still_pass():
    DistillationConfig(**TRAIN, temperature=4, alpha=1)
    PoolDistillationConfig(**TRAIN, temperature=2.5, alpha=0.0)
    RDDConfig(**TRAIN, temperature=1.0, lambda_logits=0, aux_weight=0.4, class_weights=[1.0, 2.0])


# ---------------------------------------------------------------- 3. label values of multi-label and segmentation
@pytest.mark.parametrize("labels", [[[2.0, -1.0, 0.0, 1.0]], [[5.0, 5.0, 5.0, 5.0]], [[0.0, math.nan, 1.0, 0.0]]])
def test_multilabel_targets_must_lie_in_0_1(labels):
    logits = torch.zeros(1, 4)
    with pytest.raises(ValueError, match=r"^`labels` must be multi-hot .*in \[0, 1\]"):
        l2d_loss(logits, None, torch.tensor(labels))
    l2d_loss(logits, None, torch.tensor([[0.0, 0.3, 1.0, 0.9]]))  # soft labels are fine


def test_multilabel_trainer_refuses_out_of_range_labels_in_compute_loss(tmp_path):
    config = T.ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_labels=4,
        problem_type="multi_label_classification",
    )
    args = MultiLabelKDConfig(**{**TRAIN, "output_dir": str(tmp_path)}, distillation_type="none")
    trainer = MultiLabelKDTrainer(model=T.ViTForImageClassification(config), args=args)
    batch = {"pixel_values": torch.randn(2, 1, 8, 8), "labels": torch.tensor([[2.0, -1.0, 0, 1], [0, 1, 0, 1]])}
    with pytest.raises(ValueError, match=r"^`labels` must be multi-hot"):
        trainer.compute_loss(trainer.model, batch)


@pytest.mark.parametrize("bad", [7, 3, -1])
def test_segmentation_labels_must_be_class_ids_or_the_ignore_index(bad):
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = 255
    rdd_task_loss(logits, labels, stage=0)  # class ids and the ignore index are fine
    labels[1, 2, 2] = bad
    with pytest.raises(ValueError, match=rf"^`labels` hold {bad}.* in 0\.\.2 .*ignore_index=255"):
        rdd_task_loss(logits, labels, stage=0)


# ---------------------------------------------------------------- 4. and 5. the teacher of a distillation trainer
def tiny_vit(id2label=None, seed=0):
    torch.manual_seed(seed)
    config = vit_config(num_labels=4)
    if id2label is not None:
        config.id2label = id2label
        config.label2id = {v: k for k, v in id2label.items()}
    return T.ViTForImageClassification(config)


def distiller(tmp_path, student, teacher):
    args = DistillationConfig(**{**TRAIN, "output_dir": str(tmp_path)})
    return DistillationTrainer(model=student, args=args, teacher_model=teacher)


def test_a_teacher_whose_label_names_differ_from_the_students_is_refused(tmp_path):
    names = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}
    reversed_names = {i: names[3 - i] for i in range(4)}
    with pytest.raises(ValueError, match=r"teacher's id2label \{0: 'fish', .*student's \{0: 'cat'.*remap"):
        distiller(tmp_path, tiny_vit(names), tiny_vit(reversed_names, seed=1))
    distiller(tmp_path, tiny_vit(names), tiny_vit(dict(names), seed=1))  # same names: fine
    distiller(tmp_path, tiny_vit(names), tiny_vit(seed=1))  # LABEL_0 .. LABEL_3: unknown, let through
    distiller(tmp_path, tiny_vit(), tiny_vit(names, seed=1))


def test_a_teacher_that_is_the_student_or_shares_its_parameters_is_refused(tmp_path):
    student = tiny_vit()
    with pytest.raises(ValueError, match=r"^`teacher_model` is the student or shares .* parameters"):
        distiller(tmp_path, student, student)
    with pytest.raises(ValueError, match=r"^`teacher_model` is the student or shares .* parameters"):
        distiller(tmp_path, student, copy.copy(student))  # a shallow copy: the same Parameter objects
    assert all(p.requires_grad for p in student.parameters())  # refused before anything was frozen
    distiller(tmp_path, student, copy.deepcopy(student))  # a real copy is a fine teacher


# ---------------------------------------------------------------- 6. dtypes and values of loaded weights
def saved_with(tmp_path, change):
    gene = tleg()
    gene.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    state = load_file(path)
    key = next(k for k in sorted(state) if k.endswith("theta_b.attention.q_proj.weight"))
    state[key] = change(state[key])
    save_file(state, path, metadata={"format": "pt"})
    return key


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_loading_refuses_an_integer_or_bool_tensor_for_a_floating_parameter(tmp_path, dtype):
    key = saved_with(tmp_path, lambda t: (t > 0).to(dtype))
    name = "I64" if dtype == torch.int64 else "BOOL"
    with pytest.raises(ValueError, match=rf"stores {key} as {name}, but TLEGModel holds it as torch.float32"):
        TLEGModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_loading_refuses_non_finite_weights_unless_allowed(tmp_path, bad):
    key = saved_with(tmp_path, lambda t: t.index_fill(0, torch.tensor([0]), bad))
    with pytest.raises(ValueError, match=rf"{key} holds NaN or inf values.*allow_non_finite=True"):
        TLEGModel.from_pretrained(tmp_path)
    model = TLEGModel.from_pretrained(tmp_path, allow_non_finite=True)
    assert not torch.isfinite(model.state_dict()[key]).all()


def test_the_dtype_check_reads_a_checkpoint_loaded_from_the_hub(fake_hub, tmp_path):
    from huggingface_hub import HfApi

    key = saved_with(tmp_path, lambda t: (t > 0).to(torch.int64))
    api = HfApi()
    api.create_repo("tester/int-weights")
    api.upload_folder(folder_path=str(tmp_path), repo_id="tester/int-weights")
    with pytest.raises(ValueError, match=rf"stores {key} as I64, but TLEGModel holds it as torch.float32"):
        TLEGModel.from_pretrained("tester/int-weights")


def test_a_clean_checkpoint_still_loads(tmp_path):
    gene = tleg()
    gene.save_pretrained(tmp_path)
    loaded = TLEGModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(gene.state_dict().values(), loaded.state_dict().values()))


# ---------------------------------------------------------------- 7. bool and sequence fields
@pytest.mark.parametrize("value", ["no", "False", 0, None])
def test_use_published_presets_must_be_a_bool(value):
    with pytest.raises(ValueError, match=r"^use_published_presets must be True or False"):
        SWSConfig.from_base(vit_config(), "ViTForImageClassification", use_published_presets=value)


def test_a_mapping_or_set_where_a_sequence_is_expected_is_refused():
    with pytest.raises(ValueError, match=r"^layers_source must be a list .*got a dict"):
        sws().expand(3, layers_source={0: 2, 1: 2, 2: 2})
    with pytest.raises(ValueError, match=r"^layers_source must be a list .*got a set"):
        sws().expand(3, layers_source={0, 1, 2})
    with pytest.raises(ValueError, match=r"^strategy must be 'first', 'even' or a list .*got a dict"):
        select_teacher_layers(stock_model("vit", 4), 2, strategy={0: 1, 2: 3})
    with pytest.raises(ValueError, match=r"^stage_sizes must be a non-empty list"):
        SWSConfig.from_base(vit_config(), "ViTForImageClassification", stage_sizes={3: 1, 4: 1})
    with pytest.raises(ValueError, match=r"^train_config_ids must be a list .*got a dict"):
        LearngenePoolConfig(train_config_ids={0: 1, 1: 1})
    for field in ("layers", "lineage"):
        with pytest.raises(ValueError, match=rf"^{field} must be a list .*got a dict"):
            GTLConfig(**{field: {"name": "conv", "shape": [1], "units": 1}})
    with pytest.raises(ValueError, match=r"^base_config must be a dict"):
        TLEGConfig(base_model_class="ViTForImageClassification", base_config=[("hidden_size", 32)])


# ---------------------------------------------------------------- 8. depth bounds
@pytest.mark.parametrize("value", [10**9, MAX_NUM_LAYERS + 1, True])
def test_aux_num_layers_is_bounded(value):
    with pytest.raises(ValueError, match=rf"^aux_num_layers must be an integer in 1\.\.{MAX_NUM_LAYERS}"):
        TLEGConfig.from_base(vit_config(), "ViTForImageClassification", aux_num_layers=value)


def test_sws_stage_sizes_and_expand_depth_are_bounded():
    with pytest.raises(ValueError, match=r"stage_sizes=\[3, 1000000000\] add up to 1000000003 layers, more than "):
        SWSConfig.from_base(vit_config(), "ViTForImageClassification", stage_sizes=[3, 10**9])
    with pytest.raises(ValueError, match=rf"^num_layers must be a positive integer .* at most {MAX_NUM_LAYERS}"):
        tleg().expand(10**9)
    with pytest.raises(ValueError, match=rf"^num_layers must be a positive integer .* at most {MAX_NUM_LAYERS}"):
        tleg().descendant_num_parameters(MAX_NUM_LAYERS + 1)
    with pytest.raises(ValueError, match=rf"^num_layers must be a positive integer .* at most {MAX_NUM_LAYERS}"):
        sws().expand(10**6)


# ---------------------------------------------------------------- 9. heads that do not divide the hidden size
@pytest.mark.parametrize(
    "config_fn, cls, heads_field",
    [
        (vit_config, "ViTForImageClassification", "num_attention_heads"),  # before: a 30-wide attention, silently
        (bert_config, "BertForSequenceClassification", "num_attention_heads"),
        (gpt2_config, "GPT2LMHeadModel", "n_head"),
        (llama_config, "LlamaForCausalLM", "num_attention_heads"),
    ],
)
def test_heads_must_divide_the_hidden_size_before_anything_is_built(config_fn, cls, heads_field):
    base = config_fn()
    base_dict = {**base.to_dict(), heads_field: 5}
    if "num_key_value_heads" in base_dict:
        base_dict["num_key_value_heads"] = 5
    message = (
        r"^base_config has hidden_size=32 and num_attention_heads=5: hidden_size must be divisible by "
        r"num_attention_heads, so use e\.g\. num_attention_heads=4\.$"
    )
    with pytest.raises(ValueError, match=message):
        TLEGConfig(base_model_class=cls, base_config=base_dict, aux_num_layers=2)
    with pytest.raises(ValueError, match=r"^the overrides give hidden_size=32 and num_attention_heads=5"):
        tleg(base, cls).expand(2, num_attention_heads=5)


def test_pool_instances_must_have_heads_that_divide_their_width():
    small = T.ViTConfig(hidden_size=32, num_attention_heads=5, num_hidden_layers=2, image_size=16, patch_size=4)
    with pytest.raises(ValueError, match=r"^instance_configs\[0\] has hidden_size=32 and num_attention_heads=5"):
        LearngenePoolConfig(instance_configs=[small, small])


def test_a_teacher_folder_with_its_own_code_is_refused_not_run(tmp_path):
    """A teacher named by path whose config needs remote code (unknown model_type + auto_map): the library passes
    trust_remote_code=False, so transformers refuses instead of asking or running the folder's code."""
    import json as _json

    import transformers as T

    from hf_methods.trainers import DistillationConfig, DistillationTrainer

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text(
        _json.dumps({"model_type": "mystery-net", "auto_map": {"AutoModelForCausalLM": "modeling.MysteryNet"}})
    )
    (folder / "modeling.py").write_text("raise SystemExit('the folder code ran')\n")
    student = T.GPT2LMHeadModel(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    args = DistillationConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="model type `mystery-net`"):  # not a prompt, and its code never runs
        DistillationTrainer(model=student, args=args, teacher_model=str(folder))


def test_a_pickled_checkpoint_is_not_read(tmp_path):
    """`.bin` weights are a pickle (and carry no dtype header to check): hf-methods models load safetensors only."""
    gene = tleg()
    gene.save_pretrained(tmp_path)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):
        TLEGModel.from_pretrained(tmp_path)
