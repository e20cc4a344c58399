"""Spectral Diffusion, a slim diffusion model with wavelet gating and spectrum-aware distillation. Declares the method
(see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "Spectral Diffusion",
    command="spectral-diffusion",
    recipe="hf_methods.recipes.spectral_diffusion.pipeline",
    summary="Spectral Diffusion on digits: a DDPM teacher, then a slim wavelet-gated student distilled vs the same "
    "student without distillation vs without wavelet gating -> Fréchet distance, parameters, MACs, sample grids",
    citation="""@inproceedings{yang2023diffusion,
  title     = {Diffusion Probabilistic Model Made Slim},
  author    = {Yang, Xingyi and Zhou, Daquan and Feng, Jiashi and Wang, Xinchao},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {22552--22562}, year = {2023}
}""",
    push="hf_methods.recipes.spectral_diffusion.pipeline:push_spectral_diffusion_run",
)
