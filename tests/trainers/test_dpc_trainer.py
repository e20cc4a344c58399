"""DPC's trainers. DPC-lite: the evidential loss from the start, then a large-margin selection every epoch after the
warm-up; the selected examples are cleaner than the noisy set, the loss is the mean over the selected ones, the
Trainer keeps the sample index. DPC: co-divide (each network trains on the other's split), the ramp of lambda_u,
a two-network run whose selection is cleaner than the noisy labels, save/load of the result; bad settings name the
field."""

import pytest
import torch
from torch import nn

from hf_methods.models.convnets import VGGConfig
from hf_methods.models.dpc import DPCForImageClassification, DPCModelConfig
from hf_methods.trainers.dpc_config import DPCConfig
from hf_methods.trainers.dpc_losses import evidential_loss
from hf_methods.trainers.dpc_trainer import DPCLiteTrainer, DPCTrainer, sharpen


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, features, labels=None):
        return {"logits": self.net(features)}


def noisy_rows(n=400, noise=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 4, (n,), generator=g)
    x = (torch.randn(4, 8, generator=g) * 3)[truth] + torch.randn(n, 8, generator=g)
    flip = torch.rand(n, generator=g) < noise
    labels = torch.where(flip, torch.randint(0, 4, (n,), generator=g), truth)
    return [{"features": x[i], "labels": labels[i]} for i in range(n)], (labels == truth)


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=32,
                num_train_epochs=4, learning_rate=0.05, optim="sgd", save_strategy="no", disable_tqdm=True,
                warmup_epochs=2, seed=0)  # fmt: skip
    return DPCConfig(**{**base, **kw})


def test_after_the_warm_up_each_epoch_trains_on_a_cleaner_selection(tmp_path):
    torch.manual_seed(0)
    rows, clean = noisy_rows()
    trainer = DPCLiteTrainer(model=MLP(), args=config(tmp_path), train_dataset=rows)
    trainer.train()
    assert [h["epoch"] for h in trainer.selection_history] == [2, 3]  # epochs 0 and 1 are the warm-up
    selected = trainer.clean_posterior > 0.5
    assert 0.4 < float(selected.float().mean()) < 0.9
    assert float(clean[selected].float().mean()) > float(clean.float().mean()) + 0.2  # much cleaner than all


