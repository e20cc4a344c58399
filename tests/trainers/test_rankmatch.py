"""RankMatch: the pseudo distribution is the mean over K weak views, the loss is KL + lambda_u KL + lambda (PRR gap on
labeled, PRR order on pseudo-labels), lambda = 0 with K = 1 is plain KL consistency, a run trains a label-distribution
model end to end, and bad settings or targets are named."""

import pytest
import torch
from torch import nn

from hf_methods.models.convnets import VGGConfig
from hf_methods.models.label_distribution import LabelDistributionConfig, LabelDistributionModel
from hf_methods.trainers.layermatch_trainer import SemiSupervisedDataset, WeakStrongCollator
from hf_methods.trainers.ldl_losses import label_distribution_kl, pairwise_ranking_loss
from hf_methods.trainers.rankmatch_config import RankMatchConfig
from hf_methods.trainers.rankmatch_trainer import RankMatchTrainer


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(16, 3)

    def forward(self, pixel_values):
        return {"logits": self.classifier(pixel_values.flatten(1))}


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=4,
                max_steps=3, learning_rate=0.01, save_strategy="no", disable_tqdm=True)  # fmt: skip
    return RankMatchConfig(**{**base, **kw})


def batch(k=2, n=4, u=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.softmax(torch.randn(n, 3, generator=g), -1)
    weak = torch.randn(k, u, 1, 4, 4, generator=g) if k > 1 else torch.randn(u, 1, 4, 4, generator=g)
    return {"pixel_values": torch.randn(n, 1, 4, 4, generator=g), "label_distribution": target,
            "unlabeled_weak": weak, "unlabeled_strong": torch.randn(u, 1, 4, 4, generator=g)}  # fmt: skip


def test_the_loss_is_kl_plus_consistency_plus_ranking(tmp_path):
    trainer = RankMatchTrainer(
        model=Linear(), args=config(tmp_path, lambda_u=0.7, ranking_weight=0.3), train_dataset=[]
    )
    b = batch(k=3)
    loss = trainer.compute_loss(trainer.model, b)
    model = trainer.model
    q = torch.stack([torch.softmax(model(v)["logits"], -1) for v in b["unlabeled_weak"]]).mean(0)  # mean over K views
    torch.testing.assert_close(trainer.pseudo_distribution(model, b["unlabeled_weak"]), q.detach())
    logits_l, logits_s = model(b["pixel_values"])["logits"], model(b["unlabeled_strong"])["logits"]
    expected = (
        label_distribution_kl(logits_l, b["label_distribution"]).mean()
        + 0.7 * label_distribution_kl(logits_s, q).mean()
        + 0.3
        * (
            pairwise_ranking_loss(torch.softmax(logits_l, -1), b["label_distribution"], "gap").mean()
            + pairwise_ranking_loss(torch.softmax(logits_s, -1), q, "zero").mean()
        )  # fmt: skip
    )
    torch.testing.assert_close(loss, expected)


def test_no_ranking_and_one_view_is_plain_kl_consistency(tmp_path):
    trainer = RankMatchTrainer(model=Linear(), args=config(tmp_path, num_weak_views=1, ranking_weight=0.0),
                               train_dataset=[])  # fmt: skip
    b = batch(k=1)
    model = trainer.model
    q = torch.softmax(model(b["unlabeled_weak"])["logits"], -1).detach()
    expected = label_distribution_kl(model(b["pixel_values"])["logits"], b["label_distribution"]).mean()
    expected = expected + label_distribution_kl(model(b["unlabeled_strong"])["logits"], q).mean()
    torch.testing.assert_close(trainer.compute_loss(model, b), expected)


def test_trains_a_label_distribution_model_end_to_end(tmp_path):
    vgg = VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=3)
    model = LabelDistributionModel(LabelDistributionConfig(backbone_config=vgg.to_dict(), num_labels=3))
    g = torch.Generator().manual_seed(0)
    labeled = [{"pixel_values": torch.randn(1, 8, 8, generator=g),
                "label_distribution": torch.softmax(torch.randn(3, generator=g), -1)} for _ in range(8)]  # fmt: skip
    unlabeled = [torch.randn(1, 8, 8, generator=g) for _ in range(32)]
    trainer = RankMatchTrainer(model=model, args=config(tmp_path, logging_steps=1),
                               train_dataset=SemiSupervisedDataset(labeled, unlabeled, unlabeled_ratio=4))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    logged = [e for e in trainer.state.log_history if "ranking_loss" in e]
    assert logged and all(e["ranking_loss"] >= 0 for e in logged)
    assert WeakStrongCollator(num_weak_views=2)([trainer.train_dataset[0]])["unlabeled_weak"].shape == (2, 4, 1, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_weak_views": 0}, "num_weak_views must be an integer >= 1"),
        ({"ranking_weight": -0.1}, "ranking_weight must be >= 0"),
        ({"lambda_u": -1.0}, "lambda_u must be >= 0"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **overrides)


def test_a_target_that_is_not_a_distribution_names_the_row(tmp_path):
    trainer = RankMatchTrainer(model=Linear(), args=config(tmp_path), train_dataset=[])
    b = batch()
    b["label_distribution"][2] = torch.tensor([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="label_distribution row 2 sums to 1.5"):
        trainer.compute_loss(trainer.model, b)


def test_averaging_more_weak_views_steadies_the_pseudo_distribution(tmp_path):
    trainer = RankMatchTrainer(model=Linear(), args=config(tmp_path), train_dataset=[])
    g = torch.Generator().manual_seed(4)
    image = torch.randn(1, 1, 4, 4, generator=g)

    def spread(k):  # variance of q over 40 draws of k noisy views of one image
        draws = []
        for _ in range(40):
            views = image + 0.5 * torch.randn(k, 1, 1, 4, 4, generator=g)
            draws.append(trainer.pseudo_distribution(trainer.model, views if k > 1 else views[0]))
        return torch.stack(draws).var(0).sum()

    assert spread(4) < 0.5 * spread(1)
