"""KF's loss terms (InfoMax, batch InfoMin, soft-target KD, mmcls' label smoothing) against their definitions, and
KnowledgeFactorTrainer: the teacher gets no gradient while the feature projectors do, the loss is the sum of its
weighted terms, and bad teachers, labels and settings are named."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.knowledge_factor import KnowledgeFactorConfig, KnowledgeFactorModel
from hf_methods.trainers.knowledge_factor_config import KnowledgeFactorTrainingConfig
from hf_methods.trainers.knowledge_factor_losses import (
    BatchInfoMinLoss,
    InfoMaxLoss,
    smoothed_cross_entropy,
    soft_target_loss,
    split_task_logits,
)
from hf_methods.trainers.knowledge_factor_trainer import KnowledgeFactorTrainer, MultiTaskDistillationTrainer

LABELS = [[str(d) for d in range(10)], ["even", "odd"]]


@pytest.mark.parametrize("estimator", ["official", "pairs"])
def test_infomax_is_lower_for_aligned_pairs_than_for_shuffled_ones(estimator):
    loss = InfoMaxLoss(estimator)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        u = torch.randn(16, 8, generator=g)
        v = u + 0.1 * torch.randn(16, 8, generator=g)
        shuffled = v[torch.randperm(16, generator=g)]
        assert loss(u, v) < loss(u, shuffled)


def test_infomax_official_estimator_is_the_official_formula_diagonal_quirk_included():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    s = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T
    joint = s.diagonal().sum() / 25  # mean of s * I over all 25 entries
    marginal = (torch.exp(s).sum() - torch.exp(s.diagonal()).sum() + 5) / 25  # the diagonal adds exp(0) = 1 each
    torch.testing.assert_close(InfoMaxLoss("official")(u, v), -(joint - marginal.log()))
    negatives = (torch.exp(s).sum() - torch.exp(s.diagonal()).sum()) / 20
    torch.testing.assert_close(InfoMaxLoss("pairs")(u, v), -(s.diagonal().mean() - negatives.log()))


def test_batch_infomin_is_zero_for_a_standard_batch_and_positive_otherwise():
    a = 2**-0.5  # two rows +-a: mean 0, unbiased variance 1 in every dimension
    tau = torch.tensor([[a, -a, a], [-a, a, -a]])
    assert BatchInfoMinLoss()(tau).abs() < 1e-6
    assert BatchInfoMinLoss()(3 * tau + 1) > 0.5
    mu, var = (3 * tau + 1).mean(0), (3 * tau + 1).var(0)
    torch.testing.assert_close(BatchInfoMinLoss()(3 * tau + 1), (-0.5 * (1 + var.log() - mu**2 - var)).mean())


def test_kd_and_label_smoothing_follow_the_official_definitions():
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.tensor([0, 5, 2, 2])
    kl = (F.softmax(t / 10, 1) * (F.log_softmax(t / 10, 1) - F.log_softmax(s / 10, 1))).sum(1).mean()
    torch.testing.assert_close(soft_target_loss(s, t, 10.0), 100 * kl)
    eps = 0.1 / 1.1  # mmcls' classy_vision mode, what the official configs get
    target = F.one_hot(y, 6) * (1 - eps) + eps / 6
    torch.testing.assert_close(smoothed_cross_entropy(s, y, 0.1), -(target * F.log_softmax(s, 1)).sum(1).mean())
    original = F.cross_entropy(s, y, label_smoothing=0.1)
    torch.testing.assert_close(smoothed_cross_entropy(s, y, 0.1, "original"), original)
    parts = split_task_logits(torch.randn(4, 12), [10, 2])
    assert [p.shape[-1] for p in parts] == [10, 2]


def student() -> KnowledgeFactorModel:
    torch.manual_seed(0)
    return KnowledgeFactorModel(
        KnowledgeFactorConfig(
            ckn_config=VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1]),
            tsn_config=VGGConfig(num_channels=1, hidden_sizes=[4], depths=[1]),
            task_names=["digit", "parity"],
            task_labels=LABELS,
        )
    )


def teacher(model: KnowledgeFactorModel) -> VGGForImageClassification:
    torch.manual_seed(1)
    config = VGGConfig(num_channels=1, hidden_sizes=[4, 6, 12], depths=[1, 1, 1], id2label=model.config.id2label)
    return VGGForImageClassification(config)


def args(tmp_path, **kw) -> KnowledgeFactorTrainingConfig:
    fixed = dict(use_cpu=True, report_to="none", save_strategy="no", per_device_train_batch_size=8, max_steps=2)
    return KnowledgeFactorTrainingConfig(output_dir=str(tmp_path), disable_tqdm=True, **fixed, **kw)


def batch(n=8):
    g = torch.Generator().manual_seed(2)
    digit = torch.randint(0, 10, (n,), generator=g)
    return {"pixel_values": torch.randn(n, 1, 8, 8, generator=g), "labels": torch.stack([digit, digit % 2], 1)}


def test_official_defaults():
    a = KnowledgeFactorTrainingConfig(output_dir="unused", use_cpu=True)
    assert (a.temperature, a.lambda_logits, a.lambda_infomax, a.lambda_infomin, a.lambda_task) == (10, 0.1, 1, 1e-3, 1)
    assert (a.label_smoothing_factor, a.label_smoothing_mode, a.infomax_estimator) == (0.1, "classy_vision", "official")


def test_teacher_gets_no_gradient_projectors_do_and_the_loss_is_its_weighted_terms(tmp_path):
    model, inputs = student(), batch()
    teach = teacher(model)
    trainer = KnowledgeFactorTrainer(model=model, args=args(tmp_path), teacher_model=teach)
    assert model.config.teacher_feature_sizes == [6, 12]  # read from the teacher's config: its last 2 stages
    model.train()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    loss = loss.detach()
    assert all(p.grad is None and not p.requires_grad for p in teach.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.feature_projectors.parameters())
    assert all(p.grad is not None for p in model.tsns.parameters())
    parts = {k: float(v) for k, v in trainer._loss_parts.items()}  # the unweighted terms, for the logs
    a = trainer.args
    total = (a.lambda_infomax * parts["infomax_loss"] + a.lambda_logits * parts["kd_loss"] + parts["cls_loss"]
             + a.lambda_task * parts["task_loss"] + a.lambda_infomin * parts["infomin_loss"])  # fmt: skip
    assert float(loss) == pytest.approx(total, rel=1e-5)
    with torch.no_grad():  # the KD term is the per-task soft-target KD against the teacher's split logits
        out, t_logits = model(pixel_values=inputs["pixel_values"]), teach(pixel_values=inputs["pixel_values"]).logits
    digit, parity = t_logits.split([10, 2], -1)
    kd = soft_target_loss(out.logits[0], digit, 10.0) + soft_target_loss(out.logits[1], parity, 10.0)
    assert parts["kd_loss"] == pytest.approx(float(kd), rel=1e-4)
    assert torch.isfinite(trainer.compute_loss(model, batch(1)))  # a last one-row batch: no InfoMax / InfoMin


def test_without_a_teacher_only_the_label_terms_train(tmp_path):
    model = student()
    trainer = KnowledgeFactorTrainer(model=model, args=args(tmp_path, distillation_type="none"))
    assert trainer.teacher_model is None and len(model.feature_projectors) == 0
    trainer.compute_loss(model.train(), batch())
    assert float(trainer._loss_parts["kd_loss"]) == 0 and float(trainer._loss_parts["infomax_loss"]) == 0


class LogitsOnly(nn.Module):
    """A teacher that gives logits but no hidden states."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 12)

    def forward(self, pixel_values, **kwargs):
        return {"logits": self.linear(pixel_values.flatten(1))}


