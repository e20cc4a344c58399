"""Every shim in `hf_methods.compat` against the installed transformers / accelerate / huggingface_hub.

Each test checks what its shim relies on, so a release that changes it fails here, naming the shim, before it breaks a
method somewhere less obvious. When one fails: read the shim's docstring, adapt the shim (only there), rerun.
"""

import dataclasses
import os

import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_methods import compat


def _vit_config(**kw):
    return ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        num_labels=3,
        **kw,
    )


def _gpt2():
    return GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=16, bos_token_id=0, eos_token_id=0)
    )


# --- CACHE_NAME -------------------------------------------------------------------------------------------------------
def test_cache_name_is_the_output_field_and_the_forward_keyword():
    fields = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    assert compat.CACHE_NAME in fields, (
        f"compat.CACHE_NAME={compat.CACHE_NAME!r} is not a field of CausalLMOutputWithPast"
    )
    model = _gpt2().eval()
    out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    cache = compat.output_cache(out)
    assert isinstance(cache, Cache), f"compat.output_cache: no Cache under {compat.CACHE_NAME!r}"
    # the cache goes back in under the same name, and continuing equals running the whole sequence
    step = model(input_ids=torch.tensor([[4]]), use_cache=True, **{compat.CACHE_NAME: cache})
    full = model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], msg="compat.CACHE_NAME: forward keyword")


def test_pop_cache_argument_takes_either_name_and_refuses_both():
    assert compat.pop_cache_argument({"cache": 1}) == 1
    assert compat.pop_cache_argument({"past_key_values": 2}) == 2
    kwargs = {"past_key_values": None, "x": 0}
    assert compat.pop_cache_argument(kwargs) is None and kwargs == {"x": 0}
    with pytest.raises(ValueError, match="once"):
        compat.pop_cache_argument({"cache": 1, "past_key_values": 2})


def test_cache_api_that_proxy_tuned_cache_implements():
    missing = [m for m in compat.CACHE_METHODS if not hasattr(Cache, m)]
    assert not missing, f"compat.CACHE_METHODS: transformers' Cache no longer has {missing}"
    hook = compat.supports_default_dynamic_cache_hook()
    assert hasattr(GenerationMixin, hook), f"compat.supports_default_dynamic_cache_hook: GenerationMixin.{hook} is gone"


# --- accelerate -------------------------------------------------------------------------------------------------------
def test_untrack_prepared_model_removes_an_inference_model_from_the_accelerator():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = nn.Linear(2, 2)
    prepared = accelerator.prepare_model(model, evaluation_mode=True)
    assert prepared in accelerator._models, (
        "compat.untrack_prepared_model: accelerate no longer tracks models prepared with evaluation_mode=True in "
        "Accelerator._models; the shim (and its call in FrozenModelsTrainer._prepare_frozen) can go."
    )
    compat.untrack_prepared_model(accelerator, prepared)
    assert prepared not in accelerator._models


