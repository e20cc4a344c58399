"""Label distribution learning (LDL): the checks, the KL objective, RankMatch's pairwise ranking loss and the six
standard metrics.

In LDL each example has a label distribution d (how much each label describes it: non-negative, summing to 1)
instead of one label. The six metrics are the ones LDL papers report (Geng, "Label Distribution Learning", TKDE 2016):
Chebyshev, Clark, Canberra and KL (lower is better), Cosine and Intersection (higher is better), each averaged over the
examples. PyLDL computes them too, but it is not on the package index this project installs from; they are a few lines
of torch here, checked against a loop over the definitions.

Zeros: a term whose denominator `d_j + p_j` is 0 (Clark, Canberra) counts 0, as does a KL term with `d_j = 0`; `p_j`
is clamped at 1e-12 inside KL's log, so a missed label costs a large but finite amount.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("chebyshev", "clark", "canberra", "kl", "cosine", "intersection")
LOWER_IS_BETTER = {"chebyshev": True, "clark": True, "canberra": True, "kl": True, "cosine": False,
                   "intersection": False}  # fmt: skip
EPS = 1e-12


def check_label_distributions(d, name: str = "label_distribution", atol: float = 1e-4) -> torch.Tensor:
    """`d` as a float tensor (examples, labels), or a ValueError naming the first row that is not a distribution
    (a negative or non-finite entry, or a sum off 1 by more than `atol`)."""
    d = torch.as_tensor(d, dtype=torch.float64) if not torch.is_tensor(d) else d
    if d.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (examples, labels) array, got shape {tuple(d.shape)}.")
    values = d.detach().to(torch.float64)
    bad = (~torch.isfinite(values)).any(dim=1) | (values < 0).any(dim=1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(f"{name} row {row} has a negative or non-finite entry: {values[row].tolist()}.")
    sums = values.sum(dim=1)
    off = (sums - 1).abs() > atol
    if off.any():
        row = int(off.nonzero()[0])
        raise ValueError(
            f"{name} row {row} sums to {float(sums[row]):.6g}, not 1: divide each row by its sum (or check the data)."
        )
    return d


def label_distribution_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example `KL(target || softmax(logits))`, the LDL training objective (zero-target terms count 0)."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    target = target.float()
    return torch.where(target > 0, target * (target.clamp_min(EPS).log() - log_p), 0.0).sum(-1)


def pairwise_ranking_loss(
    predicted: torch.Tensor, target: torch.Tensor, margin: str = "gap", delta: float = 0.0
) -> torch.Tensor:
    """Per-example pairwise relevance ranking (PRR) loss of RankMatch (arXiv 2312.06343; no official code, read from
    the paper's description): over the label pairs (j, k) the target orders, `target_j > target_k + delta`, the mean of
    `max(0, m_jk - (predicted_j - predicted_k))`.

    `margin="gap"` (labeled data, the strong constraint): `m_jk = target_j - target_k`, the predicted gap must be at
    least the target's. `margin="zero"` (pseudo-labels, the weak constraint): `m_jk = 0`, only the order counts.
    An example whose target orders no pair (uniform) contributes 0. All pairs at once: (batch, C, C) tensors.
    """
    if margin not in ("gap", "zero"):
        raise ValueError(f"margin must be 'gap' or 'zero', got {margin!r}.")
    if predicted.shape != target.shape:
        raise ValueError(f"predicted has shape {tuple(predicted.shape)} but target {tuple(target.shape)}.")
    target_gap = target[..., :, None] - target[..., None, :]
    predicted_gap = predicted[..., :, None] - predicted[..., None, :]
    ordered = (target_gap > delta).to(predicted.dtype)
    required = target_gap if margin == "gap" else torch.zeros_like(target_gap)
    hinge = torch.relu(required - predicted_gap) * ordered
    return hinge.sum(dim=(-2, -1)) / ordered.sum(dim=(-2, -1)).clamp_min(1.0)


def ldl_metrics(predicted, target) -> dict[str, float]:
    """The six LDL metrics of `predicted` against `target` distributions (both (examples, labels)), averaged."""
    p = torch.as_tensor(predicted, dtype=torch.float64)
    d = torch.as_tensor(target, dtype=torch.float64)
    if p.shape != d.shape:
        raise ValueError(f"predicted has shape {tuple(p.shape)} but target {tuple(d.shape)}: one row per example each.")
    total = d + p
    safe = torch.where(total > 0, total, 1.0)
    clark = torch.where(total > 0, (d - p) ** 2 / safe**2, 0.0).sum(1).sqrt()
    canberra = torch.where(total > 0, (d - p).abs() / safe, 0.0).sum(1)
    kl = torch.where(d > 0, d * (d.clamp_min(EPS).log() - p.clamp_min(EPS).log()), 0.0).sum(1)
    cosine = (d * p).sum(1) / (d.norm(dim=1) * p.norm(dim=1)).clamp_min(EPS)
    values = {
        "chebyshev": (d - p).abs().max(dim=1).values,
        "clark": clark,
        "canberra": canberra,
        "kl": kl,
        "cosine": cosine,
        "intersection": torch.minimum(d, p).sum(1),
    }
    return {name: float(values[name].mean()) for name in METRICS}


def compute_ldl_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for a `Trainer`: the predictions are logits (softmax applied here) or distributions (rows
    already summing to 1), the label ids the target distributions."""
    predictions, targets = eval_pred.predictions, eval_pred.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predictions = torch.as_tensor(np.asarray(predictions), dtype=torch.float64)
    is_distribution = bool((predictions >= 0).all()) and torch.allclose(
        predictions.sum(-1), torch.ones(len(predictions), dtype=torch.float64), atol=1e-4
    )
    if not is_distribution:
        predictions = torch.softmax(predictions, dim=-1)
    return ldl_metrics(predictions, check_label_distributions(np.asarray(targets), "label distributions"))