def test_the_loss_is_the_mean_over_the_selected_examples(tmp_path):
    torch.manual_seed(0)
    rows, _ = noisy_rows(n=8)
    trainer = DPCLiteTrainer(model=MLP(), args=config(tmp_path), train_dataset=rows)
    trainer.clean_posterior = torch.tensor([0.9, 0.1, 0.9, 0.1, 0.6, 0.4, 1.0, 0.0])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    loss = trainer.compute_loss(trainer.model, batch)
    nll, kl = evidential_loss(trainer.model(batch["features"])["logits"], batch["labels"])
    keep = torch.tensor([0, 2, 4, 6])
    torch.testing.assert_close(loss, (nll + kl)[keep].mean())
    trainer.clean_posterior = None  # the warm-up: every example
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch), (nll + kl).mean())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"warmup_epochs": -1}, "warmup_epochs must be an integer >= 0"),
        ({"p_threshold": 1.5}, r"p_threshold must be in \[0, 1\]"),
        ({"gamma": 0.0}, "gamma must be > 0"),
        ({"kl_weight": -1.0}, "kl_weight must be >= 0"),
        ({"loss_type": "mse"}, "loss_type must be one of"),
        ({"selection_score": "entropy"}, "selection_score must be one of"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"mixmatch_alpha": -1.0}, "mixmatch_alpha must be > 0"),
        ({"lambda_u": -1.0}, "lambda_u must be >= 0"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_the_trainer_keeps_the_sample_index_so_the_selection_is_used(tmp_path):
    """A Trainer drops every column the model's forward does not take; without the index the selection would be
    silently ignored (a bug this test caught)."""
    seen = []

    class Spy(DPCLiteTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            seen.append(inputs.get("sample_index"))
            return super().compute_loss(model, inputs, *args, **kwargs)

    rows, _ = noisy_rows(n=64)
    Spy(model=MLP(), args=config(tmp_path, num_train_epochs=1, warmup_epochs=0), train_dataset=rows).train()
    assert seen and all(index is not None for index in seen)


def test_small_loss_selection_scores_minus_the_cross_entropy(tmp_path):
    rows, _ = noisy_rows(n=16)
    args = config(tmp_path, loss_type="cross_entropy", selection_score="small_loss")
    trainer = DPCLiteTrainer(model=MLP(), args=args, train_dataset=rows)
    features = torch.stack([r["features"] for r in rows])
    labels = torch.stack([r["labels"] for r in rows])
    expected = -torch.nn.functional.cross_entropy(
        MLP.forward(trainer.model, features)["logits"], labels, reduction="none"
    )
    torch.testing.assert_close(trainer.clean_scores(), expected)


VGG = VGGConfig(num_channels=1, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)


def dpc_model(num_networks=2):
    labels = {i: str(i) for i in range(4)}
    config = DPCModelConfig(
        backbone_config=VGG.to_dict(), id2label=labels, aux_hidden_size=16, num_networks=num_networks
    )
    return DPCForImageClassification(config)


def noisy_images(n=256, noise=0.4, seed=0):
    """4 classes of 8x8 images (a bright quadrant each, plus noise), `noise` of the labels replaced at random."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    for i, c in enumerate(truth.tolist()):
        x[i, 0, 4 * (c // 2) : 4 * (c // 2) + 4, 4 * (c % 2) : 4 * (c % 2) + 4] += 2.0
    flip = torch.rand(n, generator=g) < noise
    labels = torch.where(flip, torch.randint(0, 4, (n,), generator=g), truth)
    return [{"pixel_values": x[i], "labels": labels[i]} for i in range(n)], labels == truth


def test_each_network_trains_on_the_other_networks_split(tmp_path):
    """Co-divide: network 0 reads network 1's posterior. With network 1 calling every row clean and network 0 none,
    network 0 gets the supervised term on every row and network 1 nothing (lambda_u = 0, no prior penalty)."""
    rows, _ = noisy_images(n=16)
    args = config(tmp_path, lambda_u=0.0, prior_penalty=False)
    trainer = DPCTrainer(model=dpc_model(), args=args, train_dataset=rows)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(16)])
    for clean_network in (1, 0):
        trainer.model.zero_grad()
        posterior = torch.zeros(2, 16)
        posterior[clean_network] = 1.0
        trainer.clean_posterior = posterior
        loss = trainer.compute_loss(trainer.model.train(), batch)
        loss.backward()
        trained, idle = trainer.model.networks[1 - clean_network], trainer.model.networks[clean_network]
        assert loss > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in idle.parameters())


def test_lambda_u_ramps_up_after_the_warm_up(tmp_path):
    rows, _ = noisy_images(n=8)
    trainer = DPCTrainer(model=dpc_model(), args=config(tmp_path, lambda_u=25.0, rampup_epochs=16), train_dataset=rows)
    for epoch, expected in ((0.0, 0.0), (2.0, 0.0), (10.0, 12.5), (18.0, 25.0), (40.0, 25.0)):
        trainer.state.epoch = epoch
        assert trainer.lambda_u() == pytest.approx(expected)
    torch.testing.assert_close(sharpen(torch.tensor([0.25, 0.75]), 0.5), torch.tensor([0.1, 0.9]))


def test_dpc_selects_a_cleaner_set_and_its_ensemble_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    rows, clean = noisy_images()
    args = config(tmp_path, num_train_epochs=6, warmup_epochs=4, learning_rate=0.01, optim="adamw_torch")
    trainer = DPCTrainer(model=dpc_model(), args=args, train_dataset=rows)
    trainer.train()
    assert [h["epoch"] for h in trainer.selection_history] == [4, 5]
    assert trainer.clean_posterior.shape == (2, len(rows))
    for network in range(2):
        selected = trainer.clean_posterior[network] > 0.5
        assert float(clean[selected].float().mean()) > float(clean.float().mean()) + 0.2
    trainer.save_model(str(tmp_path / "dpc"))
    loaded = DPCForImageClassification.from_pretrained(tmp_path / "dpc", trust_remote_code=False).eval()
    x = torch.stack([r["pixel_values"] for r in rows[:8]])
    torch.testing.assert_close(loaded(pixel_values=x).logits, trainer.model.eval()(pixel_values=x).logits)


def test_dpc_needs_a_two_network_model_and_the_evidential_loss(tmp_path):
    rows, _ = noisy_images(n=8)
    with pytest.raises(ValueError, match="num_networks=2"):
        DPCTrainer(model=dpc_model(num_networks=1), args=config(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match="num_networks=2"):
        DPCTrainer(model=MLP(), args=config(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match="loss_type='evidential'"):
        DPCTrainer(model=dpc_model(), args=config(tmp_path, loss_type="cross_entropy"), train_dataset=rows)
