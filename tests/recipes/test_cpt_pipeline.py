import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import GPT2LMHeadModel

from hf_methods.hub import push_run
from hf_methods.models.proxy_tuned import ProxyTunedForCausalLM
from hf_methods.recipe import parse_recipe
from hf_methods.recipes.cpt import pipeline
from hf_methods.recipes.cpt.pipeline import DEFAULT_RECIPE, CPTRecipe

TINY = {
    "num_symbols": 6,
    "lines_per_example": 3,
    "general_examples": 128,
    "target_train_examples": 32,
    "eval_examples": 32,
    "large_hidden_size": 16,
    "large_num_layers": 1,
    "large_num_heads": 2,
    "large_steps": 8,
    "small_hidden_size": 8,
    "small_num_layers": 1,
    "small_num_heads": 2,
    "small_steps": 4,
    "proxy_steps": 4,
    "batch_size": 16,
}


def test_cpt_recipe_runs_a_tiny_config_end_to_end_then_pushes(tmp_path, fake_hub):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hf_methods.recipes.cpt.pipeline", "--config", str(recipe), "--output_dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("CPT done") and "plain Proxy-tuning" in lines[-1]
    stages = [line[:5] for line in lines[:-1] if re.match(r"\[\d+/\d+\]", line)]  # not other libraries' log lines
    assert stages == [f"[{i}/6]" for i in range(1, 7)]

    report = json.loads((out / "report.json").read_text())
    rows = report["target_eval"]
    assert set(rows) == {"large", "small", "cpt", "plain", "cpt_proxy_alone", "plain_proxy_alone"}
    assert all(math.isfinite(r["loss"]) and 0 <= r["answer_accuracy"] <= 1 for r in rows.values())
    assert report["cpt_no_worse_than_plain"] == (rows["cpt"]["loss"] <= rows["plain"]["loss"])
    assert len(report["examples"]) == 3 and (out / "report.md").stat().st_size > 0
    assert not (out / "_trainer").exists()

    # the proxy-tuned models are saved by reference, and reload to the model the report scored
    for name in ("cpt", "plain"):
        folder = out / f"proxy-tuned-{name}"
        weights = [
            os.path.relpath(os.path.join(r, f), folder)
            for r, _, fs in os.walk(folder)
            for f in fs
            if f.endswith(".safetensors")
        ]
        assert weights == [os.path.join("proxy", "model.safetensors")]
        assert "held-out target loss" in (folder / "README.md").read_text()
        model = ProxyTunedForCausalLM.from_pretrained(folder)
        assert os.path.samefile(model.config.large_model_name_or_path, out / "large")
        recipe_obj = CPTRecipe(**TINY)
        rng = np.random.default_rng(recipe_obj.seed)
        vocab, tables = pipeline.vocabulary(recipe_obj), pipeline.fact_tables(recipe_obj)
        for n in (recipe_obj.general_examples, recipe_obj.eval_examples):  # the general texts are drawn first
            pipeline.make_text(n, recipe_obj.functions, recipe_obj.function_weights, tables, recipe_obj, rng)
        pipeline.make_text(recipe_obj.target_train_examples, recipe_obj.target_functions, None, tables, recipe_obj, rng)
        held_out = pipeline.encode(
            pipeline.make_text(recipe_obj.eval_examples, recipe_obj.target_functions, None, tables, recipe_obj, rng),
            vocab,
        )
        scored = pipeline.score(model, held_out, pipeline.answer_positions(recipe_obj))
        assert scored["loss"] == pytest.approx(rows[name]["loss"], rel=1e-5)
    assert "large model" in (out / "large" / "README.md").read_text()

    # `hf-methods push`: the large and small models first, then the proxy-tuned models referring to their Hub copies
    pushed = push_run(out, "tester/cpt")
    assert pushed == {
        "large": "tester/cpt-large",
        "small": "tester/cpt-small",
        "proxy-tuned-cpt": "tester/cpt",
        "proxy-tuned-plain": "tester/cpt-plain",
    }
    remote = ProxyTunedForCausalLM.from_pretrained("tester/cpt")
    assert remote.config.large_model_name_or_path == "tester/cpt-large"
    assert remote.config.small_model_name_or_path == "tester/cpt-small"
    local = ProxyTunedForCausalLM.from_pretrained(out / "proxy-tuned-cpt")
    ids = torch.tensor([held_out[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(remote(input_ids=ids).logits, local(input_ids=ids).logits)
    card = ModelCard.load("tester/cpt")
    assert card.data.base_model == "tester/cpt-large" and "held-out target loss" in card.text
    assert ModelCard.load("tester/cpt-plain").data.base_model == "tester/cpt-large"
    large_card = ModelCard.load("tester/cpt-large")
    assert "tester/cpt-large" in large_card.text and "cpt" in large_card.data.tags
    small = GPT2LMHeadModel.from_pretrained("tester/cpt-small")
    assert torch.equal(small.lm_head.weight, GPT2LMHeadModel.from_pretrained(out / "small").lm_head.weight)


def test_cpt_recipe_validation():
    (recipe,) = parse_recipe(CPTRecipe, [], default_config=DEFAULT_RECIPE)
    assert recipe.target_functions == "H" and recipe.alpha_train == recipe.alpha_test == 1.0
    with pytest.raises(ValueError, match="function_weights"):
        parse_recipe(CPTRecipe, ["--function_weights", "1", "2"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="target_functions"):
        parse_recipe(CPTRecipe, ["--target_functions", "h"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="num_symbols"):
        parse_recipe(CPTRecipe, ["--num_symbols", "40"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="divisible"):
        parse_recipe(CPTRecipe, ["--large_num_heads", "3"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="num_threads"):
        parse_recipe(CPTRecipe, ["--num_threads", "0"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="push_to_hub needs hub_model_id"):
        parse_recipe(CPTRecipe, ["--push_to_hub", "true"], default_config=DEFAULT_RECIPE)


def test_the_renamed_thread_field_names_its_new_name(tmp_path):
    (recipe,) = parse_recipe(CPTRecipe, ["--num_threads", "2"], default_config=DEFAULT_RECIPE)
    assert recipe.num_threads == 2
    assert parse_recipe(CPTRecipe, [], default_config=DEFAULT_RECIPE)[0].num_threads == 1
    with pytest.raises(SystemExit, match="`torch_threads` was renamed to `num_threads`"):
        parse_recipe(CPTRecipe, ["--torch_threads", "2"], default_config=DEFAULT_RECIPE)
    with pytest.raises(SystemExit, match="`torch_threads` was renamed"):
        parse_recipe(CPTRecipe, ["--torch_threads=2"], default_config=DEFAULT_RECIPE)
    old = tmp_path / "old.yaml"
    old.write_text("torch_threads: 1\n")
    with pytest.raises(SystemExit, match="`torch_threads` was renamed to `num_threads`"):
        parse_recipe(CPTRecipe, ["--config", str(old)])


def test_a_killed_cpt_run_continues_from_its_models_and_tuned_proxy(tmp_path, monkeypatch, capsys):
    """Killed while tuning the plain proxy (4th training: large, small, CPT proxy, plain proxy): the rerun takes the
    large and small models and the CPT-tuned proxy from the folder and ends with the scores, continuations and proxy
    weights of an uninterrupted run."""
    from killed_runs import comparable, kill_and_rerun, same_weights

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    whole = pipeline.main(["--config", str(config), "--output_dir", str(tmp_path / "whole")])
    out = tmp_path / "resumed"
    capsys.readouterr()
    resumed = kill_and_rerun(monkeypatch, pipeline, "train", 3, ["--config", str(config), "--output_dir", str(out)])
    assert capsys.readouterr().out.split("[1/6]")[-1].count("(done by an earlier attempt of this run)") == 3
    assert comparable(resumed, out) == comparable(whole, tmp_path / "whole")
    for folder in ("large", "small", "proxy-tuned-cpt/proxy", "proxy-tuned-plain/proxy"):
        assert same_weights(tmp_path / "whole" / folder, out / folder), folder
    tuned = ProxyTunedForCausalLM.from_pretrained(out / "proxy-tuned-cpt")
    assert os.path.samefile(tuned.large.name_or_path, out / "large")  # the final folder, not the stage's
