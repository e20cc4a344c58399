"""`SpectralDiffusionTrainer`: a tiny diffusers teacher + a tiny wavelet-gated student train 5 finite steps with the
three losses, the projections train and are saved beside the student, the teacher stays frozen and is never saved, the
DDPM loss alone needs no teacher, and bad settings are clear errors."""

import pytest
import torch
from safetensors import safe_open

from hf_methods.models.spectral_diffusion import WaveletGatedUNet2DModel
from hf_methods.trainers.spectral_diffusion_config import SpectralDiffusionConfig
from hf_methods.trainers.spectral_diffusion_trainer import PROJECTIONS_FILE, SpectralDiffusionTrainer


def _teacher():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4,
                       attention_head_dim=4)  # fmt: skip


def _rows(n=16):
    return [{"pixel_values": torch.rand(1, 8, 8) * 2 - 1, "labels": torch.tensor(i % 10)} for i in range(n)]


def _args(tmp_path, **kw):
    kw = {"max_steps": 5, **kw}
    return SpectralDiffusionConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                   learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True,
                                   logging_steps=1, disable_tqdm=True, **kw)  # fmt: skip


def test_tiny_teacher_and_student_train_five_finite_steps_and_the_teacher_is_never_saved(tmp_path):
    from diffusers import DDPMScheduler

    teacher, student = _teacher(), WaveletGatedUNet2DModel(sample_size=8, block_out_channels=(4, 8), norm_num_groups=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = student.conv_in.weight.detach().clone()
    trainer = SpectralDiffusionTrainer(student, _args(tmp_path), train_dataset=_rows(), teacher_model=teacher,
                                       noise_scheduler=DDPMScheduler(num_train_timesteps=50))  # fmt: skip
    # mid_block (16 ch, 4x4) and up_blocks.0/1 (16, 8 ch, 8x8) of the teacher; 8, 8, 4 channels in the student
    assert [(p.in_channels, p.out_channels) for p in trainer.side_module] == [(8, 16), (8, 16), (4, 8)]
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 5 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    assert all(e["spatial_loss"] > 0 and e["frequency_loss"] > 0 and e["ddpm_loss"] > 0 for e in logs)
    for k, v in teacher.state_dict().items():  # frozen
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not torch.equal(student.conv_in.weight, student_before)
    trainer.save_model(str(tmp_path / "saved"))
    files = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert PROJECTIONS_FILE in files
    own = set(student.state_dict()) - {k for k in student.state_dict() if k.startswith("spectral_projections.")}
    weights = next(p for p in (tmp_path / "saved").glob("*.safetensors") if p.name != PROJECTIONS_FILE)
    with safe_open(weights, "pt") as f:
        assert set(f.keys()) == own  # the student only: no teacher, no projections
    with safe_open(tmp_path / "saved" / PROJECTIONS_FILE, "pt") as f:
        assert len(list(f.keys())) == 6  # three 1x1 convolutions
    assert sum(f.stat().st_size for f in (tmp_path / "saved").iterdir()) < 2 * weights.stat().st_size


def test_ddpm_loss_alone_needs_no_teacher_and_bad_settings_are_clear_errors(tmp_path):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=50)
    student = WaveletGatedUNet2DModel(sample_size=8, block_out_channels=(4, 8), norm_num_groups=4)
    args = _args(tmp_path, lambda_spatial=0.0, lambda_frequency=0.0, max_steps=2)
    trainer = SpectralDiffusionTrainer(student, args, train_dataset=_rows(), noise_scheduler=scheduler)
    trainer.train()
    assert trainer.teacher_model is None and trainer.side_module is None
    assert [e["spatial_loss"] for e in trainer.state.log_history if "loss" in e] == [0.0, 0.0]
    with pytest.raises(ValueError, match="needs a teacher"):
        SpectralDiffusionTrainer(student, _args(tmp_path), train_dataset=_rows(), noise_scheduler=scheduler)
    with pytest.raises(ValueError, match="needs `noise_scheduler`"):
        SpectralDiffusionTrainer(student, args, train_dataset=_rows())
    with pytest.raises(ValueError, match="is the student or shares"):
        SpectralDiffusionTrainer(student, _args(tmp_path), train_dataset=_rows(), teacher_model=student,
                                 noise_scheduler=scheduler)  # fmt: skip
    three = WaveletGatedUNet2DModel(sample_size=8, block_out_channels=(4, 8, 8), norm_num_groups=4)
    with pytest.raises(ValueError, match="as many levels"):
        SpectralDiffusionTrainer(three, _args(tmp_path), train_dataset=_rows(), teacher_model=_teacher(),
                                 noise_scheduler=scheduler)  # fmt: skip
    for kw, match in [({"lambda_spatial": -1.0}, "lambda_spatial"), ({"spectrum_eps": 0.0}, "spectrum_eps"),
                      ({"student_feature_modules": ["up"], "teacher_feature_modules": ["a", "b"]}, "same number"),
                      ({"teacher_feature_modules": ["mid_block"]}, "needs `student_feature_modules`")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            _args(tmp_path, **kw)
