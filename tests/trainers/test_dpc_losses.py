"""DPC's pieces: the calibrated softmax breaks translation invariance, the evidential loss equals a SciPy
re-derivation (gammaln, digamma), its gradient raises the label's logit and lowers the others, the KL term vanishes
without wrong-class evidence, and the margin GMM keeps the higher-mean component."""

import numpy as np
import pytest
import torch
from scipy.special import digamma, gammaln

from hf_methods.trainers.dpc_losses import (
    calibrated_softmax,
    evidential_loss,
    fit_clean_posterior,
    large_margin_scores,
)


def test_calibration_is_not_translation_invariant_and_has_the_right_limits():
    o = torch.randn(4, 5)
    assert torch.allclose(torch.softmax(o + 3.0, -1), torch.softmax(o, -1), atol=1e-6)
    assert not torch.allclose(calibrated_softmax(o + 3.0), calibrated_softmax(o), atol=1e-3)
    low = calibrated_softmax(torch.full((1, 5), -30.0) + torch.randn(1, 5))
    torch.testing.assert_close(low, torch.full((1, 5), 0.2), rtol=0, atol=1e-6)  # no evidence: uniform
    high = calibrated_softmax(torch.tensor([[30.0, 0.0, 0.0, 0.0, 0.0]]))
    assert high[0, 0] > 0.999999  # overwhelming evidence: one-hot
    assert torch.allclose(calibrated_softmax(o).sum(-1), torch.ones(4))
    with pytest.raises(ValueError, match="gamma must be > 0"):
        calibrated_softmax(o, gamma=0.0)


def _scipy_edl(logits, labels, num_classes):
    gamma = 10.0 / num_classes
    alpha = np.exp(logits) + gamma
    y = np.eye(num_classes)[labels]
    nll = (y * (np.log(alpha.sum(1, keepdims=True)) - np.log(alpha))).sum(1)
    tilde = y + (1 - y) * alpha / gamma
    total = tilde.sum(1)
    kl = gammaln(total) - gammaln(num_classes) - gammaln(tilde).sum(1)
    kl += ((tilde - 1) * (digamma(tilde) - digamma(total)[:, None])).sum(1)
    return nll, 0.5 * kl / num_classes


@pytest.mark.parametrize("num_classes", [3, 10])
def test_evidential_loss_equals_a_scipy_rederivation(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(16, num_classes, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, num_classes, (16,), generator=g)
    nll, kl = evidential_loss(logits, labels)
    ref_nll, ref_kl = _scipy_edl(logits.numpy(), labels.numpy(), num_classes)
    np.testing.assert_allclose(nll.numpy(), ref_nll, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl.numpy(), ref_kl, rtol=1e-4, atol=1e-6)
    assert bool((kl >= -1e-6).all())
    one_hot = torch.nn.functional.one_hot(labels, num_classes)
    soft_nll, soft_kl = evidential_loss(logits, one_hot)  # one-hot targets: the same loss
    torch.testing.assert_close(soft_nll, nll.float())
    torch.testing.assert_close(soft_kl, kl.float())


def test_the_kl_term_vanishes_without_wrong_class_evidence_and_the_gradient_has_the_right_signs():
    logits = torch.tensor([[5.0, -40.0, -40.0, -40.0]])
    _, kl = evidential_loss(logits, torch.tensor([0]))
    assert float(kl) < 1e-6
    logits = torch.randn(8, 4, requires_grad=True)
    labels = torch.randint(0, 4, (8,))
    nll, kl = evidential_loss(logits, labels)
    (nll.mean() + kl.mean()).backward()
    target_grad = logits.grad.gather(1, labels[:, None]).squeeze(1)
    others = logits.grad.scatter(1, labels[:, None], 0.0)
    assert bool((target_grad < 0).all()) and bool((others.sum(1) > 0).all())
    assert bool((others >= 0).all())  # every wrong class is pushed down
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 4\)"):
        evidential_loss(logits, torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))


def test_margins_and_the_clean_posterior():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    torch.testing.assert_close(large_margin_scores(logits, torch.tensor([0, 0])), torch.tensor([2.0, -5.0]))
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(5, 0.5, 80), rng.normal(0, 0.5, 20)])  # 80 clean, 20 noisy
    posterior = fit_clean_posterior(scores)
    assert posterior.shape == (100,) and (posterior[:80] > 0.5).all() and (posterior[80:] < 0.5).all()
    with pytest.raises(ValueError, match="at least 2 scores"):
        fit_clean_posterior([1.0])


def test_margins_after_an_evidential_warm_up_separate_clean_from_noisy_labels():
    """4 Gaussian classes, 40% symmetric label noise, an MLP warmed up with the evidential loss: the margin score ranks
    clean above noisy examples (ROC-AUC > 0.9)."""
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    n, classes = 800, 4
    truth = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, 8, generator=g) * 3
    x = centres[truth] + torch.randn(n, 8, generator=g)
    noisy = torch.rand(n, generator=g) < 0.4
    labels = torch.where(noisy, torch.randint(0, classes, (n,), generator=g), truth)
    noisy = labels != truth  # a symmetric flip may land on the true class
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):  # a short warm-up: before the network memorizes the noise
        for i in range(0, n, 32):
            nll, kl = evidential_loss(model(x[i : i + 32]), labels[i : i + 32])
            optimizer.zero_grad()
            (nll.mean() + kl.mean()).backward()
            optimizer.step()
    with torch.no_grad():
        margins = large_margin_scores(model(x), labels)
    assert roc_auc_score((~noisy).numpy(), margins.numpy()) > 0.9
    posterior = fit_clean_posterior(margins)
    assert (posterior[~noisy.numpy()] > 0.5).mean() > 0.8 and (posterior[noisy.numpy()] > 0.5).mean() < 0.3
