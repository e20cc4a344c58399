"""HaBaDistiller: L_param is 1 exactly with no inner step and with eta_syn = 0, gradients reach the bases, every
hallucinator parameter and eta_syn through the unrolled steps, a tiny run lowers L_param (2-class Gaussian images,
MLP experts), the MTT variant (no hallucinators), expert trajectories round-trip through safetensors, DSA keeps shapes
and gradients, SupCon equals its definition, the official per-ipc settings, bad settings named."""

import math

import pytest
import torch

from hf_methods.models.haba import HaBaConfig, HaBaDataset
from hf_methods.trainers.haba_config import HaBaDistillerConfig, official_initial_synthetic_lr
from hf_methods.trainers.haba_distiller import (
    DistilledImages,
    ExpertTrajectories,
    HaBaDistiller,
    NetworkSpec,
    dsa_augment,
    evaluate_synthetic,
    parameter_matching_loss,
    supcon_loss,
    train_expert_trajectories,
)


def gaussian_images(n=64, seed=0):
    """Two classes of 1 x 8 x 8 "images": N(+0.5, 1) and N(-0.5, 1) pixels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randn(n, 1, 8, 8, generator=g) + (labels.float() - 0.5).view(-1, 1, 1, 1)
    return images, labels


@pytest.fixture(scope="module")
def experts():
    images, labels = gaussian_images()
    spec = NetworkSpec(kind="mlp", num_channels=1, image_size=(8, 8), num_classes=2, width=16, depth=1)
    return train_expert_trajectories(images, labels, spec, num_experts=5, epochs=5, lr=0.05, batch_size=16,
                                     dsa=False, seed=0, disable_tqdm=True)  # fmt: skip


def haba(num_hallucinators=2, ipc=1, lr=0.01):
    torch.manual_seed(0)
    model = HaBaDataset(HaBaConfig(num_channels=1, image_size=8, images_per_class=ipc, num_labels=2,
                                   num_hallucinators=num_hallucinators, initial_synthetic_lr=lr))  # fmt: skip
    images, labels = gaussian_images(seed=1)
    model.init_bases_from(images, labels, torch.Generator().manual_seed(0))
    return model


def config(**overrides):
    values = dict(iterations=1, syn_steps=3, max_start_epoch=2, lr_img=1.0, lr_hallucinator=0.1, lr_lr=1e-4, dsa=False,
                  extractor_width=8, disable_tqdm=True)  # fmt: skip
    return HaBaDistillerConfig(**{**values, **overrides})


def test_param_loss_is_one_exactly_without_steps_and_with_a_zero_learning_rate(experts):
    distiller = HaBaDistiller(haba(), experts, config(syn_steps=0))
    start, target, _ = distiller.sample_start()
    assert parameter_matching_loss(distiller.unroll(start), start, target).item() == 1.0
    frozen = haba(lr=0.0)
    distiller = HaBaDistiller(frozen, experts, config(syn_steps=4, dsa=True))
    start, target, _ = distiller.sample_start()
    assert parameter_matching_loss(distiller.unroll(start), start, target).item() == 1.0
    assert parameter_matching_loss(target, start, target).item() == 0.0


def test_gradients_reach_bases_every_hallucinator_parameter_and_the_learning_rate(experts):
    model = haba()
    distiller = HaBaDistiller(model, experts, config(syn_steps=4))
    start, target, _ = distiller.sample_start()
    used, draw = set(), distiller._hallucinator

    distiller._hallucinator = lambda: (lambda j: used.add(j) or j)(draw())
    parameter_matching_loss(distiller.unroll(start), start, target).backward()
    assert model.bases.grad.abs().sum() > 0 and model.synthetic_lr.grad.abs() > 0
    for j in used:
        for name, p in model.hallucinators[j].named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (j, name)
    # the diversity term reaches the hallucinators too, the extractor's own step its parameters only
    model.zero_grad()
    distiller.club_loss().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.hallucinators.parameters() if p.grad is not None)
    losses = distiller.extractor_losses()
    assert set(losses) == {"cls", "likelihood", "contrast", "total"} and losses["total"].requires_grad


def test_a_tiny_run_lowers_the_parameter_matching_loss(experts):
    model = haba()
    history = HaBaDistiller(model, experts, config(iterations=50, syn_steps=10, lr_img=1.0, lr_lr=1e-5)).distill()
    losses = [h["param_loss"] for h in history]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10  # seeds 0, 1, 2: 0.44, 0.42, 0.56
    assert all(h["synthetic_lr"] >= 0.001 for h in history) and "extractor_total" in history[-1]


def test_the_mtt_variant_learns_plain_images_with_the_same_loop(experts):
    images = DistilledImages(2, 2, (1, 8, 8))
    images.init_bases_from(*gaussian_images(seed=2), torch.Generator().manual_seed(0))
    before = images.bases.detach().clone()
    distiller = HaBaDistiller(images, experts, config(iterations=3))
    assert distiller.extractor is None and not distiller.hallucinating
    history = distiller.distill()
    assert not torch.equal(images.bases.detach(), before) and "club_loss" in history[0]
    test_images, test_labels = gaussian_images(n=32, seed=3)
    spec = experts.network
    for standardize, train in enumerate((images, haba(), (before.flatten(0, 1), torch.tensor([0, 0, 1, 1])))):
        result = evaluate_synthetic(train, test_images, test_labels, spec, lr=0.01, epochs=2, dsa=True,
                                    dsa_strategy="crop_cutout", standardize_batches=bool(standardize))  # fmt: skip
        assert 0 <= result["accuracy"] <= 1


def test_expert_trajectories_round_trip_through_safetensors(experts, tmp_path):
    path = experts.save(tmp_path / "experts.safetensors")
    loaded = ExpertTrajectories.load(path)
    assert loaded.network == experts.network and loaded.settings == experts.settings
    assert loaded.num_experts == 5 and loaded.num_epochs == 5
    assert all(torch.equal(a, b) for x, y in zip(experts.trajectories, loaded.trajectories) for a, b in zip(x, y))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an expert-trajectories file"):
        ExpertTrajectories.load(tmp_path / "other.safetensors")


def test_dsa_keeps_the_shape_and_the_gradient_and_each_operation_does_its_job():
    x = torch.randn(6, 3, 8, 8, requires_grad=True)
    for op in ("color", "crop", "cutout", "flip", "scale", "rotate"):
        out = dsa_augment(x, op, torch.Generator().manual_seed(0))
        assert out.shape == x.shape
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0, op
    assert dsa_augment(x, "none", torch.Generator()) is x
    ones = torch.ones(50, 1, 8, 8)
    cut = dsa_augment(ones, "cutout", torch.Generator().manual_seed(0))
    assert ((cut == 0).sum((1, 2, 3)) <= 16).all() and (cut == 0).any()  # at most a 4 x 4 square per image
    shifted = dsa_augment(ones, "crop", torch.Generator().manual_seed(0))
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}  # integer shifts with zero fill
    flipped = dsa_augment(torch.arange(8.0).expand(50, 1, 8, 8), "flip", torch.Generator().manual_seed(0))
    assert {tuple(row) for row in flipped[:, 0, 0].tolist()} == {tuple(range(8)), tuple(range(7, -1, -1))}


def test_supcon_equals_its_definition():
    g = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(5, 2, 4, generator=g), dim=2)
    labels = torch.tensor([0, 1, 0, 1, 1])
    flat, lab = torch.cat([features[:, 0], features[:, 1]]), labels.repeat(2)
    total = 0.0
    for i in range(10):
        others = [k for k in range(10) if k != i]
        denominator = sum(math.exp(flat[i] @ flat[k] / 0.07) for k in others)
        positives = [k for k in others if lab[k] == lab[i]]
        total += -sum(math.log(math.exp(flat[i] @ flat[p] / 0.07) / denominator) for p in positives) / len(positives)
    assert supcon_loss(features, labels).item() == pytest.approx(total / 10, rel=1e-5)


def test_official_settings_per_ipc():
    one, ten = HaBaDistillerConfig.official(1), HaBaDistillerConfig.official(10, iterations=7)
    assert (one.syn_steps, one.max_start_epoch, one.lr_lr) == (50, 2, 1e-7)
    assert (ten.syn_steps, ten.max_start_epoch, ten.lr_lr, ten.iterations) == (30, 20, 1e-5, 7)
    assert official_initial_synthetic_lr(1) == 0.01 and official_initial_synthetic_lr(10) == 0.001
    assert HaBaDistillerConfig.official(20).syn_steps == 30
    defaults = HaBaDistillerConfig()
    assert (defaults.lambda_club, defaults.lambda_cls, defaults.lambda_likelihood, defaults.lambda_contrast) == (
        0.1, 1.0, 0.1, 0.1)  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"syn_steps": -1}, "syn_steps must be an integer >= 0"),
        ({"iterations": 0}, "iterations must be a positive integer"),
        ({"dsa_strategy": "color_mixup"}, "unknown augmentation"),
        ({"lr_img": -1.0}, "lr_img must be a finite number >= 0"),
        ({"batch_syn": 0}, "batch_syn"),
    ],  # fmt: skip
)
def test_bad_settings_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        HaBaDistillerConfig(**overrides)


def test_bad_pairings_are_named(experts):
    with pytest.raises(ValueError, match="exceeds the experts' 5 epochs"):
        HaBaDistiller(haba(), experts, config(max_start_epoch=4))
    wrong = HaBaDataset(HaBaConfig(num_channels=1, image_size=6, num_labels=2))
    with pytest.raises(ValueError, match="network reads 2 classes of"):
        HaBaDistiller(wrong, experts, config())
    with pytest.raises(ValueError, match="ipc"):
        DistilledImages(2, 0, (1, 8, 8))
    with pytest.raises(ValueError, match="lower the depth"):
        NetworkSpec(image_size=(8, 8), depth=4)
