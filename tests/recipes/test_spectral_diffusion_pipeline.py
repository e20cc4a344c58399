"""`hf-methods spectral-diffusion`: a tiny run end to end (teacher, classifier, three students, costs,
Fréchet distances, report, students saved as diffusers folders with cards and their scheduler, push of the teacher and
the three students), and recipe values refused before any work."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hf_methods.hub import push_run
from hf_methods.recipes.spectral_diffusion.pipeline import ARMS, SpectralDiffusionRecipe, main


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    from diffusers import DDPMPipeline, DDPMScheduler

    from hf_methods.models.spectral_diffusion import WaveletGatedUNet2DModel

    out = tmp_path / "run"
    main(["--output_dir", str(out), "--teacher_steps", "2", "--teacher_block_out_channels", "8", "16",
          "--student_block_out_channels", "4", "8", "--student_steps", "2", "--classifier_steps", "2",
          "--num_eval_samples", "10", "--sample_steps", "2", "--sample_grid_size", "2", "--seeds", "0",
          "--num_train_timesteps", "20", "--batch_size", "8", "--save_checkpoints", "false"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == ["teacher", *ARMS] and len(saved["runs"]) == 4
    assert saved["verdict"].startswith("Distillation: ") and "Wavelet gating: " in saved["verdict"]
    by_arm = {s["arm"]: s for s in saved["summary"]}
    assert by_arm["teacher"]["parameters_mean"] > by_arm[ARMS[0]]["parameters_mean"] > 0
    assert all(s["macs_mean"] > 0 and s["fd_mean"] >= 0 for s in saved["summary"])
    assert (out / "report.png").is_file() and "| teacher |" in (out / "report.md").read_text()
    for arm, folder in saved["models"].items():
        unet = WaveletGatedUNet2DModel.from_pretrained(out / folder)
        assert unet.config.use_wavelet_gating == ("WG" in arm)
        scheduler = DDPMScheduler.from_pretrained(out / folder, subfolder="scheduler")
        images = DDPMPipeline(unet=unet, scheduler=scheduler)(batch_size=1, num_inference_steps=20, output_type="np")
        assert images.images.shape == (1, 8, 8, 1)
        assert ModelCard.load(out / folder / "README.md").data.library_name == "diffusers"
    pushed = push_run(out, "tester/sd-digits")
    assert pushed == {"teacher": "tester/sd-digits-teacher", "student": "tester/sd-digits",
                      "student-ddpm-only": "tester/sd-digits-ddpm-only",
                      "student-no-wavelet-gating": "tester/sd-digits-no-wavelet-gating"}  # fmt: skip
    card = ModelCard.load("tester/sd-digits")
    assert card.data.library_name == "diffusers" and card.data.base_model == "tester/sd-digits-teacher"
    assert 'from_pretrained("tester/sd-digits")' in card.text and "spectral-diffusion" in card.data.tags
    again = WaveletGatedUNet2DModel.from_pretrained("tester/sd-digits")
    local = WaveletGatedUNet2DModel.from_pretrained(out / "student")
    torch.testing.assert_close(again.conv_out.weight, local.conv_out.weight, rtol=0, atol=0)
    teacher = DDPMPipeline.from_pretrained("tester/sd-digits-teacher")
    assert teacher.unet.config.block_out_channels == [8, 16]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"student_block_out_channels": [8, 16, 16]}, "as many levels"),
        ({"student_block_out_channels": [6, 8]}, "multiples of 4"),
        ({"lambda_spatial": 0.0, "lambda_frequency": 0.0}, "would not distill"),
        ({"num_eval_samples": 3}, "num_eval_samples"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        SpectralDiffusionRecipe(output_dir=str(tmp_path / "run"), **overrides)
