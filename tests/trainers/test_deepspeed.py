"""DeepSpeed ZeRO-3 (and ZeRO-2 for three of them) on CPU (DS_ACCELERATOR=cpu, 2 processes over gloo, the shipped
accelerate configs): every trainer (distillation, a TLEG learngene's auxiliary network, Learngene Pool with its
projectors, L2D with its projection, RDD, CPT with two frozen models) logs the losses of a one-process run (to 1e-5)
and saves the same student (to 1e-6: one consolidated model.safetensors, no teacher tensor); the frozen models run in
their own inference engines. A run resumed from a ZeRO checkpoint ends where the uninterrupted run ends."""

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
from transformers import GPT2LMHeadModel, UperNetForSemanticSegmentation, ViTForImageClassification  # noqa: E402

from hf_methods.models.label_query import LabelQueryForMultiLabelClassification  # noqa: E402
from hf_methods.models.tleg import TLEGModel  # noqa: E402
from hf_methods.recipes.accelerate_configs import config_file  # noqa: E402

HERE = Path(__file__).parent
SCRIPT = HERE / "deepspeed_script.py"
KINDS = ["distillation", "tleg", "pool", "l2d", "rdd", "cpt"]  # what each runs: deepspeed_script.py
STUDENT_CLASS = {  # CPT saves its proxy, a GPT-2; TLEG its learngene (theta_A, theta_B and the non-layer weights)
    "distillation": GPT2LMHeadModel,
    "cpt": GPT2LMHeadModel,
    "tleg": TLEGModel,
    "pool": ViTForImageClassification,
    "l2d": LabelQueryForMultiLabelClassification,
    "rdd": UperNetForSemanticSegmentation,
}
SIDE_MODULE_FILES = {"pool": ["feature_projectors.safetensors"], "l2d": ["l2d_embedding_projection.safetensors"]}
ATOL = 1e-6


def _env():
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, config: str | None, kind: str, phase: str = "whole", ds_json: Path | None = None) -> dict:
    launch = [] if config is None else [
        "-m", "accelerate.commands.launch", "--config_file", str(config_file(config)), "--num_processes", "2",
        "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    if ds_json is not None:  # a DeepSpeed JSON through the TrainingArguments, launched by torchrun
        launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    proc = subprocess.run(
        [sys.executable, *launch, str(SCRIPT), str(out), kind, phase, *([str(ds_json)] if ds_json else [])],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


ALONE = {}  # one-process run of each trainer, shared by its two stages


def _alone(kind: str, tmp_path_factory):
    if kind not in ALONE:
        out = tmp_path_factory.mktemp(f"alone-{kind}")
        ALONE[kind] = out, _run(out, None, kind)
    return ALONE[kind]


def _saved_student(kind: str, folder: Path) -> dict:
    return STUDENT_CLASS[kind].from_pretrained(folder).state_dict()


def _assert_same_weights(saved: dict, expected: dict, skip=()) -> None:
    assert saved.keys() == expected.keys()  # the student's tensors only: no teacher tensor
    for key, value in expected.items():
        if not key.endswith(skip):
            torch.testing.assert_close(saved[key], value, rtol=0, atol=ATOL, msg=key)


# ZeRO-3 (parameters partitioned too) for every trainer; ZeRO-2 (optimizer state and gradients only) for the plain
# student, the student with a side module and the BatchNorm one: the others add nothing ZeRO-2 treats differently
ZERO_RUNS = [(kind, 3) for kind in KINDS] + [("distillation", 2), ("l2d", 2), ("rdd", 2)]


@pytest.mark.parametrize(("kind", "stage"), ZERO_RUNS)
def test_zero_trains_and_saves_what_one_process_does(tmp_path, tmp_path_factory, kind, stage):
    single_dir, single = _alone(kind, tmp_path_factory)
    result = _run(tmp_path, f"zero{stage}", kind)
    assert result["deepspeed"] and result["zero_stage"] == stage and result["world_size"] == 2
    assert result["teacher_engine"] == "DeepSpeedEngine"  # its own inference engine, not the student's
    torch.testing.assert_close(result["losses"], single["losses"], rtol=1e-6, atol=1e-5)
    assert "model.safetensors" in result["final_files"]  # consolidated, never DeepSpeed's own pickles
    assert not any(name.startswith("global_step") or name.endswith(".pt") for name in result["final_files"])
    saved_file = load_file(tmp_path / "final" / "model.safetensors")  # the same tensors as a one-process save: no
    assert saved_file.keys() == load_file(single_dir / "final" / "model.safetensors").keys()  # tied copy either
    # RDD: BatchNorm running statistics are per process (rank 0 saves those of its half), so only the parameters match
    skip = ("running_mean", "running_var", "num_batches_tracked") if kind == "rdd" else ()
    _assert_same_weights(_saved_student(kind, tmp_path / "final"), _saved_student(kind, single_dir / "final"), skip)
    for side in SIDE_MODULE_FILES.get(kind, ()):  # trained beside the student, saved beside it, gathered too
        side_module = load_file(tmp_path / "final" / side)
        for key, value in load_file(single_dir / "final" / side).items():
            torch.testing.assert_close(side_module[key], value, rtol=0, atol=ATOL, msg=key)


@pytest.mark.parametrize(("kind", "stage"), [("distillation", 2), ("tleg", 3)])
def test_resuming_from_a_zero_checkpoint_equals_the_uninterrupted_run(tmp_path, tmp_path_factory, kind, stage):
    """A run killed after its step-2 checkpoint (DeepSpeed's partitioned optimizer state in global_step2) and resumed
    ends where one process's uninterrupted run ends; the checkpoint holds the student only."""
    single_dir, single = _alone(kind, tmp_path_factory)
    stopped = _run(tmp_path, f"zero{stage}", kind, "stop")
    assert stopped["losses"] == pytest.approx(single["losses"][:2], abs=1e-5)
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "global_step2").is_dir()
    student_keys = _saved_student(kind, single_dir / "final").keys()  # with tied names, which a DeepSpeed save keeps
    assert set(load_file(checkpoint / "model.safetensors")) <= set(student_keys)  # no teacher tensor
    resumed = _run(tmp_path, f"zero{stage}", kind, "resume")
    torch.testing.assert_close(resumed["losses"], single["losses"], rtol=1e-6, atol=1e-5)
    _assert_same_weights(_saved_student(kind, tmp_path / "final"), _saved_student(kind, single_dir / "final"))


def test_a_deepspeed_json_through_the_training_arguments(tmp_path, tmp_path_factory):
    """`TrainingArguments(deepspeed="ds_config.json")` (a script's `--deepspeed` flag) under torchrun, without an
    accelerate config: ZeRO-2 with the Trainer's "auto" values trains and saves as one process does."""
    single_dir, single = _alone("distillation", tmp_path_factory)
    ds_json = tmp_path / "ds_config.json"
    ds_json.write_text(json.dumps({
        "zero_optimization": {"stage": 2},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }))  # fmt: skip
    result = _run(tmp_path / "run", None, "distillation", ds_json=ds_json)
    assert result["deepspeed"] and result["zero_stage"] == 2 and result["world_size"] == 2
    torch.testing.assert_close(result["losses"], single["losses"], rtol=1e-6, atol=1e-5)
    _assert_same_weights(
        _saved_student("distillation", tmp_path / "run" / "final"), _saved_student("distillation", single_dir / "final")
    )