def test_bad_teachers_labels_and_settings_are_named(tmp_path):
    model = student()
    with pytest.raises(ValueError, match="cannot read the widths of the teacher's hidden states"):
        KnowledgeFactorTrainer(model=model, args=args(tmp_path), teacher_model=LogitsOnly())
    given = KnowledgeFactorModel(KnowledgeFactorConfig(**{**model.config.to_dict(), "teacher_feature_sizes": [6, 12]}))
    trainer = KnowledgeFactorTrainer(model=given, args=args(tmp_path), teacher_model=LogitsOnly())
    with pytest.raises(ValueError, match="the teacher returned no hidden_states"):
        trainer.compute_loss(given, batch())
    trainer = KnowledgeFactorTrainer(model=model, args=args(tmp_path), teacher_model=teacher(model))
    bad = batch()
    bad["labels"] = bad["labels"][:, :1]
    with pytest.raises(ValueError, match=r"labels must have shape \(batch, 2\): one class index per task"):
        trainer.compute_loss(model, bad)
    with pytest.raises(ValueError, match="needs `labels`"):
        trainer.compute_loss(model, {"pixel_values": batch()["pixel_values"]})
    with pytest.raises(ValueError, match="`teacher_feature_layers` has 1 entries but the student's CKN has 2"):
        KnowledgeFactorTrainer(model=student(), args=args(tmp_path, teacher_feature_layers=[2]),
                               teacher_model=teacher(model))  # fmt: skip
    wide = VGGForImageClassification(VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=13))
    with pytest.raises(ValueError, match="output sizes differ"):
        KnowledgeFactorTrainer(model=student(), args=args(tmp_path), teacher_model=wide)
    with pytest.raises(TypeError, match="trains a KnowledgeFactorModel"):
        KnowledgeFactorTrainer(model=teacher(model), args=args(tmp_path), teacher_model=teacher(model))
    with pytest.raises(ValueError, match=r"model has 13 logits but the tasks have \[10, 4\] classes"):
        MultiTaskDistillationTrainer(model=wide, args=args(tmp_path, distillation_type="none"), task_num_labels=[10, 4])
    for field, value, match in [("lambda_infomin", -1.0, "lambda_infomin` must be a finite number >= 0"),
                                ("infomax_estimator", "exact", "infomax_estimator` must be one of"),
                                ("temperature", 0.0, "temperature` must be a finite number > 0"),
                                ("label_smoothing_factor", 1.0, r"smoothing_factor` must be in \[0, 1\)")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            args(tmp_path, **{field: value})


def test_the_plain_multitask_baseline_distills_every_task(tmp_path):
    model = student()
    plain = VGGForImageClassification(VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1],
                                                id2label=model.config.id2label))  # fmt: skip
    teach = teacher(model)
    trainer = MultiTaskDistillationTrainer(model=plain, args=args(tmp_path), teacher_model=teach,
                                           task_num_labels=[10, 2])  # fmt: skip
    inputs = batch()
    plain.train()
    loss = trainer.compute_loss(plain, inputs).detach()
    with torch.no_grad():
        z = plain(pixel_values=inputs["pixel_values"]).logits.split([10, 2], -1)
        t = teach(pixel_values=inputs["pixel_values"]).logits.split([10, 2], -1)
    y = inputs["labels"]
    ce = sum(smoothed_cross_entropy(z[k], y[:, k], 0.1) for k in (0, 1))
    expected = ce + 0.1 * sum(soft_target_loss(z[k], t[k], 10.0) for k in (0, 1))
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
