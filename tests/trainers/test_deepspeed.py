"""DeepSpeed ZeRO-2 and ZeRO-3 on CPU (DS_ACCELERATOR=cpu, 2 processes over gloo, the shipped accelerate configs):
`DistillationTrainer` and `LearngenePoolDistillationTrainer` (its feature projectors train beside the student) log
the losses of a one-process run and save the same student (one consolidated model.safetensors, no teacher tensor);
the teacher runs in its own inference engine."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed")

from safetensors.torch import load_file  # noqa: E402
from transformers import GPT2LMHeadModel, ViTForImageClassification  # noqa: E402

from hf_methods.recipes.accelerate_configs import config_file  # noqa: E402

HERE = Path(__file__).parent
SCRIPT = HERE / "deepspeed_script.py"


def _env():
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, config: str | None, kind: str) -> dict:
    launch = [] if config is None else [
        "-m", "accelerate.commands.launch", "--config_file", str(config_file(config)), "--num_processes", "2",
        "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, *launch, str(SCRIPT), str(out), kind], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


ALONE = {}  # one-process run of each trainer, shared by its two stages


def _alone(kind: str, tmp_path_factory):
    if kind not in ALONE:
        out = tmp_path_factory.mktemp(f"alone-{kind}")
        ALONE[kind] = out, _run(out, None, kind)
    return ALONE[kind]


@pytest.mark.parametrize("kind", ["distillation", "pool", "cpt"])
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_trains_and_saves_what_one_process_does(tmp_path, tmp_path_factory, kind, stage):
    single_dir, single = _alone(kind, tmp_path_factory)
    result = _run(tmp_path, f"zero{stage}", kind)
    assert result["deepspeed"] and result["zero_stage"] == stage and result["world_size"] == 2
    assert result["teacher_engine"] == "DeepSpeedEngine"  # its own inference engine, not the student's
    torch.testing.assert_close(result["losses"], single["losses"], rtol=0, atol=1e-5)
    assert "model.safetensors" in result["final_files"]  # consolidated, never DeepSpeed's own pickles
    assert not any(name.startswith("global_step") or name.endswith(".pt") for name in result["final_files"])
    cls = ViTForImageClassification if kind == "pool" else GPT2LMHeadModel  # CPT saves its proxy, a GPT-2
    expected = cls.from_pretrained(single_dir / "final").state_dict()
    saved = cls.from_pretrained(tmp_path / "final").state_dict()
    assert saved.keys() == expected.keys()  # the student's tensors only: no teacher tensor
    for key, value in expected.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=1e-6)
    if kind == "pool":  # the projectors trained beside the student are saved beside it, gathered too
        projectors = load_file(tmp_path / "final" / "feature_projectors.safetensors")
        for key, value in load_file(single_dir / "final" / "feature_projectors.safetensors").items():
            torch.testing.assert_close(projectors[key], value, rtol=0, atol=1e-6)
