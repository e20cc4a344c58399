"""LIRF's metrics (Ye et al., ECCV 2022; official README's tables): accuracies as fractions in [0, 1].

- Pre Acc: the target network's accuracy on the preserved classes' test images (high: it kept them).
- Dep Acc: the target network's accuracy on the deposit classes' test images (low: it forgot them).
- F (forgetting) = Dep Acc of the original network - Dep Acc of the target network.
- H-mean: the harmonic mean of Pre Acc and F, 2 Pre F / (Pre + F) (F clamped at 0: a target that forgot nothing
  scores 0, not a negative or unbounded value; the paper does not define that case).
- Avg Acc: the recover network's accuracy on all test images (every class again), beside the original's.
Check on the official CIFAR-10 figures: Pre 93.41, Dep 94.60 -> 15.00 gives F 79.60 and H-mean 85.95.
"""

from __future__ import annotations

import numpy as np
import torch


def harmonic_mean(pre_acc: float, forgetting: float) -> float:
    """LIRF's H-mean of Pre Acc and F (F < 0 counts as 0)."""
    f = max(float(forgetting), 0.0)
    return 0.0 if pre_acc + f <= 0 else 2 * pre_acc * f / (pre_acc + f)


def _predictions(values) -> np.ndarray:
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return values.argmax(-1) if values.ndim == 2 else values


def _accuracy(pred: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    return float((pred[mask] == labels[mask]).mean()) if mask.any() else float("nan")


def lirf_metrics(labels, deposit_classes, *, original, target, recover=None) -> dict[str, float]:
    """LIRF's metrics on one test set. `original`, `target` and `recover` are the three networks' logits (n, C) or
    predicted class ids (n,); `labels` the true ids; `deposit_classes` the deposited label ids.

    Returns `pre_acc`, `dep_acc`, `forgetting`, `h_mean` (target network), `avg_acc` (the recover network on all
    images; absent without `recover`) and, for the tables, `original_pre_acc`, `original_dep_acc`,
    `original_avg_acc`, `target_avg_acc`, `recover_pre_acc`, `recover_dep_acc`.
    """
    labels = _predictions(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be class ids of shape (n,), got shape {labels.shape}.")
    deposit = np.isin(labels, np.asarray(list(deposit_classes)))
    if deposit.all() or not deposit.any():
        raise ValueError(
            "LIRF's metrics need test images of both deposit and preserved classes; this test set has "
            f"{int(deposit.sum())} deposit and {int((~deposit).sum())} preserved images."
        )
    everything = np.ones_like(deposit)
    out = {}
    for name, values in (("original", original), ("target", target), ("recover", recover)):
        if values is None:
            continue
        pred = _predictions(values)
        if pred.shape != labels.shape:
            raise ValueError(f"{name} predictions have shape {pred.shape}, labels {labels.shape}.")
        out[f"{name}_pre_acc"] = _accuracy(pred, labels, ~deposit)
        out[f"{name}_dep_acc"] = _accuracy(pred, labels, deposit)
        out[f"{name}_avg_acc"] = _accuracy(pred, labels, everything)
    out["pre_acc"], out["dep_acc"] = out["target_pre_acc"], out["target_dep_acc"]
    out["forgetting"] = out["original_dep_acc"] - out["dep_acc"]
    out["h_mean"] = harmonic_mean(out["pre_acc"], out["forgetting"])
    if recover is not None:
        out["avg_acc"] = out.pop("recover_avg_acc")
    return out


def lirf_compute_metrics(deposit_classes):
    """A `compute_metrics` for `Trainer.evaluate` of an `LIRFModel` on a test set of all classes: its predictions
    are `LIRFOutput`'s (logits, deposit_logits, recover_logits, original_logits); returns `lirf_metrics`."""

    def compute(eval_pred) -> dict[str, float]:
        predictions = eval_pred.predictions
        if not isinstance(predictions, (tuple, list)) or len(predictions) != 4:
            raise ValueError(
                "lirf_compute_metrics reads an LIRFModel's four outputs (logits, deposit_logits, recover_logits, "
                "original_logits); evaluate an LIRFModel."
            )
        target, _, recover, original = predictions
        return lirf_metrics(eval_pred.label_ids, deposit_classes, original=original, target=target, recover=recover)

    return compute