# --- Trainer hooks ----------------------------------------------------------------------------------------------------
def test_trainer_hooks_exist_with_the_parameters_we_override():
    for name, params in compat.TRAINER_HOOKS.items():
        assert hasattr(Trainer, name), f"compat.TRAINER_HOOKS: Trainer.{name} is gone"
        got = compat.parameter_names(getattr(Trainer, name))
        assert got == params, f"compat.TRAINER_HOOKS: Trainer.{name} now takes {got}, our overrides take {params}"


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x, labels=None):
        logits = self.linear(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def test_trainer_calls_the_hooks_we_override(tmp_path):
    from datasets import Dataset

    calls = []

    class Recording(Trainer):
        def _save(self, output_dir=None, state_dict=None):
            calls.append("_save")
            super()._save(output_dir, state_dict=state_dict)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            calls.append("_load_from_checkpoint")
            super()._load_from_checkpoint(resume_from_checkpoint, model)

        def _load_best_model(self):
            calls.append("_load_best_model")
            super()._load_best_model()

        def _get_num_items_in_batch(self, batch_samples, device):
            calls.append("_get_num_items_in_batch")
            return super()._get_num_items_in_batch(batch_samples, device)

        def _set_signature_columns_if_needed(self):
            calls.append("_set_signature_columns_if_needed")
            super()._set_signature_columns_if_needed()
            compat.add_signature_columns(self, ["keep_me"])

    data = Dataset.from_dict(
        {"x": [[0.0, 1.0], [1.0, 0.0]] * 4, "labels": [0, 1] * 4, "keep_me": list(range(8)), "drop_me": list(range(8))}
    )
    seen_columns = []

    def collate(rows):
        seen_columns.append(sorted(rows[0]))
        return {"x": torch.tensor([r["x"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}

    def run(**kw):
        args = TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=2,
            per_device_train_batch_size=4,
            save_strategy="steps",
            save_steps=1,
            eval_strategy="steps",
            eval_steps=1,
            load_best_model_at_end=True,
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = Recording(model=_Tiny(), args=args, train_dataset=data, eval_dataset=data, data_collator=collate)
        assert hasattr(trainer, "model_accepts_loss_kwargs"), "compat.TRAINER_HOOKS: Trainer.model_accepts_loss_kwargs"
        trainer.train(**kw)

    run()
    run(resume_from_checkpoint=os.path.join(str(tmp_path), "checkpoint-1"))
    for name in compat.TRAINER_HOOKS:
        assert name in calls, f"compat.TRAINER_HOOKS: Trainer no longer calls {name} (overrides would be ignored)"
    assert all("keep_me" in cols and "drop_me" not in cols for cols in seen_columns), (
        "compat.add_signature_columns: Trainer._signature_columns no longer decides which columns are kept"
    )


def test_resume_still_skips_key_renaming_so_the_reload_workaround_is_needed(tmp_path):
    """huggingface/transformers#43701. Fails once a release loads renamed checkpoints on resume by itself: then
    `compat.checkpoint_keys_need_reload` and `ResumableTrainer._load_renamed_checkpoint` can go."""
    from hf_methods.trainers.resumable import saved_keys

    torch.manual_seed(0)
    saved = ViTForImageClassification(_vit_config())
    saved.save_pretrained(tmp_path / "ckpt")
    torch.manual_seed(1)
    fresh = ViTForImageClassification(_vit_config())
    assert compat.checkpoint_keys_need_reload(saved_keys(str(tmp_path / "ckpt")), fresh), (
        "compat.checkpoint_keys_need_reload: ViT checkpoints now keep the model's own key names"
    )
    trainer = Trainer(
        model=fresh, args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    )
    trainer._load_from_checkpoint(str(tmp_path / "ckpt"))
    loaded_all = all(torch.equal(v, saved.state_dict()[k]) for k, v in fresh.state_dict().items())
    assert not loaded_all, (
        "compat.checkpoint_keys_need_reload: transformers#43701 is fixed in this release (resume "
        "loads renamed checkpoints); remove the reload workaround."
    )


# --- modeling internals -----------------------------------------------------------------------------------------------
class _CountingConfig(PreTrainedConfig):
    model_type = "hf_methods_compat_test"
    hidden_size: int = 4


def test_gradient_checkpointing_layer_recomputes_in_backward():
    calls = []

    class Layer(compat.gradient_checkpointing_layer()):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            calls.append(1)
            return torch.tanh(self.linear(x))

    class Model(PreTrainedModel):
        config_class = _CountingConfig
        supports_gradient_checkpointing = True

        def __init__(self, config):
            super().__init__(config)
            self.layer = Layer()
            self.post_init()

        def forward(self, x):
            return self.layer(x)

    hooked = []

    class HookedModel(Model):
        def _set_gradient_checkpointing(self, enable=True, gradient_checkpointing_func=None, **kw):
            hooked.append(enable)
            super()._set_gradient_checkpointing(enable, gradient_checkpointing_func, **kw)

    for name, params in compat.MODEL_HOOKS.items():
        got = compat.parameter_names(getattr(PreTrainedModel, name))
        assert got[: len(params)] == params, f"compat.MODEL_HOOKS: PreTrainedModel.{name} now takes {got}"
    model = HookedModel(_CountingConfig())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert hooked == [True], (
        "compat.MODEL_HOOKS: gradient_checkpointing_enable no longer calls _set_gradient_checkpointing"
    )
    model.train()
    model(torch.randn(2, 4, requires_grad=True)).sum().backward()
    assert len(calls) == 2, (
        "compat.gradient_checkpointing_layer: GradientCheckpointingLayer no longer recomputes its "
        f"forward under gradient checkpointing ({len(calls)} forward calls)"
    )


def test_build_from_config_and_attention_implementation():
    config = _vit_config()
    compat.set_attn_implementation(config, "eager")
    assert compat.attn_implementation(config) == "eager", "compat.attn_implementation: config._attn_implementation"
    model = compat.build_from_config(ViTForImageClassification, _vit_config(), attn_implementation="eager")
    assert isinstance(model, ViTForImageClassification)
    assert compat.attn_implementation(model.config) == "eager", "compat.build_from_config: attn_implementation ignored"


def test_built_whole_hides_zero3_from_transformers_for_the_block():
    from transformers.integrations import deepspeed as hf_deepspeed
    from transformers.integrations import is_deepspeed_zero3_enabled

    from hf_methods.compat import built_whole

    class Zero3:  # what transformers holds a weak reference to once a ZeRO-3 TrainingArguments exists
        def is_zero3(self):
            return True

    config = Zero3()
    hf_deepspeed.set_hf_deepspeed_config(config)
    try:
        assert is_deepspeed_zero3_enabled()
        with built_whole():
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
    assert not is_deepspeed_zero3_enabled()


def test_mark_initialized_makes_init_weights_skip_a_module():
    model = ViTForImageClassification(_vit_config())
    head = model.classifier
    with torch.no_grad():
        head.weight.fill_(7.0)
    compat.mark_initialized(head)
    model.init_weights()
    assert torch.all(head.weight == 7.0), "compat.mark_initialized: init_weights no longer honours _is_hf_initialized"
    compat.clear_initialized(head)
    model.init_weights()
    assert not torch.all(head.weight == 7.0), "compat.clear_initialized: the module stayed marked"


def test_vit_building_blocks_are_the_stock_vit_modules():
    embeddings_cls, layer_cls = compat.vit_building_blocks()
    config = _vit_config()
    model = ViTForImageClassification(config)
    kinds = {type(m) for m in model.modules()}
    assert {embeddings_cls, layer_cls} <= kinds, "compat.vit_building_blocks: ViT is no longer built from these"
    out = layer_cls(config)(torch.randn(2, 5, 8), None)
    assert torch.is_tensor(out) and out.shape == (2, 5, 8), (
        "compat.vit_building_blocks: ViTLayer(hidden, None) no longer returns the hidden states tensor"
    )


def test_auto_class_names_and_causal_lm_loss():
    assert compat.auto_class_name_for("GPT2LMHeadModel") == "AutoModelForCausalLM", "compat.auto_class_name_for"
    assert compat.auto_class_name_for("ViTForImageClassification") == "AutoModelForImageClassification"
    assert compat.auto_class_name_for("BertForSequenceClassification") == "AutoModelForSequenceClassification"
    assert compat.auto_class_name_for("NoSuchModel") is None
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(
            num_hidden_layers=1,
            hidden_size=8,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=8,
            vocab_size=11,
        )
    )
    assert compat.uses_causal_lm_loss(llama), "compat.uses_causal_lm_loss: LOSS_MAPPING / loss_type changed"
    logits, labels = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    labels[0, 2] = -100
    expected = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(
        compat.causal_lm_loss(logits, labels, vocab_size=11),
        expected,
        msg="compat.causal_lm_loss: no longer the shifted mean cross-entropy",
    )


def test_auxiliary_head_runs_inside_the_stock_forward():
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    backbone = ConvNextConfig(
        num_channels=3,
        hidden_sizes=[8, 8, 8, 8],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    model = UperNetForSemanticSegmentation(
        UperNetConfig(
            backbone_config=backbone, hidden_size=8, auxiliary_channels=8, num_labels=3, use_auxiliary_head=True
        )
    )
    head = compat.auxiliary_head(model)
    assert head is not None, "compat.auxiliary_head: UperNet has no `auxiliary_head` module any more"
    seen = []
    handle = head.register_forward_hook(lambda *_: seen.append(1))
    model.eval()(pixel_values=torch.randn(1, 3, 32, 32))
    handle.remove()
    assert seen, "compat.auxiliary_head: UperNet's forward no longer runs its auxiliary head"


def test_optional_repo_file(tmp_path):
    (tmp_path / "there.txt").write_text("x")
    assert compat.optional_repo_file(str(tmp_path), "there.txt") == str(tmp_path / "there.txt")
    assert compat.optional_repo_file(str(tmp_path), "absent.txt") is None, "compat.optional_repo_file: missing file"
    assert compat.optional_repo_file("nobody/nothing", "x.txt") is None, "compat.optional_repo_file: offline Hub id"


def test_hub_endpoint_patches_name_attributes_that_exist(tmp_path):
    for obj, name, _ in compat.hub_endpoint_patches("http://127.0.0.1:1", str(tmp_path)):
        assert hasattr(obj, name), f"compat.hub_endpoint_patches: {getattr(obj, '__name__', obj)}.{name} is gone"
