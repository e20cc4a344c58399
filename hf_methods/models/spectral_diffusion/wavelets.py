"""The orthonormal 2-D Haar wavelet transform (one level) as plain torch operations: exact, differentiable
(autograd), any dtype and device, no extra dependency (ptwt would add one, and pywt under it, for these few lines).

Convention (first letter: the filter along the height, second: along the width; L = low-pass, H = high-pass), for the
2x2 block [[a, b], [c, d]] of each output position:
    LL = (a + b + c + d) / 2      LH = (-a + b - c + d) / 2   (changes along the width: vertical edges)
    HL = (-a - b + c + d) / 2     HH = (a - b - c + d) / 2    (diagonal)
The transform is orthonormal (energy is kept: |LL|^2 + |LH|^2 + |HL|^2 + |HH|^2 = |x|^2), so the inverse is its
transpose.
"""

from __future__ import annotations

import torch


def haar_dwt2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LL, LH, HL, HH) of `x` (..., H, W) with even H and W, each (..., H/2, W/2)."""
    if x.dim() < 2 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_dwt2d needs even height and width, got shape {tuple(x.shape)}.")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (-a + b - c + d) / 2, (-a - b + c + d) / 2, (a - b - c + d) / 2


def haar_idwt2d(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """The image (..., 2h, 2w) whose `haar_dwt2d` is (ll, lh, hl, hh), each (..., h, w)."""
    if not ll.shape == lh.shape == hl.shape == hh.shape:
        raise ValueError(
            f"haar_idwt2d needs four sub-bands of one shape, got {[tuple(t.shape) for t in (ll, lh, hl, hh)]}."
        )
    a = (ll - lh - hl + hh) / 2
    b = (ll + lh - hl - hh) / 2
    c = (ll - lh + hl - hh) / 2
    d = (ll + lh + hl + hh) / 2
    top = torch.stack((a, b), dim=-1).flatten(-2)  # (..., h, 2w): a b a b ...
    bottom = torch.stack((c, d), dim=-1).flatten(-2)
    return torch.stack((top, bottom), dim=-2).flatten(-3, -2)  # rows interleaved: (..., 2h, 2w)
