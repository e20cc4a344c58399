"""LayerMatch: Grad-ReLU keeps the unlabeled gradient out of the classifier (and plain FixMatch does not), the centres
follow the EMA formula, tau = 1 is supervised training, the data pieces shape the batch, and bad settings name the
field."""

import pytest
import torch
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from hf_methods.trainers.layermatch_config import LayerMatchConfig
from hf_methods.trainers.layermatch_trainer import (
    LayerMatchTrainer,
    SemiSupervisedDataset,
    WeakStrongCollator,
    strong_augment,
    weak_augment,
)


def vit(seed=0):
    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                       patch_size=4, num_channels=1, num_labels=3, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)  # fmt: skip
    return ViTForImageClassification(config)


def data(n_labeled=6, n_unlabeled=24, ratio=2):
    g = torch.Generator().manual_seed(0)
    labeled = [{"pixel_values": torch.randn(1, 8, 8, generator=g), "labels": i % 3} for i in range(n_labeled)]
    unlabeled = [torch.randn(1, 8, 8, generator=g) for _ in range(n_unlabeled)]
    return SemiSupervisedDataset(labeled, unlabeled, unlabeled_ratio=ratio)


COMMON = dict(use_cpu=True, report_to="none", per_device_train_batch_size=3, learning_rate=0.05, optim="sgd",
              disable_tqdm=True, save_strategy="no", max_steps=4, logging_steps=1)  # fmt: skip


def trainer(tmp_path, model=None, **kw):
    args = LayerMatchConfig(output_dir=str(tmp_path), **{**COMMON, **kw})
    return LayerMatchTrainer(model=model or vit(), args=args, train_dataset=data())


def test_the_dataset_and_collator_shape_a_batch():
    ds = data()
    assert len(ds) == 12 and len(ds[0]["unlabeled"]) == 2  # 24 unlabeled images / 2 per row
    batch = WeakStrongCollator()([ds[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 1, 8, 8) and batch["labels"].tolist() == [0, 1, 2]
    assert batch["unlabeled_weak"].shape == batch["unlabeled_strong"].shape == (6, 1, 8, 8)
    x = torch.randn(4, 1, 8, 8)
    assert weak_augment(x).shape == strong_augment(x).shape == x.shape
    with pytest.raises(ValueError, match="unlabeled_ratio must be an integer >= 1"):
        SemiSupervisedDataset(ds.labeled, ds.unlabeled, unlabeled_ratio=0)


@pytest.mark.parametrize(
    ("grad_relu", "avg_clustering", "classifier_learns"),
    [(True, False, False), (False, True, False), (True, True, False), (False, False, True)],
)
def test_only_plain_fixmatch_lets_the_unlabeled_gradient_reach_the_classifier(
    tmp_path, grad_relu, avg_clustering, classifier_learns
):
    tr = trainer(tmp_path, threshold=0.0, grad_relu=grad_relu, avg_clustering=avg_clustering)
    model = tr.model
    batch = WeakStrongCollator()([tr.train_dataset[i] for i in range(3)])
    features = []
    hook = model.classifier.register_forward_pre_hook(lambda m, a: features.append(a[0]))
    model(pixel_values=torch.cat([batch["unlabeled_weak"], batch["unlabeled_strong"]]))
    hook.remove()
    loss, mask_rate = tr.unlabeled_loss(features[0][:6], features[0][6:])
    assert mask_rate == 1.0 and loss > 0
    loss.backward()
    classifier_grad = model.classifier.weight.grad
    assert (classifier_grad is not None and classifier_grad.abs().sum() > 0) == classifier_learns
    assert model.vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0  # the extractor learns


def test_the_centres_follow_the_ema_formula(tmp_path):
    tr = trainer(tmp_path, center_momentum=0.5)
    tr.reset_centers()
    start = tr.centers["weight"].clone()
    with torch.no_grad():
        tr.model.classifier.weight.add_(1.0)
    tr.update_centers()
    torch.testing.assert_close(tr.centers["weight"], 0.5 * start + 0.5 * (start + 1.0))
    tr0 = trainer(tmp_path, center_momentum=0.0)
    with torch.no_grad():
        tr0.model.classifier.weight.mul_(2.0)
    tr0.update_centers()
    torch.testing.assert_close(tr0.centers["weight"], tr0.model.classifier.weight)


def test_threshold_one_is_supervised_training(tmp_path):
    """tau = 1 keeps no pseudo-label: the same weights as a plain Trainer on the labeled rows in the same order
    (ViT normalizes per image, so the unlabeled images in the forward do not change the labeled logits)."""
    tr = trainer(tmp_path / "lm", threshold=1.0)
    tr.train()
    assert all(e["mask_rate"] == 0.0 for e in tr.state.log_history if "mask_rate" in e)
    ds = data()
    rows = [{k: v for k, v in ds[i].items() if k != "unlabeled"} for i in range(len(ds))]
    plain = vit()
    args = TrainingArguments(output_dir=str(tmp_path / "plain"), **COMMON)
    Trainer(model=plain, args=args, train_dataset=rows).train()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_run_logs_its_parts_and_bad_settings_name_the_field(tmp_path):
    tr = trainer(tmp_path, threshold=0.0)
    tr.train()
    logged = [e for e in tr.state.log_history if "unsup_loss" in e]
    assert len(logged) == 4 and all(e["mask_rate"] == 1.0 for e in logged)
    for field, value, message in [
        ("threshold", 1.5, "threshold must be in"),
        ("lambda_u", -1.0, "lambda_u must be >= 0"),
        ("center_momentum", 1.0, r"center_momentum must be in \[0, 1\)"),
        ("remove_unused_columns", True, "remove_unused_columns must be False"),
    ]:
        with pytest.raises(ValueError, match=message):
            LayerMatchConfig(output_dir=str(tmp_path), **{**COMMON, field: value})
    with pytest.raises(ValueError, match="classifier_name='head': the model has no such module"):
        trainer(tmp_path, classifier_name="head")
