"""IMWA: averaging (identity on copies, BatchNorm statistics averaged, counters maxed), E = 1 is vanilla weight
averaging of independently trained replicas, M = 1 is one model trained in E segments, the EMA is averaged like the
weights, and bad settings are one sentence naming the field."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_methods.trainers.imwa_config import IMWAConfig
from hf_methods.trainers.imwa_trainer import IMWATrainer, average_state_dicts


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
    trainer = Trainer(model=model, args=args, train_dataset=rows(), optimizers=optimizers)
    if optimizers[0] is None:
        trainer.create_optimizer_and_scheduler(num_training_steps=total or steps)
    optimizers = (trainer.optimizer, trainer.lr_scheduler)
    trainer.train()
    return optimizers


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
