"""LDL basics: the six metrics equal a loop over their definitions, are perfect on a perfect prediction, and bad
distributions are refused naming the row; the KL objective is KL(d || softmax)."""

import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_methods.trainers.ldl_losses import (
    METRICS,
    check_label_distributions,
    compute_ldl_metrics,
    label_distribution_kl,
    ldl_metrics,
    pairwise_ranking_loss,
)


def loop_metrics(p, d):
    rows = {name: [] for name in METRICS}
    for pi, di in zip(p.tolist(), d.tolist()):
        rows["chebyshev"].append(max(abs(a - b) for a, b in zip(di, pi)))
        rows["clark"].append(math.sqrt(sum((a - b) ** 2 / (a + b) ** 2 for a, b in zip(di, pi) if a + b > 0)))
        rows["canberra"].append(sum(abs(a - b) / (a + b) for a, b in zip(di, pi) if a + b > 0))
        rows["kl"].append(sum(a * math.log(a / max(b, 1e-12)) for a, b in zip(di, pi) if a > 0))
        dot = sum(a * b for a, b in zip(di, pi))
        rows["cosine"].append(dot / (math.sqrt(sum(a * a for a in di)) * math.sqrt(sum(b * b for b in pi))))
        rows["intersection"].append(sum(min(a, b) for a, b in zip(di, pi)))
    return {name: sum(v) / len(v) for name, v in rows.items()}


def test_the_metrics_equal_their_definitions():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(20, 5, generator=g, dtype=torch.float64), -1)
    d = torch.softmax(2 * torch.randn(20, 5, generator=g, dtype=torch.float64), -1)
    d[0] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0])  # zero entries: their terms count 0
    expected = loop_metrics(p, d)
    got = ldl_metrics(p, d)
    for name in METRICS:
        assert got[name] == pytest.approx(expected[name], rel=1e-10), name
    perfect = ldl_metrics(d, d)
    assert perfect == pytest.approx({"chebyshev": 0, "clark": 0, "canberra": 0, "kl": 0, "cosine": 1,
                                     "intersection": 1}, abs=1e-12)  # fmt: skip


def test_compute_metrics_takes_logits_or_distributions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 4, generator=g, dtype=torch.float64)
    d = torch.softmax(torch.randn(8, 4, generator=g, dtype=torch.float64), -1)
    from_logits = compute_ldl_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=d.numpy()))
    from_probs = compute_ldl_metrics(EvalPrediction(predictions=torch.softmax(logits, -1).numpy(), label_ids=d.numpy()))
    assert from_logits == pytest.approx(from_probs)
    assert from_logits == pytest.approx(ldl_metrics(torch.softmax(logits, -1), d))


def test_kl_objective():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.2, 0.8, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    p = torch.softmax(logits, -1)
    expected = torch.stack([(0.2 * (0.2 / p[0, 0]).log() + 0.8 * (0.8 / p[0, 1]).log()), torch.tensor(0.0)])
    torch.testing.assert_close(label_distribution_kl(logits, d), expected)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([[0.5, 0.5], [0.7, 0.2]], "row 1 sums to 0.9, not 1"),
        ([[0.5, 0.5], [1.2, -0.2]], "row 1 has a negative or non-finite entry"),
        ([[np.nan, 1.0]], "row 0 has a negative or non-finite entry"),
        ([0.5, 0.5], "must be a 2-D"),
    ],
)
def test_bad_distributions_name_the_row(rows, match):
    with pytest.raises(ValueError, match=match):
        check_label_distributions(rows)


def loop_prr(p, d, margin, delta=0.0):
    losses = []
    for pi, di in zip(p.tolist(), d.tolist()):
        terms = [max(0.0, ((di[j] - di[k]) if margin == "gap" else 0.0) - (pi[j] - pi[k]))
                 for j in range(len(di)) for k in range(len(di)) if di[j] > di[k] + delta]  # fmt: skip
        losses.append(sum(terms) / len(terms) if terms else 0.0)
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("margin", ["gap", "zero"])
def test_ranking_loss_all_pairs_at_once_equal_a_loop(margin):
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    d = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    d[0] = 0.2  # uniform: no ordered pair, loss 0
    torch.testing.assert_close(pairwise_ranking_loss(p, d, margin), loop_prr(p, d, margin))
    torch.testing.assert_close(pairwise_ranking_loss(p, d, margin, delta=0.05), loop_prr(p, d, margin, 0.05))
    assert pairwise_ranking_loss(p, d, margin)[0] == 0


def test_ranking_loss_is_zero_iff_the_order_is_kept():
    d = torch.tensor([[0.5, 0.3, 0.2]])
    assert pairwise_ranking_loss(d, d, "gap") == 0  # the target itself: every gap met
    assert pairwise_ranking_loss(torch.tensor([[0.6, 0.28, 0.12]]), d, "gap") == 0  # wider gaps
    assert pairwise_ranking_loss(torch.tensor([[0.4, 0.35, 0.25]]), d, "gap") > 0  # right order, gaps too small
    assert pairwise_ranking_loss(torch.tensor([[0.4, 0.35, 0.25]]), d, "zero") == 0  # ...enough when only order counts
    swapped = torch.tensor([[0.3, 0.5, 0.2]])
    assert pairwise_ranking_loss(swapped, d, "zero") > 0 and pairwise_ranking_loss(swapped, d, "gap") > 0


def test_ranking_loss_is_permutation_equivariant():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(4, 6, generator=g), -1)
    d = torch.softmax(torch.randn(4, 6, generator=g), -1)
    perm = torch.randperm(6, generator=g)
    for margin in ("gap", "zero"):
        torch.testing.assert_close(
            pairwise_ranking_loss(p[:, perm], d[:, perm], margin), pairwise_ranking_loss(p, d, margin)
        )
