"""DN-ILDL, inaccurate label distribution learning with dependent noise (Kou, Wang, Jia, Geng; arXiv 2405.16474; no
official code: the objective and the solver are read from the paper's summary and written out in the project's
research brief).

The observed distributions D~ (n x c) are the true ones plus noise that depends on the instance and on the labels:
`D~ = X W + X P + D~ Q`. W maps features to the true distributions and is low-rank (labels are correlated); the noise
factors P and Q are row-sparse (few features and few labels carry the noise); similar instances get similar
predictions (a kNN graph Laplacian L on X):

    min_{W,P,Q}  1/2 ||D~ - XW - XP - D~Q||_F^2 + l1 ||W||_* + l2 ||P||_{2,1} + l3 ||Q||_{2,1} + l4 tr(W'X'LXW)

solved by ADMM with the split W = J: J by singular value thresholding, W by a linear solve, P and Q by one proximal
gradient step each (row-wise shrinkage), then the multiplier and rho (x `rho_growth`, at most `rho_max`). Prediction:
`normalize(max(xW, 0))` (or `softmax(xW)`). Every inferred constant is an argument.
"""

from __future__ import annotations

import torch

from ...trainers.ldl_losses import check_label_distributions


def singular_value_threshold(matrix: torch.Tensor, threshold: float) -> torch.Tensor:
    """`argmin_Z 1/2 ||Z - M||_F^2 + threshold ||Z||_*`: the singular values shrunk by `threshold` (at least 0)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return (u * (s - threshold).clamp_min(0)) @ vh


def row_shrink(matrix: torch.Tensor, threshold: float) -> torch.Tensor:
    """`argmin_Z 1/2 ||Z - M||_F^2 + threshold ||Z||_{2,1}`: each row scaled by `max(0, 1 - threshold / ||row||)`."""
    norms = matrix.norm(dim=1, keepdim=True)
    return matrix * (1 - threshold / norms.clamp_min(1e-300)).clamp_min(0)


def knn_laplacian(features: torch.Tensor, k: int = 10) -> torch.Tensor:
    """`diag(S 1) - S` of the symmetrized k-nearest-neighbour graph with Gaussian weights `exp(-d^2 / sigma^2)`, sigma^2
    the mean squared distance to the k-th neighbours. Dense n x n: meant for the few thousand rows of LDL datasets."""
    n = features.shape[0]
    k = min(k, n - 1)
    distances = torch.cdist(features, features).pow(2)
    distances.fill_diagonal_(float("inf"))
    nearest = distances.topk(k, largest=False)
    sigma2 = nearest.values.mean().clamp_min(1e-12)
    weights = torch.zeros_like(distances).scatter_(1, nearest.indices, torch.exp(-nearest.values / sigma2))
    weights = torch.maximum(weights, weights.T)
    return torch.diag(weights.sum(1)) - weights


class DNILDL:
    """The DN-ILDL estimator: `fit(features, noisy_distributions)`, `predict(features)` (scikit-learn style; float64
    torch). After `fit`: `weights` (W, (p [+1], c)), `feature_noise` (P), `label_noise` (Q), `objective_history` and
    `n_iter_`.

    Args:
        nuclear_weight, feature_noise_weight, label_noise_weight, graph_weight: l1, l2, l3, l4 of the objective. The
            defaults are the settings of the synthetic recovery test (500 examples, 20 features, 6 labels), the only
            place they are validated; they scale with the number of examples. A small `label_noise_weight` lets
            `D~ Q` explain the observed distributions themselves and the map shrinks toward 0.
        n_neighbors: k of the kNN graph.
        rho, rho_growth, rho_max: ADMM's penalty, its growth per iteration and its cap (the brief: 1.1, 1e6).
        max_iter, tol: stop when `||W - J||_F` and the relative change of the objective are both below `tol`.
        fit_intercept: append a constant feature.
        prediction: "normalize" (`max(xW, 0)` divided by its sum) or "softmax".
    """

    def __init__(
        self,
        nuclear_weight: float = 5.0,
        feature_noise_weight: float = 1.0,
        label_noise_weight: float = 50.0,
        graph_weight: float = 0.0,
        n_neighbors: int = 10,
        rho: float = 1.0,
        rho_growth: float = 1.1,
        rho_max: float = 1e6,
        max_iter: int = 500,
        tol: float = 1e-6,
        fit_intercept: bool = True,
        prediction: str = "normalize",
    ):
        for name in ("nuclear_weight", "feature_noise_weight", "label_noise_weight", "graph_weight"):
            if not locals()[name] >= 0:
                raise ValueError(f"{name} must be >= 0, got {locals()[name]!r}.")
        if not rho > 0 or not rho_growth >= 1 or not rho_max >= rho:
            raise ValueError(f"need rho > 0, rho_growth >= 1 and rho_max >= rho, got {rho}, {rho_growth}, {rho_max}.")
        if n_neighbors < 1 or max_iter < 1:
            raise ValueError(f"n_neighbors and max_iter must be positive, got {n_neighbors}, {max_iter}.")
        if prediction not in ("normalize", "softmax"):
            raise ValueError(f"prediction must be 'normalize' or 'softmax', got {prediction!r}.")
        self.nuclear_weight, self.feature_noise_weight = nuclear_weight, feature_noise_weight
        self.label_noise_weight, self.graph_weight = label_noise_weight, graph_weight
        self.n_neighbors, self.rho, self.rho_growth, self.rho_max = n_neighbors, rho, rho_growth, rho_max
        self.max_iter, self.tol, self.fit_intercept, self.prediction = max_iter, tol, fit_intercept, prediction
        self.weights: torch.Tensor | None = None

    def _design(self, features) -> torch.Tensor:
        x = torch.as_tensor(features, dtype=torch.float64)
        if x.dim() != 2:
            raise ValueError(f"features must be 2-D (examples, features), got shape {tuple(x.shape)}.")
        return torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1) if self.fit_intercept else x

    def objective(self, x, d, w, p, q, laplacian) -> float:
        residual = d - x @ w - x @ p - d @ q
        value = 0.5 * residual.pow(2).sum() + self.nuclear_weight * torch.linalg.matrix_norm(w, "nuc")
        value = value + self.feature_noise_weight * p.norm(dim=1).sum() + self.label_noise_weight * q.norm(dim=1).sum()
        xw = x @ w
        return float(value + self.graph_weight * (xw * (laplacian @ xw)).sum())

    def fit(self, features, noisy_distributions) -> DNILDL:
        x = self._design(features)
        d = check_label_distributions(noisy_distributions, "noisy_distributions").to(torch.float64)
        if len(d) != len(x):
            raise ValueError(f"features has {len(x)} rows but noisy_distributions {len(d)}: one per example each.")
        n, dim = x.shape
        c = d.shape[1]
        laplacian = knn_laplacian(x[:, :-1] if self.fit_intercept else x, self.n_neighbors)
        gram = x.T @ x + 2 * self.graph_weight * (x.T @ laplacian @ x)
        step_p = 1.0 / torch.linalg.matrix_norm(x, 2).pow(2).clamp_min(1e-12)
        step_q = 1.0 / torch.linalg.matrix_norm(d, 2).pow(2).clamp_min(1e-12)
        w = torch.linalg.lstsq(x, d).solution
        j, lam = w.clone(), torch.zeros_like(w)
        p, q = torch.zeros(dim, c, dtype=torch.float64), torch.zeros(c, c, dtype=torch.float64)
        rho = self.rho
        self.objective_history = [self.objective(x, d, w, p, q, laplacian)]
        eye = torch.eye(dim, dtype=torch.float64)
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            self.n_iter_ += 1
            j = singular_value_threshold(w + lam / rho, self.nuclear_weight / rho)
            w = torch.linalg.solve(gram + rho * eye, x.T @ (d - x @ p - d @ q) + rho * j - lam)
            residual = d - x @ w - x @ p - d @ q
            p = row_shrink(p + step_p * (x.T @ residual), step_p * self.feature_noise_weight)
            residual = d - x @ w - x @ p - d @ q
            q = row_shrink(q + step_q * (d.T @ residual), step_q * self.label_noise_weight)
            lam = lam + rho * (w - j)
            rho = min(rho * self.rho_growth, self.rho_max)
            self.objective_history.append(self.objective(x, d, j, p, q, laplacian))
            change = abs(self.objective_history[-2] - self.objective_history[-1]) / max(1.0, self.objective_history[-2])
            if float((w - j).norm()) < self.tol and change < self.tol:
                break
        self.weights, self.feature_noise, self.label_noise = j, p, q
        return self

    def predict(self, features) -> torch.Tensor:
        """Predicted label distributions, (examples, c)."""
        if self.weights is None:
            raise ValueError("DNILDL.predict needs a fitted model: call fit(features, noisy_distributions) first.")
        scores = self._design(features) @ self.weights
        if self.prediction == "softmax":
            return torch.softmax(scores, dim=1)
        positive = scores.clamp_min(0)
        sums = positive.sum(dim=1, keepdim=True)
        uniform = torch.full_like(positive, 1.0 / positive.shape[1])
        return torch.where(sums > 0, positive / sums.clamp_min(1e-300), uniform)
