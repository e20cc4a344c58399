"""The loss terms of Knowledge Factorization (KF, ECCV 2022), as in the official code (Adamdad/KnowledgeFactor,
`cls/mmcls/models/losses/kd_loss.py` and `classifiers/kf.py`): InfoMax between the teacher's projected features and the
common-knowledge network's, the batch InfoMin bottleneck on a task-specific network's features, the soft-target KD, and
mmcls' label-smoothed cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distillation_trainer import soft_target_loss  # noqa: F401 - one soft KD for every method; imported from here too

INFOMAX_ESTIMATORS = ("official", "pairs")
LABEL_SMOOTHING_MODES = ("classy_vision", "original")


class InfoMaxLoss(nn.Module):
    """`-(E_j - log E_m)` between two batches of features, one row per example (the official `InfoMax_loss`).

    Rows are L2-normalized (norm + 1e-10), `s = u v^T` is the (batch x batch) cosine similarity; matching rows are the
    positive (joint) pairs, the others the negative (marginal) ones.

    - `estimator="official"` (default, as the official code): `E_j = mean(s * I)` and `E_m = mean(exp(s * (1 - I)))`,
      both means over all batch^2 entries: `E_j` is the trace over batch^2 (the positive term is scaled by 1/batch),
      and every diagonal entry adds exp(0) = 1 to `E_m`.
    - `estimator="pairs"`: the means over the pairs the terms name: `E_j` = mean of the batch positive similarities,
      `E_m` = mean of exp(s) over the batch (batch - 1) negative pairs (a one-row batch has none: `log E_m` = 0).

    The loss is lower when the rows of `u` match the rows of `v` than when they are shuffled.
    """

    def __init__(self, estimator: str = "official"):
        super().__init__()
        if estimator not in INFOMAX_ESTIMATORS:
            raise ValueError(f"`infomax_estimator` must be one of {INFOMAX_ESTIMATORS}, got {estimator!r}.")
        self.estimator = estimator

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if u.dim() != 2 or u.shape != v.shape:
            raise ValueError(
                f"InfoMax compares two (batch, width) feature batches of the same shape, got {tuple(u.shape)} and "
                f"{tuple(v.shape)}."
            )
        u = u.float() / (u.float().norm(p=2, dim=1, keepdim=True) + 1e-10)
        v = v.float() / (v.float().norm(p=2, dim=1, keepdim=True) + 1e-10)
        s = u @ v.T
        eye = torch.eye(s.shape[0], device=s.device, dtype=s.dtype)
        if self.estimator == "official":
            joint = (s * eye).mean()
            marginal = torch.exp(s * (1 - eye)).mean()
            return -(joint - torch.log(marginal))
        joint = s.diagonal().mean()
        if s.shape[0] < 2:
            return -joint
        negatives = torch.exp(s)[~eye.bool()]
        return -(joint - torch.log(negatives.mean()))


class BatchInfoMinLoss(nn.Module):
    """The InfoMin bottleneck on a task-specific network's features `tau` (batch, width), with batch statistics (the
    official `TSN_backbone` + `InfoMin_loss`): `mu_d` = the batch mean and `log sigma^2_d` = the log of the unbiased
    batch variance of every dimension, and the loss is the KL of that Gaussian to N(0, 1), averaged over dimensions:
    `-1/2 mean_d (1 + log sigma^2_d - mu_d^2 - sigma^2_d)`. It is 0 exactly when every dimension has mean 0 and
    variance 1. The variance is clamped at 1e-12 before the log (a constant dimension would give inf; the official
    code does not clamp); a one-row batch has no variance and gives 0."""

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        if tau.dim() != 2:
            raise ValueError(f"InfoMin takes (batch, width) features, got shape {tuple(tau.shape)}.")
        tau = tau.float()
        if tau.shape[0] < 2:
            return tau.sum() * 0.0
        mu = tau.mean(dim=0)
        log_var = torch.log(tau.var(dim=0).clamp_min(1e-12))
        return -0.5 * torch.mean(1 + log_var - mu**2 - log_var.exp())


def smoothed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, smoothing: float, mode: str = "classy_vision"
) -> torch.Tensor:
    """mmcls' `LabelSmoothLoss` (mean over the batch): the one-hot target becomes `(1 - e) one_hot + e / classes`.
    `mode="classy_vision"` (what mmcls uses when no mode is set, as in the official KF configs) takes `e = smoothing
    / (1 + smoothing)`; `"original"` takes `e = smoothing`."""
    if mode not in LABEL_SMOOTHING_MODES:
        raise ValueError(f"`label_smoothing_mode` must be one of {LABEL_SMOOTHING_MODES}, got {mode!r}.")
    eps = smoothing / (1 + smoothing) if mode == "classy_vision" else smoothing
    return F.cross_entropy(logits.float(), labels, label_smoothing=eps)


def split_task_logits(logits, task_num_labels: list[int]) -> tuple[torch.Tensor, ...]:
    """Per-task logits of a classifier whose logits are its tasks' logits side by side (a multi-task teacher with
    `num_labels` = the sum of the tasks' classes), or a tuple / list with one tensor per task, checked."""
    if isinstance(logits, (tuple, list)):
        parts = tuple(logits)
        sizes = [p.shape[-1] for p in parts]
        if sizes != list(task_num_labels):
            raise ValueError(f"the teacher gives per-task logits of sizes {sizes}, the tasks have {task_num_labels}.")
        return parts
    if logits.shape[-1] != sum(task_num_labels):
        raise ValueError(
            f"the teacher's logits have {logits.shape[-1]} columns, but the tasks have {task_num_labels} classes "
            f"({sum(task_num_labels)} together); a multi-task teacher gives the tasks' logits side by side, in the "
            "student's task order."
        )
    return tuple(torch.split(logits, list(task_num_labels), dim=-1))
