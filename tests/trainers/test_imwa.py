"""IMWA: averaging (identity on copies, BatchNorm statistics averaged, counters maxed), E = 1 is vanilla weight
averaging of independently trained replicas, M = 1 is one model trained in E segments, the EMA is averaged like the
weights, one replica per process under torchrun trains and averages what one process does, and bad settings are one
sentence naming the field."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_methods.trainers.imwa_config import IMWAConfig
from hf_methods.trainers.imwa_trainer import IMWATrainer, average_state_dicts

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("imwa_ddp_script", HERE / "imwa_ddp_script.py")
ddp_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_script)


class BNClassifier(nn.Module):
    def __init__(self, d_in=8, hidden=16, num_labels=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.1))
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, features, labels=None):
        logits = self.classifier(self.body(features))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def rows(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return [{"features": x[i], "labels": y[i]} for i in range(n)]


COMMON = dict(use_cpu=True, report_to="none", per_device_train_batch_size=8, learning_rate=0.05, optim="sgd",
              lr_scheduler_type="linear", disable_tqdm=True, save_strategy="no")  # fmt: skip


def imwa(tmp_path, model, **kw):
    args = IMWAConfig(output_dir=str(tmp_path / "imwa"), **{**COMMON, **kw})
    trainer = IMWATrainer(model, args, train_dataset=rows())
    trainer.train()
    return trainer


def fresh(seed=0):
    torch.manual_seed(seed)
    return BNClassifier()


def test_average_state_dicts():
    a, b = fresh(0).state_dict(), fresh(1).state_dict()
    b["body.1.num_batches_tracked"] = torch.tensor(7)
    avg = average_state_dicts([a, b])
    torch.testing.assert_close(avg["body.0.weight"], (a["body.0.weight"] + b["body.0.weight"]) / 2)
    assert avg["body.1.num_batches_tracked"] == 7  # counters: the max
    a["body.1.running_mean"] += 1.0
    torch.testing.assert_close(average_state_dicts([a, b])["body.1.running_mean"],
                               (a["body.1.running_mean"] + b["body.1.running_mean"]) / 2)  # fmt: skip
    same = average_state_dicts([a, a, a])
    assert all(torch.equal(same[k], a[k]) for k in a)  # copies: exactly the identity
    weighted = average_state_dicts([a, b], weights=[3, 1])
    torch.testing.assert_close(weighted["body.0.weight"], 0.75 * a["body.0.weight"] + 0.25 * b["body.0.weight"])
    with pytest.raises(ValueError, match="does not have the keys of state dict 0"):
        average_state_dicts([a, {k: v for k, v in b.items() if k != "classifier.bias"}])
    with pytest.raises(ValueError, match="at least one state dict"):
        average_state_dicts([])


def _plain_run(tmp_path, model, seed, steps, optimizers=(None, None), total=None):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, seed=seed, data_seed=seed, **COMMON)
    if optimizers[0] is None:  # an optimizer for the model, and a linear schedule over `total` steps
        optimizer = torch.optim.SGD(model.parameters(), lr=COMMON["learning_rate"])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / (total or steps)))
        optimizers = (optimizer, schedule)
    Trainer(model=model, args=args, train_dataset=rows(), optimizers=optimizers).train()
    return optimizers


def test_the_learning_rate_follows_one_schedule_over_the_whole_budget(tmp_path):
    """Episodes continue the replica's schedule; a schedule the Trainer made itself would restart every episode."""
    result = imwa(tmp_path, fresh(), max_steps=6, imwa_replicas=1, imwa_episodes=3, seed=2, logging_steps=1)
    rates = [e["learning_rate"] for e in result.log_history if "learning_rate" in e]
    assert rates == pytest.approx([0.05 * (1 - step / 6) for step in range(6)])


def test_one_episode_is_vanilla_weight_averaging(tmp_path):
    result = imwa(tmp_path, fresh(), max_steps=6, imwa_replicas=2, imwa_episodes=1, seed=5)
    replicas = [fresh(), fresh()]
    for replica, seed in zip(replicas, [5, 6]):  # seed + m; episode 0 shuffles with seed * 1000
        _plain_run(tmp_path / f"r{seed}", replica, seed * 1000, 6)
    expected = average_state_dicts([r.state_dict() for r in replicas])
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    assert result.model.state_dict()["body.1.num_batches_tracked"] == 6


def test_one_replica_is_one_model_trained_in_segments(tmp_path):
    result = imwa(tmp_path, fresh(), max_steps=6, imwa_replicas=1, imwa_episodes=3, seed=2)
    alone = fresh()
    optimizers = (None, None)
    for episode in range(3):  # the same optimizer and one linear schedule over the 6 steps
        optimizers = _plain_run(tmp_path / f"e{episode}", alone, 2000 + episode, 2, optimizers, total=6)
    for key, value in alone.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key  # averaging one replica: a no-op, bit for bit


