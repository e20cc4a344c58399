"""`ResumableTrainer`: transformers' `Trainer`, resuming every model's checkpoints with their weights.

transformers 5.23-5.24 resume a checkpoint with a raw `load_state_dict(strict=False)` that skips the key renaming
`from_pretrained` applies and `save_pretrained` reverts (ViT, ...): the weights then silently stay unloaded, and a
"resumed" run trains on from the fresh initialization (huggingface/transformers#43701;
`compat.checkpoint_keys_need_reload`). This trainer reloads such a checkpoint through `from_pretrained`. Every
hf-methods trainer derives from it, and the recipes train with it (`hf_methods.recipe.train` continues killed stages).
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel, Trainer

from ..compat import checkpoint_keys_need_reload


def saved_keys(folder: str) -> set[str] | None:
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


def check_fsdp_applied(accelerator) -> None:
    """Refuse a run that asked for FSDP (an accelerate config's `distributed_type: FSDP`, or `TrainingArguments(fsdp=)`)
    where accelerate did not apply it. accelerate 1.x enables FSDP on GPUs and other accelerators only: on CPU it falls
    back, without a warning, to DDP (with `use_cpu`) or to independent processes that each train on their share of
    the data and never synchronize."""
    from accelerate.utils import DistributedType

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    applied = accelerator.distributed_type
    if applied != DistributedType.FSDP:
        raise RuntimeError(fsdp_not_applied(applied.value))


def fsdp_not_applied(applied: str) -> str:
    return (
        f"FSDP was requested (ACCELERATE_USE_FSDP=true) but accelerate applied {applied}: it enables FSDP on GPUs "
        "only. On CPU launch with multi_gpu.yaml (DDP over gloo) or zero2.yaml / zero3.yaml with DS_ACCELERATOR=cpu "
        "(hf_methods.recipes.accelerate_configs), or run on GPUs."
    )


class ResumableTrainer(Trainer):
    """A `Trainer` whose `train(resume_from_checkpoint=...)` and `load_best_model_at_end` load the weights of models
    that rename their keys on save (see the module docstring); otherwise transformers' own loading. A run that asked
    for FSDP where accelerate could not apply it is refused (`check_fsdp_applied`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_fsdp_applied(self.accelerator)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """`Trainer.save_model`, refused under ZeRO-3 unless the weights are gathered on save: DeepSpeed would write
        its own sharded pickles (`global_step*/`, `zero_to_fp32.py`) instead of one `model.safetensors`."""
        if self.is_deepspeed_enabled:
            zero = self.accelerator.deepspeed_config.get("zero_optimization", {})
            if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
                raise ValueError(
                    "saving a model under ZeRO-3 needs its weights gathered: set zero3_save_16bit_model: true in the "
                    "accelerate config (stage3_gather_16bit_weights_on_model_save: true in a DeepSpeed config), as "
                    "the shipped zero3.yaml does (hf_methods.recipes.accelerate_configs)."
                )
        return super().save_model(output_dir, _internal_call)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """`Trainer._save`. A state dict gathered by DeepSpeed or FSDP holds tied weights as separate copies, which
        `save_pretrained` (it finds ties by shared storage) would write twice (GPT-2's lm_head.weight beside wte):
        drop them, so the file equals a one-process save."""
        if state_dict is not None:
            model = self.accelerator.unwrap_model(self.model)
            tied = getattr(model, "all_tied_weights_keys", None) or {}
            state_dict = {
                key: value
                for key, value in state_dict.items()
                if not (key in tied and tied[key] in state_dict and torch.equal(value, state_dict[tied[key]]))
            }
        super()._save(output_dir, state_dict)

    def _load_renamed_checkpoint(self, folder: str, model: nn.Module) -> bool:
        model = self.accelerator.unwrap_model(model)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or not isinstance(model, PreTrainedModel):
            return False
        keys = saved_keys(folder)
        if keys is None or not checkpoint_keys_need_reload(keys, model):
            return False
        model.load_state_dict(type(model).from_pretrained(folder, trust_remote_code=False).state_dict())
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._load_renamed_checkpoint(resume_from_checkpoint, model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._load_renamed_checkpoint(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()
