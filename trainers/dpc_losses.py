"""The pieces of DPC, "Dirichlet-based Prediction Calibration for Learning with Noisy Labels" (Zong et al., AAAI 2024;
official code chenchenzong/DPC@fb30e91, `AAAI2024_DPC_code/loss.py` and `Train_cifar.py`, read, not copied).

Softmax is translation invariant: logits that are all low (little evidence for any class) can give the same confident
probability as a clear example, which misleads clean/noisy selection. DPC reads `exp(logits)` as the evidence of a
Dirichlet with `alpha = exp(o) + gamma` and predicts its mean (`calibrated_softmax`). Plain cross-entropy on that mean
barely pushes non-target logits down, so it trains with the evidential loss (`evidential_loss`: the NLL of the mean plus
a KL term that drives non-target evidence to zero). The logits are then well separated, and examples are split into
clean and noisy by their margin (`large_margin_scores`) with a 2-component Gaussian mixture (`fit_clean_posterior`).

As in the official code (which equals the paper up to rescaling alpha by gamma): gamma = 10 / C, the KL target
`alpha~ = y + (1 - y) * alpha / gamma`, the KL weight 0.5 / C, and the GMM settings (`max_iter=10, tol=1e-2,
reg_covar=5e-4`) on min-max normalized margins.
"""

from __future__ import annotations

import numpy as np
import torch


def default_gamma(num_classes: int) -> float:
    """The official gamma, 10 / C."""
    return 10.0 / num_classes


def calibrated_softmax(logits: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
    """`(exp(o_c) + gamma) / sum_j (exp(o_j) + gamma)` over the last dimension (the official `conv_p`): the mean of the
    Dirichlet with evidence `exp(o)`. Not translation invariant: all-low logits give a near-uniform prediction."""
    gamma = default_gamma(logits.shape[-1]) if gamma is None else gamma
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}.")
    alpha = logits.float().exp() + gamma
    return alpha / alpha.sum(dim=-1, keepdim=True)


def evidential_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float | None = None, kl_weight: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example `(nll, kl)` of DPC's evidential loss (the official `EDL_Loss`); the training loss is
    `nll.mean() + kl.mean()`.

    `nll = log S - log alpha_y` (minus the log of the calibrated probability of the label), with `alpha = exp(o) +
    gamma`, `S = sum alpha`. `kl = kl_weight / C * KL(Dir(alpha~) || Dir(1))` with `alpha~ = y + (1 - y) * alpha /
    gamma`: zero when every non-target alpha equals gamma (no evidence for a wrong class).

    `labels` are class indices (N,) or soft/one-hot targets (N, C); soft targets weigh the NLL per class and mix the
    KL target the same way.
    """
    num_classes = logits.shape[-1]
    gamma = default_gamma(num_classes) if gamma is None else gamma
    if labels.dim() == logits.dim() - 1:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels must be class indices in [0, {num_classes}), got {labels.tolist()[:8]}...")
        target = torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
    else:
        target = labels.float()
    alpha = logits.float().exp() + gamma
    total = alpha.sum(dim=-1, keepdim=True)
    nll = (target * (total.log() - alpha.log())).sum(dim=-1)
    tilde = target + (1.0 - target) * alpha / gamma
    tilde_total = tilde.sum(dim=-1)
    kl = (
        torch.lgamma(tilde_total)
        - torch.lgamma(torch.tensor(float(num_classes)))
        - torch.lgamma(tilde).sum(dim=-1)
        + ((tilde - 1.0) * (torch.digamma(tilde) - torch.digamma(tilde_total)[..., None])).sum(dim=-1)
    )
    return nll, kl_weight * kl / num_classes


def large_margin_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`o_y - max_{j != y} o_j` per example: how far the given label's logit stands above the best other class."""
    labels = labels.long()
    target = logits.gather(-1, labels[..., None]).squeeze(-1)
    others = logits.scatter(-1, labels[..., None], float("-inf"))
    return (target - others.max(dim=-1).values).float()


def fit_clean_posterior(scores, seed: int = 0, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4):
    """Posterior of the higher-mean component of a 2-component Gaussian mixture fitted to min-max normalized `scores`
    (margins: high = clean), one value in [0, 1] per example. The official settings are the defaults."""
    from sklearn.mixture import GaussianMixture

    values = np.asarray(torch.as_tensor(scores, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1, 1)
    if values.shape[0] < 2:
        raise ValueError("fit_clean_posterior needs at least 2 scores.")
    spread = values.max() - values.min()
    normalized = (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    gmm.fit(normalized)
    return gmm.predict_proba(normalized)[:, int(gmm.means_.argmax())]
