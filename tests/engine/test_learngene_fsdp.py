"""FSDP2 over a learngene's auxiliary network on CPU (2 processes, gloo), wrapped as accelerate's FSDP2 wraps a model:
the generated layer is the unit (never the stock layer class, whose instances hold the gene), the gene parameters are
sharded with the root, and the loss and gradients equal the unsharded model's on the whole batch. accelerate itself
applies FSDP on GPUs only (`trainers/resumable.check_fsdp_applied`)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import ViTConfig

from hf_methods.models.tleg import TLEGConfig, TLEGModel

SCRIPT = Path(__file__).parent / "fsdp_script.py"


def test_the_wrap_units_are_the_generated_layers_not_the_gene_layers():
    config = ViTConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16, image_size=8, patch_size=4)
    model = TLEGModel(TLEGConfig(base_model_class="ViTForImageClassification", base_config=config.to_dict(),
                                 aux_num_layers=2))  # fmt: skip
    assert "GeneratedLayer" in model._no_split_modules and "ViTLayer" not in model._no_split_modules
    assert type(model.gene.theta_a).__name__ == "ViTLayer"  # why: FSDP would shard it as a unit that never runs


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_fsdp2_over_generated_layers_equals_the_unsharded_model(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(SCRIPT), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["wrapped"] == ["FSDPGeneratedLayer", "FSDPViTEmbeddings"] and result["gene_is_sharded"]
    assert result["sharded_loss"] == pytest.approx(result["whole_loss"], abs=1e-6)
    assert result["max_grad_difference"] < 1e-6
