"""DPC-lite: the evidential loss from the start, then a large-margin selection every epoch after the warm-up; the
selected examples are cleaner than the noisy set, the loss is the mean over the selected ones, and bad settings name the
field."""

import pytest
import torch
from torch import nn

from hf_methods.trainers.dpc_config import DPCConfig
from hf_methods.trainers.dpc_losses import evidential_loss
from hf_methods.trainers.dpc_trainer import DPCLiteTrainer


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
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)
