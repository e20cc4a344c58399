"""Spectral Diffusion's distillation losses (Yang et al., CVPR 2023, arXiv 2211.17106), standalone: the spatial
feature loss and the spectrum-weighted frequency loss between matched student and teacher features.

    L_spatial = sum_i mean |X_T^i - P_i(X_S^i)|^2
    L_freq    = sum_i mean( w_i * |F(X_T^i) - F(P_i(X_S^i))|^2 ),   w_i = |F(resize(x0, size_i))|^alpha

F is the orthonormal 2-D DFT over the last two dimensions (`torch.fft.fft2(norm="ortho")`), P_i the 1x1 convolution
that maps the student's channels to the teacher's (applied by the caller, before the DFT), alpha = -1 (the paper's
value as paraphrased): frequencies where the clean image has little energy, the high ones for natural images, weigh
more. Inferred safeguards (the paper gives none; each is a constructor argument): w is computed without gradient from
|.| + eps, averaged over x0's channels (x0 has 1-3 channels, features many), and normalized to mean 1 per image so
that the frequency loss has the spatial loss's scale. With w = 1 the two losses are equal (Parseval). "mean" is over
batch, channels and positions of each pair; the pairs are summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectrumAwareDistillationLoss(nn.Module):
    """`(spatial, frequency)` losses of lists of matched (already projected) student and teacher features."""

    def __init__(self, alpha: float = -1.0, eps: float = 1e-6, normalize_weights: bool = True):
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive (it keeps |F(x0)|^alpha finite), got {eps}.")
        self.alpha, self.eps, self.normalize_weights = float(alpha), float(eps), normalize_weights

    @torch.no_grad()
    def spectrum_weights(self, x0: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """w = (|F(resize(x0, size))| + eps)^alpha, averaged over channels: (N, 1, h, w), mean 1 per image when
        `normalize_weights`."""
        x0 = x0.float()
        if tuple(x0.shape[-2:]) != tuple(size):
            smaller = size[0] < x0.shape[-2] or size[1] < x0.shape[-1]
            x0 = F.interpolate(x0, size=size, mode="bilinear", align_corners=False, antialias=smaller)
        magnitude = torch.fft.fft2(x0, norm="ortho").abs().mean(1, keepdim=True)
        weights = (magnitude + self.eps).pow(self.alpha)
        if self.normalize_weights:
            weights = weights / weights.mean(dim=(-2, -1), keepdim=True)
        return weights

    @staticmethod
    def _check(student, teacher) -> None:
        if len(student) != len(teacher):
            raise ValueError(f"{len(student)} student features but {len(teacher)} teacher features to match.")
        for i, (s, t) in enumerate(zip(student, teacher)):
            if s.shape != t.shape:
                raise ValueError(
                    f"feature pair {i}: student {tuple(s.shape)} vs teacher {tuple(t.shape)}; project the student's "
                    "channels first (1x1 convolution) and match features of the same resolution."
                )

    def spatial(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        self._check(student, teacher)
        return sum(F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher))

    def frequency(self, student: list[torch.Tensor], teacher: list[torch.Tensor], x0: torch.Tensor) -> torch.Tensor:
        self._check(student, teacher)
        total = 0.0
        for s, t in zip(student, teacher):
            diff = torch.fft.fft2(t.float() - s.float(), norm="ortho")  # F is linear: F(T) - F(S) = F(T - S)
            weights = self.spectrum_weights(x0, tuple(s.shape[-2:]))
            total = total + (weights * (diff.real.square() + diff.imag.square())).mean()  # |.|^2, smooth at 0
        return total

    def forward(self, student, teacher, x0):
        return self.spatial(student, teacher), self.frequency(student, teacher, x0)
