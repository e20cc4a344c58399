"""The RepFusion recipe end to end at a tiny size: teacher, per seed three arms, the report with the learned timestep
distribution, the fine-tuned student saved with its card, and `hf-methods push` (teacher + student)."""

import json

import pytest
from huggingface_hub import HfApi, ModelCard

from hf_methods.hub import push_run
from hf_methods.models.convnets import VGGForImageClassification
from hf_methods.recipe import RecipeError

pytest.importorskip("diffusers")

from hf_methods.recipes.repfusion.pipeline import REPFUSION, RepFusionRecipe, main  # noqa: E402

TINY = ["--teacher_steps", "2", "--teacher_block_out_channels", "8", "16", "--pretrain_epochs", "1",
        "--finetune_epochs", "1", "--labels_per_class", "2", "--hidden_sizes", "4", "8", "--sample_grid_size", "2",
        "--sample_steps", "2", "--policy_num_timesteps", "10", "--fixed_timesteps", "0"]  # fmt: skip


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--seeds", "0", "1", *TINY])
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == ["from scratch", "fixed t = 0", REPFUSION]
    assert len(saved["runs"]) == 6 and saved["verdict"].startswith(REPFUSION)
    assert len(saved["timestep_distribution"]) == 10 and abs(sum(saved["timestep_distribution"]) - 1) < 1e-4
    assert saved["timestep_grid"][:2] == [0, 100] and len(saved["teacher_probe"]["accuracy"]) == 10
    assert all(0 <= r["linear_probe"] <= 1 for r in saved["runs"])
    assert (out / "report.png").is_file() and "| RepFusion (policy) |" in (out / "report.md").read_text()
    model = VGGForImageClassification.from_pretrained(out / "student", trust_remote_code=False)
    assert model.config.num_labels == 10 and model.config.hidden_sizes == [4, 8]
    assert (out / "teacher" / "model_index.json").is_file()
    assert push_run(out, "tester/repfusion-digits") == {
        "teacher": "tester/repfusion-digits-teacher",
        "student": "tester/repfusion-digits",
    }
    assert "unet/diffusion_pytorch_model.safetensors" in HfApi().list_repo_files("tester/repfusion-digits-teacher")
    card = ModelCard.load("tester/repfusion-digits")
    assert "repfusion" in card.data.tags and "test accuracy (mean over seeds)" in card.text


def test_bad_recipe_fields(tmp_path):
    with pytest.raises(ValueError, match="policy_num_timesteps"):
        RepFusionRecipe(policy_num_timesteps=2000)
    with pytest.raises(ValueError, match="fixed_timesteps"):
        RepFusionRecipe(fixed_timesteps=[1000])
    with pytest.raises(RecipeError, match="mid_block.resnets.1.conv2"):
        main(["--output_dir", str(tmp_path / "bad"), "--seeds", "0", *TINY, "--teacher_hook", "mid_block.nope"])
