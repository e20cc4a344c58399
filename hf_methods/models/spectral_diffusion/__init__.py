"""Spectral Diffusion (Yang et al., "Diffusion Probabilistic Model Made Slim", CVPR 2023): the Haar wavelet transform,
wavelet-gated down/up-sampling blocks, the slim diffusers student `WaveletGatedUNet2DModel` and the spectrum-aware
distillation loss. The trainer is `hf_methods.trainers.spectral_diffusion_trainer.SpectralDiffusionTrainer`.

The model classes are diffusers models (not transformers Auto classes), so they are imported on first use: `import
hf_methods` neither needs nor imports diffusers (`pip install 'hf-methods[diffusion]'`).
"""

from .losses import SpectrumAwareDistillationLoss
from .wavelets import haar_dwt2d, haar_idwt2d

_MODELING = ("WaveletGatedUNet2DModel", "WGDownsample2D", "WGUpsample2D", "WaveletGates")

__all__ = ["SpectrumAwareDistillationLoss", "haar_dwt2d", "haar_idwt2d", *_MODELING]


def __getattr__(name):
    if name in _MODELING:
        from ...diffusion import require_diffusers

        require_diffusers()
        from . import modeling_spectral_diffusion

        return getattr(modeling_spectral_diffusion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
