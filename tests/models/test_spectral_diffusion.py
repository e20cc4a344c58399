"""Spectral Diffusion's pieces: the Haar transform (exact, orthonormal, differentiable), the wavelet-gated blocks (gates
in (0, 1), shapes), the slim diffusers student (with and without gating; save -> diffusers from_pretrained bit exact,
push, sampling with DDPMPipeline), the spectrum-aware loss (zero for equal features, Parseval, frequency weighting)."""

import math

import pytest
import torch

from hf_methods.models.spectral_diffusion import (
    SpectrumAwareDistillationLoss,
    WaveletGatedUNet2DModel,
    WGDownsample2D,
    WGUpsample2D,
    haar_dwt2d,
    haar_idwt2d,
)

TINY = dict(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4)


def test_haar_dwt_idwt_is_the_identity_orthonormal_and_differentiable():
    x = torch.randn(2, 3, 8, 6)
    bands = haar_dwt2d(x)
    assert all(b.shape == (2, 3, 4, 3) for b in bands)
    torch.testing.assert_close(haar_idwt2d(*bands), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(sum(b.pow(2).sum() for b in bands), x.pow(2).sum())  # energy kept
    torch.testing.assert_close(bands[0], torch.nn.functional.avg_pool2d(x, 2) * 2)  # LL = 2 x the 2x2 mean
    assert all(band.abs().max() == 0 for band in haar_dwt2d(torch.ones(1, 1, 4, 4))[1:])  # no detail in a constant
    z = [b.clone().requires_grad_(True) for b in bands]
    assert torch.autograd.gradcheck(lambda *t: haar_idwt2d(*t), [b.double()[:1, :1] for b in z], eps=1e-6)
    with pytest.raises(ValueError, match="even height and width"):
        haar_dwt2d(torch.randn(1, 1, 5, 4))


def test_wavelet_gated_blocks_gate_in_0_1_and_their_shapes():
    x = torch.randn(3, 8, 8, 8) * 10
    down = WGDownsample2D(8)
    gates = down.gates(x)
    assert gates.shape == (3, 4, 8, 1, 1) and (gates > 0).all() and (gates < 1).all()
    assert down(x).shape == (3, 8, 4, 4)  # halves H and W
    bare = WGUpsample2D(8, expand=False)
    assert bare(x).shape == (3, 2, 16, 16)  # doubles H and W, channels / 4
    assert WGUpsample2D(8)(x).shape == (3, 8, 16, 16)  # with the 1x1 expansion it keeps the channels
    # gates of 1 on LL only: WG-Down is the Haar low-pass band; WG-Up then inverts it exactly for a smooth image
    with torch.no_grad():
        down.gates.ffn[-1].weight.zero_()
        down.gates.ffn[-1].bias.copy_(torch.tensor([50.0] * 8 + [-50.0] * 24))
    torch.testing.assert_close(down(x), haar_dwt2d(x)[0])
    with pytest.raises(ValueError, match="divisible by 4"):
        WGUpsample2D(6, expand=False)


def test_student_with_and_without_gating_shapes_and_bad_configs():
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 500])
    gated, plain = WaveletGatedUNet2DModel(**TINY), WaveletGatedUNet2DModel(**TINY, use_wavelet_gating=False)
    assert gated(x, t).sample.shape == plain(x, 7).sample.shape == (2, 1, 8, 8)
    assert any(isinstance(m, WGDownsample2D) for m in gated.modules())
    assert not any(isinstance(m, (WGDownsample2D, WGUpsample2D)) for m in plain.modules())
    assert gated(x, t, return_dict=False)[0].shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="divisible by 2"):
        WaveletGatedUNet2DModel(sample_size=6, block_out_channels=(8, 16, 16), norm_num_groups=4)
    with pytest.raises(ValueError, match="norm_num_groups"):
        WaveletGatedUNet2DModel(sample_size=8, block_out_channels=(8, 12), norm_num_groups=8)


def test_student_saves_and_loads_with_diffusers_bit_exact_samples_with_ddpm_pipeline_and_pushes(tmp_path, fake_hub):
    from diffusers import DDPMPipeline, DDPMScheduler

    model = WaveletGatedUNet2DModel(**TINY)
    model.save_pretrained(tmp_path / "s")
    assert (tmp_path / "s" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = WaveletGatedUNet2DModel.from_pretrained(tmp_path / "s")
    assert loaded.config.use_wavelet_gating and loaded.config.block_out_channels == [8, 16]
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    pipe = DDPMPipeline(unet=loaded, scheduler=DDPMScheduler(num_train_timesteps=5))
    assert pipe(batch_size=2, num_inference_steps=5, output_type="np").images.shape == (2, 8, 8, 1)
    model.push_to_hub("tester/wg-student")
    again = WaveletGatedUNet2DModel.from_pretrained("tester/wg-student")
    torch.testing.assert_close(again.conv_out.weight, model.conv_out.weight, rtol=0, atol=0)


def _natural_image(n: int = 16, seed: int = 0) -> torch.Tensor:
    """A random-phase image with a 1/f amplitude spectrum (what natural images have)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(n)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    amplitude = 1 / radius.clamp_min(1 / n)
    phase = torch.rand(n, n, generator=g) * 2 * math.pi
    return torch.fft.ifft2(amplitude * torch.exp(1j * phase)).real[None, None].float()


def test_spectrum_aware_loss_zero_for_equal_features_parseval_and_high_frequencies_weigh_more():
    loss = SpectrumAwareDistillationLoss(alpha=-1.0)
    x0 = _natural_image()
    teacher = [torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)]
    spatial, frequency = loss(teacher, teacher, x0)
    assert spatial == 0 and frequency == 0
    student = [t + torch.randn_like(t) for t in teacher]
    flat = SpectrumAwareDistillationLoss(alpha=0.0)  # w = 1: the frequency loss is the spatial loss (Parseval)
    torch.testing.assert_close(flat.frequency(student, teacher, x0), flat.spatial(student, teacher))
    weights = loss.spectrum_weights(x0, (8, 8))  # resized x0, mean 1 per image, no gradient
    assert weights.shape == (1, 1, 8, 8) and weights.mean().item() == pytest.approx(1.0)
    # the same energy at a high or a low frequency: equal spatial losses, a larger frequency loss at the high one
    i = torch.arange(16.0)
    low = torch.cos(2 * math.pi * 1 * i / 16)[None, :].expand(16, 16)
    high = torch.cos(2 * math.pi * 7 * i / 16)[None, :].expand(16, 16)
    low, high = low / low.norm(), high / high.norm()
    t0 = torch.randn(1, 1, 16, 16)
    s_low, f_low = loss([t0 + low], [t0], x0)
    s_high, f_high = loss([t0 + high], [t0], x0)
    torch.testing.assert_close(s_low, s_high)
    assert f_high > 3 * f_low
    with pytest.raises(ValueError, match="project the student's channels"):
        loss([torch.randn(1, 2, 16, 16)], [t0], x0)
