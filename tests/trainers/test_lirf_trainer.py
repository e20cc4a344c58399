"""LIRFTrainer: the loss is the brief's L_T + L_R term by term (and its gradients reach what they should), training
changes only the two lower parts (brief test 2), the forgetting effect on synthetic blobs over 3 seeds (brief test 3),
and no preserved-class sample reaches training (brief test 4)."""

import functools
import statistics

import datasets
import pytest
import torch
import transformers
from torch import nn
from torch.nn import functional as F

from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.lirf import LIRFModel, lirf_compute_metrics, lirf_metrics
from hf_methods.trainers.lirf_config import LIRFTrainingConfig
from hf_methods.trainers.lirf_trainer import LIRFTrainer, check_deposit_labels, deposit_subset, lirf_loss


def test_the_loss_is_the_briefs_formula_and_its_gradients_go_where_they_should():
    g = torch.Generator().manual_seed(0)
    z0, zt, zr = (torch.randn(6, 5, generator=g) for _ in range(3))
    zt.requires_grad_(True)
    zr.requires_grad_(True)
    labels, random_labels = torch.tensor([1, 3, 3, 1, 1, 3]), torch.tensor([0, 4, 2, 2, 1, 3])
    a, t = 0.7, 2.0
    loss, parts = lirf_loss(z0, zt, zr, labels, [3, 1], alpha=a, temperature=t, random_labels=random_labels)
    kl = nn.KLDivLoss(reduction="batchmean")
    pre, dep = [0, 2, 4], [1, 3]
    z_comb = zr.clone()
    z_comb[:, pre] = zt[:, pre]
    l_t = kl(F.log_softmax(zt[:, pre] / t, 1), F.softmax(z0[:, pre] / t, 1)) * a * t * t + F.cross_entropy(
        zt, random_labels
    ) * (1 - a)
    l_r = kl(F.log_softmax(z_comb[:, dep] / t, 1), F.softmax(z0[:, dep] / t, 1)) * a * t * t + F.cross_entropy(
        z_comb, labels
    ) * (1 - a)
    torch.testing.assert_close(loss, l_t + l_r)
    loss.backward(retain_graph=True)
    assert torch.all(zr.grad[:, pre] == 0) and torch.any(zr.grad[:, dep] != 0)  # z_comb's preserved columns are z_T's
    zt.grad = None
    parts["deposit_kd"].backward()
    assert torch.all(zt.grad == 0)  # the deposit KD reaches only z_R
    same = torch.randn(4, 5, generator=g)
    _, parts = lirf_loss(same, same, same, torch.tensor([1, 1, 3, 3]), [1, 3])
    assert parts["target_kd"].abs() < 1e-6 and parts["deposit_kd"].abs() < 1e-6  # at init only the CE terms act


