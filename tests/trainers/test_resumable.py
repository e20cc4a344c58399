"""`ResumableTrainer` refuses FSDP where accelerate does not apply it (here: CPU), instead of training each process
alone without a word. Its resuming is tested with the recipes (tests/test_recipe.py)."""

import pytest
import torch
from transformers import TrainingArguments

from hf_methods.trainers import ResumableTrainer


def test_fsdp_requested_on_cpu_is_refused_in_one_sentence(tmp_path, monkeypatch):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    model = torch.nn.Linear(2, 2)
    ResumableTrainer(model=model, args=args)  # without FSDP asked for: fine
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    with pytest.raises(RuntimeError, match=r"FSDP was requested .* accelerate applied (NO|MULTI_CPU): .* GPUs only"):
        ResumableTrainer(model=model, args=args)
