"""Optimum Shifting: the shift keeps the layer's outputs (and the loss) on its batch, never grows the weight norm, is
idempotent and leaves a fully determined layer alone; the callback shifts inside a Trainer with the same inputs on
every run; Hutchinson's estimate is exact on a diagonal Hessian and close to the exact trace otherwise."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_methods.trainers.optimum_shifting import OptimumShiftingCallback, hutchinson_trace, optimum_shift_


def _layer(d=32, k=5, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, k, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
def test_outputs_and_loss_on_the_batch_are_unchanged_and_the_norm_shrinks(bias):
    layer = _layer(bias=bias)
    x = torch.randn(12, 32)
    labels = torch.randint(0, 5, (12,))
    before_out = layer(x).detach()
    before_loss = F.cross_entropy(before_out, labels)
    norm = torch.cat([layer.weight.flatten(), *([layer.bias] if bias else [])]).norm()
    stats = optimum_shift_(layer, x)
    after_out = layer(x).detach()
    torch.testing.assert_close(after_out, before_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(F.cross_entropy(after_out, labels), before_loss, rtol=0, atol=1e-6)
    new_norm = torch.cat([layer.weight.flatten(), *([layer.bias] if bias else [])]).norm()
    assert new_norm < norm and stats["norm_after"] < stats["norm_before"]
    assert stats["rank"] == 12 and stats["max_output_change"] < 1e-10
    # the minimum-norm solution: what lies outside the row space of the inputs is gone
    random_direction = torch.randn(32)
    outside = random_direction - torch.linalg.pinv(x) @ (x @ random_direction)
    if not bias:
        assert float((layer.weight.detach() @ outside).abs().max()) < 1e-4


def test_shifting_twice_with_the_same_batch_is_a_no_op():
    layer = _layer()
    x = torch.randn(10, 32)
    optimum_shift_(layer, x)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    optimum_shift_(layer, x)
    torch.testing.assert_close(layer.weight, weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.bias, bias, rtol=0, atol=1e-6)


def test_a_fully_determined_layer_is_left_exactly_as_it_was():
    layer = _layer(d=8)
    weight = layer.weight.detach().clone()
    stats = optimum_shift_(layer, torch.randn(40, 8))  # 40 rows >= 9 unknowns per output, full rank
    assert torch.equal(layer.weight, weight) and stats["rank"] == 9 and stats["norm_after"] == stats["norm_before"]


def test_sequence_inputs_and_bad_inputs():
    layer = _layer()
    x = torch.randn(2, 3, 32)  # 6 rows
    before = layer(x).detach()
    assert optimum_shift_(layer, x)["rows"] == 6
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="inputs have 31 features but the layer takes 32"):
        optimum_shift_(layer, torch.randn(4, 31))
    with pytest.raises(TypeError, match="takes an nn.Linear"):
        optimum_shift_(nn.Conv2d(1, 1, 3), torch.randn(4, 1))


class TinyClassifier(nn.Module):
    def __init__(self, d_in=16, hidden=48, num_labels=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, features, labels=None):
        logits = self.classifier(self.body(features))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits} if loss is not None else {"logits": logits}


def _rows(n=60, d_in=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return [{"features": x[i], "labels": y[i]} for i in range(n)]


def _train(tmp_path, callback, seed=0):
    torch.manual_seed(seed)
    model = TinyClassifier()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", num_train_epochs=2,
                             per_device_train_batch_size=20, learning_rate=0.05, optim="sgd", save_strategy="no",
                             disable_tqdm=True, seed=seed)  # fmt: skip
    Trainer(model=model, args=args, train_dataset=_rows(), callbacks=[callback]).train()
    return model


def test_the_callback_shifts_the_classifier_every_epoch_with_reproducible_inputs(tmp_path):
    callback = OptimumShiftingCallback(num_samples=20)
    model = _train(tmp_path / "a", callback)
    assert [r["step"] for r in callback.history] == [3, 6]  # 60 rows / 20 per step: epochs end at steps 3 and 6
    for record in callback.history:
        stats = record["classifier"]
        assert stats["rows"] == 20 and stats["norm_after"] < stats["norm_before"]
        assert stats["max_output_change"] < 1e-10
    again = OptimumShiftingCallback(num_samples=20)
    model_again = _train(tmp_path / "b", again)
    for a, b in zip(model.state_dict().values(), model_again.state_dict().values()):
        assert torch.equal(a, b)  # the same draw of examples: every process of a distributed run shifts alike


def test_the_callback_names_a_wrong_layer_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"layer_names: the model has no module 'head'.*'classifier'"):
        _train(tmp_path, OptimumShiftingCallback(layer_names=["head"]))
    with pytest.raises(ValueError, match=r"layer_names: 'body' is a Sequential, not an nn.Linear"):
        _train(tmp_path, OptimumShiftingCallback(layer_names=["body"]))
    with pytest.raises(ValueError, match="num_samples must be a positive integer or None"):
        OptimumShiftingCallback(num_samples=0)
    with pytest.raises(ValueError, match="set every_n_epochs or every_n_steps"):
        OptimumShiftingCallback(every_n_epochs=None)
    with pytest.raises(ValueError, match="layer_names must be a non-empty list"):
        OptimumShiftingCallback(layer_names="classifier")


def test_hutchinson_is_exact_on_a_diagonal_hessian_and_close_on_a_full_one():
    w = torch.randn(7, requires_grad=True)
    a = torch.rand(7) + 0.5
    trace = hutchinson_trace(lambda: (a * w**2).sum(), [w], num_probes=3)
    assert trace == pytest.approx(float(2 * a.sum()), rel=1e-6)
    torch.manual_seed(0)
    model = TinyClassifier(d_in=4, hidden=3)
    rows = _rows(n=30, d_in=4)
    x = torch.stack([r["features"] for r in rows])
    y = torch.stack([r["labels"] for r in rows])
    params = list(model.body.parameters())

    def loss_of(flat):
        weight, bias = flat[:12].reshape(3, 4), flat[12:]
        return F.cross_entropy(model.classifier(F.relu(x @ weight.T + bias)), y)

    flat = torch.cat([p.detach().flatten() for p in params])
    exact = float(torch.autograd.functional.hessian(loss_of, flat).diagonal().sum())
    estimate = hutchinson_trace(lambda: model(x, y)["loss"], params, num_probes=4000)
    assert estimate == pytest.approx(exact, rel=0.1)