def blobs(seed: int, per_class: int, classes: int = 6):
    """Gaussian blobs in 16 dimensions as 1x4x4 images; the class means are fixed, the samples follow `seed`."""
    means = 1.2 * torch.randn(classes, 16, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = (means[y] + torch.randn(len(y), 16, generator=g)).view(-1, 1, 4, 4)
    return x, y


@functools.cache
def original_network(seed: int):
    """A tiny VGG trained on all 6 blob classes (a plain loop: faster than a Trainer for 150 steps; cached: the tests
    only copy it)."""
    torch.manual_seed(seed)
    config = VGGConfig(num_channels=1, hidden_sizes=[8, 16], depths=[1, 1], num_labels=6)
    model = VGGForImageClassification(config)
    x, y = blobs(seed, 60)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _step in range(150):
        batch = torch.randint(0, len(y), (64,))
        loss = model(pixel_values=x[batch], labels=y[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=32, num_train_epochs=12, report_to="none",
                  save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True)  # fmt: skip
    return LIRFTrainingConfig(**{**values, **overrides})


def rows(x, y):
    return [{"pixel_values": a, "labels": b} for a, b in zip(x, y)]


def test_deposit_forgets_keeps_and_recovers_on_blobs_and_touches_only_the_lower_parts(tmp_path):
    """Deposit classes {0, 1} of 6: the target's accuracy on them falls to about chance, the preserved classes lose
    under 5 points, the recover network gets the deposit classes back (means over 3 seeds)."""
    found = []
    x_test, y_test = blobs(999, 40)
    for seed in (0, 1, 2):
        original = original_network(seed)
        lirf = LIRFModel.from_original(original, "stages.1", [0, 1])  # upper part: pooling and the classifier
        frozen = {k: v.clone() for k, v in lirf.state_dict().items() if k.startswith(("upper.", "lower_original."))}
        lower = {k: v.clone() for k, v in lirf.state_dict().items() if k.startswith(("lower_target.", "lower_dep"))}
        x, y = blobs(seed, 60)
        train = deposit_subset(rows(x, y), [0, 1])
        settings = args(tmp_path / str(seed), seed=seed, learning_rate=0.05, num_train_epochs=15)
        LIRFTrainer(model=lirf, args=settings, train_dataset=train).train()
        for key, value in lirf.state_dict().items():
            if key in frozen:  # brief test 2: weights and BatchNorm statistics of the frozen parts
                assert torch.equal(value, frozen[key]), key
        assert all(not torch.equal(lirf.state_dict()[k], v) for k, v in lower.items() if k.endswith("conv.weight"))
        lirf.eval()
        with torch.no_grad():
            out = lirf(pixel_values=x_test)
        found.append(lirf_metrics(y_test, [0, 1], original=out.original_logits, target=out.logits,
                                  recover=out.recover_logits))  # fmt: skip

    def mean(key):
        return statistics.fmean(m[key] for m in found)

    assert mean("original_dep_acc") > 0.9 and mean("original_pre_acc") > 0.9
    assert mean("dep_acc") < 0.3  # forgotten: chance is 1/6
    assert mean("original_pre_acc") - mean("pre_acc") < 0.05  # kept
    assert mean("recover_dep_acc") > mean("original_dep_acc") - 0.05  # recovered
    assert mean("avg_acc") > mean("original_avg_acc") - 0.05


def test_no_preserved_class_sample_reaches_training(tmp_path):
    lirf = LIRFModel.from_original(original_network(0).eval(), "stages.0", [0, 1])
    x, y = blobs(0, 4)
    with pytest.raises(ValueError, match=r"train_dataset holds a sample of class 2 \(position 8\).*deposit_subset"):
        LIRFTrainer(model=lirf, args=args(tmp_path), train_dataset=rows(x, y))
    table = datasets.Dataset.from_dict({"pixel_values": x.numpy(), "labels": y.tolist()}).with_format("torch")
    with pytest.raises(ValueError, match="train_dataset holds a sample of class 2"):
        LIRFTrainer(model=lirf, args=args(tmp_path), train_dataset=table)
    subset = deposit_subset(table, [0, 1])
    assert sorted(set(subset.with_format(None)["labels"])) == [0, 1] and len(subset) == 8

    class Stream(torch.utils.data.IterableDataset):  # labels unknown up front: every batch is checked
        def __iter__(self):
            yield from rows(x[[0, 1, 15]], y[[0, 1, 15]])

    trainer = LIRFTrainer(model=lirf, args=args(tmp_path, max_steps=1, per_device_train_batch_size=3),
                          train_dataset=Stream())  # fmt: skip
    with pytest.raises(ValueError, match=r"a training batch holds a sample of class 3 \(position 2\)"):
        trainer.train()
    check_deposit_labels(torch.tensor([1, 0, 1]), [0, 1])
    with pytest.raises(TypeError, match="LIRFTrainer trains an LIRFModel"):
        LIRFTrainer(model=original_network(0), args=args(tmp_path))
    with pytest.raises(TypeError, match="takes an LIRFTrainingConfig"):
        LIRFTrainer(model=lirf, args=transformers.TrainingArguments(str(tmp_path), use_cpu=True))
    with pytest.raises(ValueError, match="alpha"):
        args(tmp_path, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        args(tmp_path, temperature=0)


def test_evaluation_takes_every_class_and_reports_lirfs_metrics(tmp_path):
    lirf = LIRFModel.from_original(original_network(0), "stages.0", [0, 1])
    x, y = blobs(5, 10)
    trainer = LIRFTrainer(model=lirf, args=args(tmp_path), compute_metrics=lirf_compute_metrics([0, 1]))
    metrics = trainer.evaluate(rows(x, y))
    assert trainer.evaluate(rows(x, y))["eval_loss"] == metrics["eval_loss"]  # fixed random labels in evaluation
    assert metrics["eval_forgetting"] == 0.0 and metrics["eval_h_mean"] == 0.0  # nothing deposited yet
    assert metrics["eval_avg_acc"] == metrics["eval_original_avg_acc"] and "eval_loss" in metrics