def test_more_episodes_change_the_result_and_the_ema_is_averaged_too(tmp_path):
    once = imwa(tmp_path / "once", fresh(), max_steps=6, imwa_replicas=2, imwa_episodes=1)
    often = imwa(tmp_path / "often", fresh(), max_steps=6, imwa_replicas=2, imwa_episodes=3, imwa_ema_decay=0.5)
    assert not torch.equal(once.model.classifier.weight, often.model.classifier.weight)
    assert len(often.history) == 3 and all(len(h["train_loss"]) == 2 for h in often.history)
    assert often.ema_model is not None
    assert not torch.equal(often.ema_model.classifier.weight, often.model.classifier.weight)
    assert {e["imwa_replica"] for e in often.log_history} == {0, 1}


def _launch(out: Path, processes: int = 2) -> None:
    """torchrun over gloo on CPU; each rank's output goes to its own log, and a failing rank's stderr is shown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_port", str(port), "--log-dir", str(out / "logs"), "--redirects", "3",
           str(HERE / "imwa_ddp_script.py"), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        ranks = {log.parent.name: log.read_text() for log in sorted((out / "logs").glob("*/attempt_*/*/stderr.log"))}
        failing = {rank: text for rank, text in ranks.items() if "Traceback" in text} or ranks
        shown = "\n".join(f"--- rank {rank} stderr ---\n{text[-4000:]}" for rank, text in failing.items())
        pytest.fail(f"torchrun exited {proc.returncode}:\n{proc.stderr[-2000:]}\n{shown}")


def test_one_replica_per_process_under_torchrun_is_the_one_process_run(tmp_path):
    """2 processes, one replica each, no DDP and no data sharding: the replicas differ before every average, rank 0
    saves the average of the last two, and that average, the EMA and the per-replica logs equal one process's run
    with the same seeds (to 1e-6)."""
    from safetensors.torch import load_file

    _launch(tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    saved = load_file(tmp_path / "final" / "model.safetensors")
    for episode in range(3):  # the replicas trained independently (their own data order and dropout)
        r0, r1 = (load_file(tmp_path / f"replica{r}-episode{episode}.safetensors") for r in (0, 1))
        difference = float((r0["head.weight"] - r1["head.weight"]).abs().max())
        assert difference > 1e-3, f"episode {episode}: the replicas trained alike (max difference {difference})"
        assert not torch.equal(r0["body.1.running_mean"], r1["body.1.running_mean"]), episode
    for key, value in average_state_dicts([r0, r1]).items():  # what rank 0 saved: the all-reduced average
        torch.testing.assert_close(saved[key], value, rtol=0, atol=1e-6, msg=key)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the launched processes
    try:
        alone = IMWATrainer(ddp_script.network(), ddp_script.config(str(tmp_path / "alone")),
                            train_dataset=ddp_script.image_rows())  # fmt: skip
        alone.train()
    finally:
        torch.set_num_threads(threads)
    expected = alone.model.state_dict()
    assert saved.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=1e-6, msg=key)
    assert saved["body.1.num_batches_tracked"] == 6
    ema = load_file(tmp_path / "ema.safetensors")
    for key, value in alone.ema_model.state_dict().items():
        torch.testing.assert_close(ema[key], value, rtol=0, atol=1e-6, msg=key)
    logged, logged_alone = ([e for e in log if "loss" in e] for log in (result["log_history"], alone.log_history))
    tags = [(e["imwa_episode"], e["imwa_replica"], e["step"]) for e in logged_alone]
    assert len(tags) == 3 * 2 * 2 and len(result["history"]) == len(alone.history) == 3  # episodes x replicas x steps
    assert [(e["imwa_episode"], e["imwa_replica"], e["step"]) for e in logged] == tags  # every replica's, in order
    assert [e["loss"] for e in logged] == pytest.approx([e["loss"] for e in logged_alone], abs=1e-6)
    for launched, one_process in zip(result["history"], alone.history):
        assert launched["train_loss"] == pytest.approx(one_process["train_loss"], abs=1e-6)


def test_a_launch_runs_one_process_per_replica(tmp_path, monkeypatch):
    args = IMWAConfig(output_dir=str(tmp_path), max_steps=6, imwa_replicas=3, imwa_episodes=3, **COMMON)
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before any process group is needed
    with pytest.raises(ValueError, match=r"imwa_replicas=3 and 2 processes were launched.*--nproc_per_node 3"):
        IMWATrainer(fresh(), args, train_dataset=rows())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"imwa_replicas": 0}, "imwa_replicas must be an integer >= 1"),
        ({"imwa_episodes": 0}, "imwa_episodes must be an integer >= 1"),
        ({"imwa_episodes": 4}, "imwa_episodes=4 must divide max_steps=6"),
        ({"max_steps": -1}, "IMWA needs max_steps > 0"),
        ({"imwa_replica_seeds": [1, 1]}, "imwa_replica_seeds must hold imwa_replicas=2 distinct seeds"),
        ({"imwa_optimizer_state": "average"}, "`imwa_optimizer_state` must be one of"),
        ({"imwa_ema_decay": 1.0}, r"imwa_ema_decay must be in \(0, 1\)"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        settings = {"max_steps": 6, "imwa_replicas": 2, "imwa_episodes": 3, **overrides}
        IMWAConfig(output_dir=str(tmp_path), **COMMON, **settings)
