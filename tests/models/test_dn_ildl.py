"""DN-ILDL's solver: the proximal steps equal their closed forms, the objective never rises after ADMM's first step and
W - J closes, and on
synthetic data with feature- and label-dependent noise it recovers the true distributions better than least squares
on the noisy ones (at the settings below; it is sensitive to them: see the README)."""

import pytest
import torch

from hf_methods.models.dn_ildl import DNILDL, knn_laplacian, row_shrink, singular_value_threshold
from hf_methods.trainers.ldl_losses import ldl_metrics


def test_singular_value_thresholding_is_the_nuclear_prox():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 4, generator=g, dtype=torch.float64)
    z = singular_value_threshold(m, 0.7)
    torch.testing.assert_close(torch.linalg.svdvals(z), (torch.linalg.svdvals(m) - 0.7).clamp_min(0))

    def value(a):
        return 0.5 * (a - m).pow(2).sum() + 0.7 * torch.linalg.matrix_norm(a, "nuc")

    for _ in range(20):  # no nearby matrix does better
        assert value(z) <= value(z + 1e-3 * torch.randn(6, 4, generator=g, dtype=torch.float64)) + 1e-12


def test_row_shrinkage_is_the_l21_prox():
    m = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        row_shrink(m, 1.0), torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    )


def test_the_graph_laplacian_is_symmetric_with_zero_row_sums():
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    laplacian = knn_laplacian(x, k=5)
    torch.testing.assert_close(laplacian, laplacian.T)
    torch.testing.assert_close(laplacian.sum(1), torch.zeros(30, dtype=torch.float64))
    assert torch.linalg.eigvalsh(laplacian).min() > -1e-9  # positive semi-definite


def synthetic(seed=0, n=500, p=20, c=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    w = torch.randn(p, 3, generator=g, dtype=torch.float64) @ torch.randn(3, c, generator=g, dtype=torch.float64) * 0.5
    truth = torch.softmax(x @ w, 1)  # rank-3 map
    p_noise = torch.zeros(p, c, dtype=torch.float64)
    p_noise[torch.randperm(p, generator=g)[:2]] = 0.15 * torch.randn(2, c, generator=g, dtype=torch.float64)
    q_noise = torch.zeros(c, c, dtype=torch.float64)
    q_noise[torch.randperm(c, generator=g)[:2]] = 0.5 * torch.randn(2, c, generator=g, dtype=torch.float64)
    noisy = (truth + x @ p_noise + truth @ q_noise).clamp_min(0)
    return x, truth, noisy / noisy.sum(1, keepdim=True)


def test_recovers_the_true_distributions_better_than_least_squares():
    x, truth, noisy = synthetic()
    least_squares = DNILDL(nuclear_weight=0, feature_noise_weight=1e12, label_noise_weight=1e12, graph_weight=0,
                           max_iter=1).fit(x, noisy)  # fmt: skip
    model = DNILDL(nuclear_weight=5.0, feature_noise_weight=1.0, label_noise_weight=50.0, graph_weight=0.0).fit(
        x, noisy
    )
    ours, theirs = ldl_metrics(model.predict(x), truth), ldl_metrics(least_squares.predict(x), truth)
    for name in ("chebyshev", "clark", "canberra", "kl"):
        assert ours[name] < theirs[name], name
    for name in ("cosine", "intersection"):
        assert ours[name] > theirs[name], name
    history = model.objective_history
    assert history[-1] < history[0]


@pytest.mark.parametrize("settings", [{}, {"nuclear_weight": 1.0}, {"label_noise_weight": 1.0, "graph_weight": 0.01}])
def test_the_objective_never_rises_after_the_first_step(settings):
    """Entry 0 is the least-squares start (W unthresholded); from the first ADMM step on, at (J, P, Q), the objective
    does not rise (within 1e-9, relative) on this data."""
    x, _, noisy = synthetic()
    history = DNILDL(**settings).fit(x, noisy).objective_history
    assert all(b <= a * (1 + 1e-9) for a, b in zip(history[1:], history[2:]))


def test_admm_closes_the_split():
    x, _, noisy = synthetic(n=200)
    model = DNILDL(nuclear_weight=1.0, feature_noise_weight=1.0, label_noise_weight=50.0, max_iter=300).fit(x, noisy)
    assert model.objective_history[-1] < model.objective_history[1]
    assert model.n_iter_ < 300  # converged: ||W - J|| and the objective's change below tol


def test_bad_inputs_are_named():
    x, _, noisy = synthetic(n=40)
    bad = noisy.clone()
    bad[7, 0] += 0.5
    with pytest.raises(ValueError, match="noisy_distributions row 7 sums to"):
        DNILDL().fit(x, bad)
    with pytest.raises(ValueError, match="features has 39 rows but noisy_distributions 40"):
        DNILDL().fit(x[:39], noisy)
    with pytest.raises(ValueError, match="nuclear_weight must be >= 0"):
        DNILDL(nuclear_weight=-1)
    with pytest.raises(ValueError, match="needs a fitted model"):
        DNILDL().predict(x)


def test_a_fitted_solver_saves_loads_and_pushes_as_a_model(tmp_path, fake_hub):
    import transformers as T
    from huggingface_hub import ModelCard

    from hf_methods.models.dn_ildl import DNILDLForLabelDistribution

    x, _, noisy = synthetic(n=60)
    solver = DNILDL(nuclear_weight=1.0, label_noise_weight=50.0, max_iter=50).fit(x, noisy)
    model = DNILDLForLabelDistribution.from_solver(solver, id2label={i: f"l{i}" for i in range(6)})
    torch.testing.assert_close(model(features=x).distribution, solver.predict(x))
    model.save_pretrained(tmp_path)
    loaded = T.AutoModel.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(loaded) is DNILDLForLabelDistribution and torch.equal(loaded.weights, solver.weights)
    torch.testing.assert_close(loaded(features=x).distribution, solver.predict(x))
    model.push_to_hub("tester/dn-ildl", results={"metrics": {"cosine": 0.8}})
    card = ModelCard.load("tester/dn-ildl")
    assert "dn-ildl" in card.data.tags and "| cosine | 0.8 |" in card.text
    with pytest.raises(ValueError, match="fitted on 20"):
        loaded(features=x[:, :5])
