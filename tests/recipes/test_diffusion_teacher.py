"""The diffusion recipes' shared teacher stage (`recipes/diffusion_teacher.py`) and helpers (`hf_methods.diffusion`):
a tiny DDPM trained as a resumable stage, saved as a DDPMPipeline folder that diffusers loads and samples, a given
teacher loaded and checked, the Fréchet distance against its closed form, sampling and grids."""

import pytest
import torch
from huggingface_hub import ModelCard

from hf_methods.diffusion import (
    DigitsFeatureNet,
    classifier_features,
    frechet_distance,
    gaussian_frechet_distance,
    image_grid,
    sample_images,
    sampling_scheduler,
    train_digits_classifier,
)
from hf_methods.recipe import RecipeError, Run
from hf_methods.recipes.diffusion_teacher import DiffusionTeacherRecipe, diffusion_teacher

TINY = dict(teacher_block_out_channels=[8, 16], teacher_steps=3, num_train_timesteps=20, sample_steps=2,
            sample_grid_size=2, batch_size=16, save_checkpoints=False)  # fmt: skip


def test_tiny_teacher_stage_saves_a_ddpm_pipeline_that_diffusers_loads_and_resumes(tmp_path):
    from diffusers import DDPMPipeline

    recipe = DiffusionTeacherRecipe(output_dir=str(tmp_path / "run"), **TINY)
    run = Run(recipe, stages=1)
    unet, scheduler = diffusion_teacher(run, recipe)
    folder = run.out / "teacher"
    assert (folder / "samples.png").is_file() and run.teacher_info["steps"] == 3
    assert not any(p.requires_grad for p in unet.parameters())
    pipe = DDPMPipeline.from_pretrained(folder, trust_remote_code=False)
    assert pipe.scheduler.config.num_train_timesteps == 20
    images = pipe(batch_size=2, num_inference_steps=20, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and ((images >= 0) & (images <= 1)).all()
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers" and "unconditional-image-generation" in card.data.tags
    # a rerun of the unfinished run takes the saved teacher instead of training again
    again = Run(recipe, stages=1)
    unet2, _ = diffusion_teacher(again, recipe)
    for a, b in zip(unet.state_dict().values(), unet2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same folder given as `teacher` is loaded, not trained; a size it does not generate is refused
    given = DiffusionTeacherRecipe(output_dir=str(tmp_path / "given"), teacher=str(folder), **TINY)
    unet3, scheduler3 = diffusion_teacher(Run(given, stages=1), given)
    assert scheduler3.config.beta_schedule == scheduler.config.beta_schedule
    torch.testing.assert_close(unet3.conv_in.weight, unet.conv_in.weight, rtol=0, atol=0)
    wrong = DiffusionTeacherRecipe(output_dir=str(tmp_path / "wrong"), teacher=str(folder), image_size=16)
    with pytest.raises(RecipeError, match="--image_size 8"):
        diffusion_teacher(Run(wrong, stages=1), wrong)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 32}, "image_size must be 8 or 16"),
        ({"teacher_block_out_channels": [8, 16, 16, 16, 16]}, "at most 4 levels"),
        ({"teacher_block_out_channels": [12, 16]}, "multiples of 8"),
        ({"beta_schedule": "cosine"}, "beta_schedule must be one of"),
        ({"teacher": "no/such/folder"}, "no such folder"),
    ],
)
def test_bad_teacher_fields_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DiffusionTeacherRecipe(output_dir=str(tmp_path / "r"), **overrides)


def test_frechet_distance_is_zero_for_identical_sets_positive_otherwise_and_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + 0.1) == pytest.approx(0.05, rel=1e-9)  # a mean shift adds ||shift||^2 exactly
    assert frechet_distance(a, 2 * a) > 0
    # Gaussians: diagonal (commuting) covariances have ||mu1 - mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    closed = float((mu1 - mu2).pow(2).sum() + (v1.sqrt() - v2.sqrt()).pow(2).sum())
    assert gaussian_frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(closed, rel=1e-9)
    # a rotation of both covariances changes nothing; a general pair matches scipy's matrix square root
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    rotated = gaussian_frechet_distance(q @ mu1.double(), q @ torch.diag(v1).double() @ q.T, q @ mu2.double(),
                                        q @ torch.diag(v2).double() @ q.T)  # fmt: skip
    assert rotated == pytest.approx(closed, rel=1e-9)
    import scipy.linalg

    m1, m2 = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)
    c1, c2 = m1 @ m1.T, m2 @ m2.T
    ref = float(c1.trace() + c2.trace() - 2 * scipy.linalg.sqrtm((c1 @ c2).numpy()).real.trace())
    assert gaussian_frechet_distance(torch.zeros(3), c1, torch.zeros(3), c2) == pytest.approx(ref, rel=1e-6)
    # on samples the estimate approaches the population value: N(0, 1) vs N(1, 4) in 1-D is 1 + (1 - 2)^2 = 2
    x, y = torch.randn(20000, 1, generator=g), 1 + 2 * torch.randn(20000, 1, generator=g)
    assert frechet_distance(x, y) == pytest.approx(2.0, abs=0.1)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(a, a[:, :3])


def test_sampling_schedulers_grids_and_the_feature_classifier():
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    scheduler = DDPMScheduler(num_train_timesteps=20)
    assert isinstance(sampling_scheduler(scheduler, 5), DDIMScheduler)
    full = sampling_scheduler(scheduler, None)
    assert isinstance(full, DDPMScheduler) and len(full.timesteps) == 20
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, layers_per_block=1,
                       norm_num_groups=8, add_attention=False)  # fmt: skip
    images = sample_images(unet, scheduler, 3, num_inference_steps=4, seed=1, batch_size=2)
    assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1
    torch.testing.assert_close(images, sample_images(unet, scheduler, 3, num_inference_steps=4, seed=1))
    grid = image_grid(images, nrow=2, scale=2)
    assert grid.size == (2 * (2 * 9 + 1), 2 * (2 * 9 + 1)) and grid.mode == "L"
    labels = torch.arange(3)
    model = train_digits_classifier(images, labels, steps=2, batch_size=3)
    assert isinstance(model, DigitsFeatureNet) and classifier_features(model, images).shape == (3, 32)
