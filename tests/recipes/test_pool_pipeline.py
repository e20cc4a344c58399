import json
import os
import subprocess
import sys

import pytest
import torch
import transformers as T
import yaml
from huggingface_hub import ModelCard
from PIL import Image

import hf_methods  # noqa: F401
from hf_methods import LearngenePoolModel, StitchedViTForImageClassification
from hf_methods.hub import push_run
from hf_methods.pareto import load_entries, pareto_front
from hf_methods.recipe import parse_recipe
from hf_methods.recipes.learngene_pool.pipeline import DEFAULT_RECIPE, PoolRecipe
from hf_methods.trainers import load_feature_projectors

TINY = {
    "image_size": 8,
    "patch_size": 4,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "teacher_num_layers": 3,
    "teacher_epochs": 1,
    "instance_num_layers": 3,
    "instance_hidden_sizes": [8, 16],
    "instance_num_attention_heads": [2, 2],
    "instance_feature_positions": ["[front,end]", "[end]"],
    "distill_epochs": 1,
    "pool_epochs": 1,
    "calibration_samples": 64,
    "batch_size": 32,
    "max_train_samples": 96,
}


def _run(tmp_path, *extra):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hf_methods.cli", "pool", "--config", str(recipe), "--output_dir", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_pool_cli_runs_a_tiny_recipe_end_to_end(tmp_path, fake_hub):
    out, proc = _run(tmp_path)
    assert proc.stdout.strip().splitlines()[-1].startswith("Learngene Pool done")
    assert "[6/6]" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["pool"]["num_configs"] == 2 + (3 * 3 - 2)  # two singletons + 3n-2 stitches of the one pair
    assert set(report["stitch_init_comparison"]) == {"projector", "least_squares", "random"}
    for name in ("report.md", "pareto.md", "pareto.png", "pareto.json"):
        assert (out / name).stat().st_size > 0

    # stage 1 left the projectors beside each instance
    projectors = load_feature_projectors(out / "instances" / "instance-0")
    assert projectors["student_layers"] == [0, 1, 2] and projectors["teacher_layers"] == [0, 1, 2]

    # every exported network is the pool running that configuration, saved for the RGB images pipeline() makes (a
    # gray image, R = G = B, gives the one-channel network's outputs) with its image processor
    from hf_methods.data import gray_input

    pool = T.AutoModel.from_pretrained(out / "pool").eval()
    assert type(pool) is LearngenePoolModel
    pixels = torch.randn(4, 1, 8, 8)
    for row in report["configs"]:
        folder = out / "stitched" / f"config-{row['id']}"
        model = T.AutoModelForImageClassification.from_pretrained(folder).eval()
        assert (folder / "preprocessor_config.json").is_file() and (folder / "README.md").is_file()
        if row["j"] is not None:
            assert type(model) is StitchedViTForImageClassification and model.config.num_hidden_layers == row["depth"]
        assert sum(p.numel() for p in gray_input(model).parameters()) == row["params"]
        with torch.no_grad():
            torch.testing.assert_close(
                model(pixel_values=pixels.repeat(1, 3, 1, 1)).logits,
                pool(pixel_values=pixels, stitch_config_id=row["id"]).logits,
            )
    assert T.pipeline("image-classification", model=str(folder))(Image.new("L", (8, 8)))  # a blank digit

    # `hf-methods choose` picks from the report
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    budget = sorted(r["params"] for r in report["configs"])[3]
    chosen = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_methods.cli",
            "choose",
            str(out / "report.json"),
            "--budget-params",
            str(budget),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert chosen.returncode == 0, chosen.stderr
    pick = json.loads(chosen.stdout)
    fitting = [r for r in report["configs"] if r["params"] <= budget]
    assert pick["accuracy"] == max(r["accuracy"] for r in fitting) and pick["params"] <= budget
    assert os.path.isdir(pick["path"])

    # cards on disk, and `hf-methods push`: the pool plus the networks on the Pareto front, each with its card
    assert "Learngene Pool" in ModelCard.load(out / "pool" / "README.md").text
    pushed = push_run(out, "tester/pool")
    front = {int(e["path"].rsplit("-", 1)[1]) for e in pareto_front(load_entries([out / "report.json"]), "params")}
    assert set(pushed) == {"teacher", "pool", *(f"config-{i}" for i in front)}
    pool_card = ModelCard.load("tester/pool")
    assert pool_card.data.base_model == "tester/pool-teacher"
    assert all(f"tester/pool-config-{i}" in pool_card.text for i in front)
    cid = max(front)
    net_card = ModelCard.load(f"tester/pool-config-{cid}")
    assert net_card.data.base_model == "tester/pool" and "learngene-pool" in net_card.data.tags
    remote = T.AutoModelForImageClassification.from_pretrained(f"tester/pool-config-{cid}").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            remote(pixel_values=pixels.repeat(1, 3, 1, 1)).logits,
            pool(pixel_values=pixels, stitch_config_id=cid).logits,
        )
    assert T.AutoImageProcessor.from_pretrained(f"tester/pool-config-{cid}").size["height"] == 8  # pushed along


def test_pool_recipe_under_accelerate_launch_with_two_processes(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "stitch_init": "projector"}))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--main_process_port",
            "0",
            "-m",
            "hf_methods.recipes.learngene_pool.pipeline",
            "--config",
            str(recipe),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Learngene Pool done") == 1  # only the main process reports and writes
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stderr  # a real 2-rank DDP run
    report = json.loads((out / "report.json").read_text())
    assert len(list((out / "stitched").iterdir())) == report["pool"]["num_configs"] == 9


def test_pool_recipe_validation():
    (recipe,) = parse_recipe(PoolRecipe, [], default_config=DEFAULT_RECIPE)
    assert recipe.instance_hidden_sizes == [32, 64] and recipe.stitch_init == "least_squares"
    with pytest.raises(ValueError, match="one entry per instance"):
        parse_recipe(PoolRecipe, ["--instance_hidden_sizes", "8", "16", "32"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="push_to_hub needs hub_model_id"):
        parse_recipe(PoolRecipe, ["--push_to_hub", "true"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="stitch_init"):
        parse_recipe(PoolRecipe, ["--stitch_init", "lstsq"], default_config=DEFAULT_RECIPE)


@pytest.mark.parametrize(("killed_in", "after", "done"), [("train_and_evaluate", 1, 2), ("write_pareto_report", 0, 4)])
def test_a_killed_pool_run_continues_from_its_finished_stages(tmp_path, monkeypatch, capsys, killed_in, after, done):
    """Killed while distilling instance 1 (the teacher and instance 0 are done) or while writing the last report
    (the trained pool too): the rerun takes those from the folder (its stage lines say so) and ends with the report,
    pool and exported weights of an uninterrupted run."""
    from killed_runs import comparable, kill_and_rerun, same_weights

    from hf_methods.recipes.learngene_pool import pipeline

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    whole = pipeline.main(["--config", str(config), "--output_dir", str(tmp_path / "whole")])
    out = tmp_path / "resumed"
    capsys.readouterr()
    resumed = kill_and_rerun(
        monkeypatch, pipeline, killed_in, after, ["--config", str(config), "--output_dir", str(out)]
    )
    assert capsys.readouterr().out.split("[1/")[-1].count("(done by an earlier attempt of this run)") == done
    assert comparable(resumed, out) == comparable(whole, tmp_path / "whole")
    for folder in ["pool"] + [f"stitched/config-{row['id']}" for row in whole["configs"]]:
        assert same_weights(tmp_path / "whole" / folder, out / folder), folder
