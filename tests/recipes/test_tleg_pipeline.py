import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as T
import yaml
from huggingface_hub import ModelCard

import hf_methods  # noqa: F401
from hf_methods.recipe import parse_recipe
from hf_methods.recipes.tleg.pipeline import DEFAULT_RECIPE, TLEGRecipe

TINY = {
    "image_size": 8,
    "patch_size": 4,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "teacher_num_layers": 2,
    "teacher_epochs": 1,
    "aux_num_layers": 3,
    "distill_epochs": 1,
    "depths": [1, 3],
    "finetune_epochs": 1,
    "batch_size": 32,
    "max_train_samples": 96,
}


def test_cli_runs_a_tiny_recipe_end_to_end(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_methods.cli",
            "tleg",
            "--config",
            str(recipe),
            "--output_dir",
            str(out),
            "--finetune_epochs",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("TLEG done") and str(out) in last
    assert "[9/9]" in proc.stdout  # 2 + 2 per depth + one per baseline at depth 1 (depth 3 > the teacher's 2 layers)

    report = json.loads((out / "report.json").read_text())
    assert [r["depth"] for r in report["descendants"]] == [1, 3]
    assert report["recipe"]["finetune_epochs"] == 2  # the command-line override won over the YAML
    for row in report["descendants"]:
        assert [p["epoch"] for p in row["learngene"]["curve"]] == [0, 1, 2]
        assert len(row["scratch"]["curve"]) == 3
    shallow, deep = report["descendants"]
    assert shallow["baselines"] == ["first", "even", "kd"] and deep["baselines"] == []  # depths <= the teacher's
    for name in ("first", "even", "kd"):
        assert [p["epoch"] for p in shallow[name]["curve"]] == [0, 1, 2]
        assert shallow[name]["final_accuracy"] == shallow[name]["curve"][-1]["accuracy"]
        assert shallow[name]["teacher_layers"] == [0] and name not in deep
    baseline_choices = [c for c in report["choices"] if c["method"] not in ("TLEG", "scratch")]
    assert [(c["method"], c["name"]) for c in baseline_choices] == [
        ("teacher layers (first)", "depth 1"),
        ("teacher layers (even)", "depth 1"),
        ("KD into teacher layers (even)", "depth 1"),
    ]
    assert all(c["stored_params"] == c["params"] == shallow["params"] for c in baseline_choices)
    assert baseline_choices[1]["accuracy"] == shallow["even"]["final_accuracy"]
    assert baseline_choices[2]["accuracy"] == shallow["kd"]["final_accuracy"]
    gene_params = report["learngene"]["params"]
    assert report["stored_ratio"] == pytest.approx(sum(r["params"] for r in report["descendants"]) / gene_params)
    assert (out / "report.png").stat().st_size > 10_000
    markdown = (out / "report.md").read_text()
    assert "Stored-parameter ratio" in markdown
    assert (
        "final accuracy, teacher layers (first) | final accuracy, teacher layers (even) | "
        "final accuracy, KD into teacher layers (even) |"
    ) in markdown
    assert f"| {shallow['first']['final_accuracy']:.3f} | {shallow['even']['final_accuracy']:.3f} |" in markdown
    assert "- depth 1: learngene " in markdown and "- depth 3:" not in markdown  # one verdict per baselined depth
    assert not (out / "_trainer").exists()

    learngene = T.AutoModel.from_pretrained(out / "learngene")
    assert learngene.learngene_num_parameters() == gene_params
    card = ModelCard.load(out / "learngene" / "README.md")
    assert card.data.library_name == "hf-methods" and "tleg" in card.data.tags
    assert card.data.eval_results[0].metric_value == round(report["learngene"]["aux_accuracy"], 4)

    desc = T.AutoModelForImageClassification.from_pretrained(out / "descendants" / "depth-3")
    assert type(desc) is T.ViTForImageClassification and desc.config.num_hidden_layers == 3
    desc_card = ModelCard.load(out / "descendants" / "depth-3" / "README.md")
    assert "learngene" in desc_card.data.tags and "Ancestry" in desc_card.text
    teacher = T.AutoModelForImageClassification.from_pretrained(out / "teacher")
    assert teacher.config.num_hidden_layers == 2
    # the saved descendant is the fine-tuned model: not equal to a fresh expansion of the learngene
    fresh = learngene.expand(3)
    assert not torch.equal(fresh.vit.layers[1].mlp.fc1.weight, desc.vit.layers[1].mlp.fc1.weight)


def test_baselines_start_from_the_teachers_layers_and_leave_the_other_stages_alone(tmp_path, monkeypatch):
    from hf_methods.engine.architectures import layer_list, spec_for
    from hf_methods.recipes import learngene_pipeline

    initial = []  # (layer_selection, state dict before fine-tuning) of every model the pipeline fine-tunes
    trainers = []  # (layer_selection, trainer class, alpha) of the same
    train = learngene_pipeline.train_and_evaluate

    def recording(model, *args, **kwargs):
        selection = getattr(model.config, "layer_selection", None)
        initial.append((selection, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        trainers.append((selection, kwargs.get("trainer_cls"), getattr(args[0], "alpha", None)))
        return train(model, *args, **kwargs)

    monkeypatch.setattr(learngene_pipeline, "train_and_evaluate", recording)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "teacher_num_layers": 4, "depths": [1, 2]}))
    with_baselines = learngene_pipeline.main(["--config", str(config), "--output_dir", str(tmp_path / "a")])
    selected = [(sel, state) for sel, state in initial if sel]
    assert [sel["strategy"] for sel, _ in selected] == ["first", "even", "even"] * 2  # kd distills the even one
    assert [sel["layers"] for sel, _ in selected] == [[0], [0], [0], [0, 1], [0, 2], [0, 2]]  # depth 1, depth 2

    # saved for RGB input (pipeline-ready): its patch weights are split over R, G, B; summed back to within rounding
    from hf_methods.data import gray_input

    teacher = gray_input(T.ViTForImageClassification.from_pretrained(tmp_path / "a" / "teacher"))
    spec = spec_for("vit")
    prefix, teacher_layers = layer_list(teacher, spec)
    for sel, state in selected:
        for i, t in enumerate(sel["layers"]):
            for name, value in teacher_layers[t].state_dict().items():
                assert torch.equal(state[f"{prefix}.{i}.{name}"], value), (sel["strategy"], i, name)
        for name, value in teacher.state_dict().items():  # embeddings, final norm and head too
            if not name.startswith(prefix + "."):
                assert (
                    torch.allclose(state[name], value, rtol=0, atol=1e-7)
                    if "patch" in name
                    else torch.equal(state[name], value)
                ), name

    config.write_text(yaml.safe_dump({**TINY, "teacher_num_layers": 4, "depths": [1, 2], "baselines": []}))
    # an empty list disables them; learngene and scratch figures (depth 2's come after depth 1's baselines) are the
    # same either way
    without = learngene_pipeline.main(["--config", str(config), "--output_dir", str(tmp_path / "b")])
    assert [row["baselines"] for row in without["descendants"]] == [[], []]
    assert without["choices"] == [c for c in with_baselines["choices"] if c["method"] in ("TLEG", "scratch")]
    kinds = [(cls.__name__ if cls else None, alpha) for sel, cls, alpha in trainers if sel]
    assert kinds == [(None, None), (None, None), ("DistillationTrainer", 0.5)] * 2  # kd: soft + hard labels
    for row, other in zip(with_baselines["descendants"], without["descendants"]):
        for kind in ("learngene", "scratch"):  # all but the wall-clock step time
            assert {k: v for k, v in row[kind].items() if k != "step_time_s"} == {
                k: v for k, v in other[kind].items() if k != "step_time_s"
            }
    with pytest.raises(ValueError, match="baselines must list"):
        parse_recipe(TLEGRecipe, ["--baselines", "last"], default_config=DEFAULT_RECIPE)


def test_recipe_fields_and_overrides(tmp_path):
    (recipe,) = parse_recipe(TLEGRecipe, ["--depths", "2", "5", "--seed", "3"], default_config=DEFAULT_RECIPE)
    assert recipe.depths == [2, 5] and recipe.seed == 3 and recipe.aux_num_layers == 12
    bad = tmp_path / "bad.yaml"
    bad.write_text("depth: [2]\n")
    with pytest.raises(SystemExit, match=r"unknown field\(s\) \['depth'\]"):
        parse_recipe(TLEGRecipe, ["--config", str(bad)])
    with pytest.raises(ValueError, match="depths must be positive"):
        parse_recipe(TLEGRecipe, ["--depths", "0"], default_config=DEFAULT_RECIPE)


def test_default_recipe_is_packaged():
    assert Path(str(DEFAULT_RECIPE)).is_file()
    assert set(yaml.safe_load(Path(str(DEFAULT_RECIPE)).read_text())) <= {f for f in TLEGRecipe.__dataclass_fields__}


def _first_traceback_and_tail(stderr: str) -> str:
    """The first traceback (the rank that failed first; the others then fail in a collective) and the end."""
    start = stderr.find("Traceback")
    return (stderr[start : start + 5000] + "\n[...]\n" if start >= 0 else "") + stderr[-3000:]


def test_pipeline_under_accelerate_launch_with_two_processes(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "depths": [2]}))
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
            "hf_methods.recipes.tleg.pipeline",
            "--config",
            str(recipe),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, _first_traceback_and_tail(proc.stderr)
    assert proc.stdout.count("[1/7]") == 1  # only the main process speaks
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stderr  # a real 2-rank DDP run
    assert (out / "descendants" / "depth-2" / "model.safetensors").is_file()


def test_recipe_push_to_hub_and_the_push_command(fake_hub, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "depths": [1, 2], "push_to_hub": True, "hub_model_id": "tester/run"}))
    out = tmp_path / "run"
    env = {
        **os.environ,
        "HF_ENDPOINT": fake_hub.endpoint,
        "HF_TOKEN": "hf_test_token",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "hf_methods.cli", "tleg", "--config", str(recipe), "--output_dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"tester/run", "tester/run-teacher", "tester/run-depth-1", "tester/run-depth-2"} <= set(fake_hub.repos)
    gene_card = ModelCard.load("tester/run")
    assert gene_card.data.base_model == "tester/run-teacher"  # the trained teacher was pushed first
    assert "tester/run-depth-2" in gene_card.text
    desc_card = ModelCard.load("tester/run-depth-2")
    assert desc_card.data.base_model == "tester/run"
    report = json.loads((out / "report.json").read_text())
    row = next(r for r in report["descendants"] if r["depth"] == 2)
    assert desc_card.data.eval_results[0].metric_value == round(row["learngene"]["final_accuracy"], 4)
    pushed = T.AutoModelForImageClassification.from_pretrained("tester/run-depth-2")
    local = T.AutoModelForImageClassification.from_pretrained(out / "descendants" / "depth-2")
    for key, value in local.state_dict().items():
        assert torch.equal(pushed.state_dict()[key], value), key

    proc = subprocess.run(
        [sys.executable, "-m", "hf_methods.cli", "push", str(out), "--repo-id", "tester/again", "--private"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "learngene -> tester/again" in proc.stdout
    assert fake_hub.repos["tester/again"].private and fake_hub.repos["tester/again-depth-1"].private
    from hf_methods.cli import main as cli

    with pytest.raises(SystemExit) as exited:  # in process: one interpreter start-up fewer
        cli(["push", str(tmp_path), "--repo-id", "tester/x"])
    assert exited.value.code == 2 and "no report.json" in capsys.readouterr().err


def _uninterrupted(tmp_path_factory, recipe: dict):
    """An uninterrupted run of `recipe` (its config file, its output folder, its results), run once per module."""
    from hf_methods.recipes import learngene_pipeline

    root = tmp_path_factory.mktemp("uninterrupted")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    return (
        config,
        root / "whole",
        learngene_pipeline.main(["--config", str(config), "--output_dir", str(root / "whole")]),
    )


@pytest.fixture(scope="module")
def whole_two_depths(tmp_path_factory):
    return _uninterrupted(tmp_path_factory, {**TINY, "depths": [1, 3]})


@pytest.fixture(scope="module")
def whole_with_checkpoints(tmp_path_factory):
    return _uninterrupted(tmp_path_factory, {**TINY, "teacher_epochs": 2, "distill_epochs": 2, "depths": [1]})


@pytest.mark.parametrize("killed_after", [0, 1, 4, 7])
def test_a_killed_run_continues_to_the_result_of_an_uninterrupted_one(
    tmp_path, monkeypatch, killed_after, whole_two_depths
):
    """Killed after the teacher (0 of the pipeline's trainings: the teacher's is in hf_methods.recipe), after the
    learngene (1), inside depth 1's baselines (4) or before depth 3's scratch model (7): the rerun takes the finished
    stages from out/_stages and ends with the same report and weights (as the uninterrupted run, made once)."""
    from safetensors.torch import load_file

    from hf_methods.recipes import learngene_pipeline

    config, whole_dir, whole = whole_two_depths

    train, calls = learngene_pipeline.train_and_evaluate, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) > killed_after:
            raise KeyboardInterrupt("killed")
        return train(*args, **kwargs)

    out = tmp_path / "resumed"
    argv = ["--config", str(config), "--output_dir", str(out)]
    monkeypatch.setattr(learngene_pipeline, "train_and_evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        learngene_pipeline.main(argv)
    assert not (out / "report.json").exists() and (out / "_stages").is_dir()
    monkeypatch.setattr(learngene_pipeline, "train_and_evaluate", train)
    calls.clear()
    resumed = learngene_pipeline.main(argv)

    def same(report):
        text = json.dumps({k: v for k, v in report.items() if k not in ("elapsed_s", "recipe", "training_setup")})
        return json.loads(text.replace(str(out), "OUT").replace(str(whole_dir), "OUT"))

    def without_times(value):
        if isinstance(value, dict):
            return {k: without_times(v) for k, v in value.items() if k != "step_time_s"}
        return [without_times(v) for v in value] if isinstance(value, list) else value

    assert without_times(same(resumed)) == without_times(same(whole))
    for folder in ("teacher", "learngene", "descendants/depth-1", "descendants/depth-3"):
        a, b = (
            load_file(whole_dir / folder / "model.safetensors"),
            load_file(out / folder / "model.safetensors"),
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    assert not (out / "_stages").exists() and json.loads((out / "report.json").read_text())["method"] == "TLEG"


@pytest.mark.parametrize("checkpoints", [1, 3])
def test_a_run_killed_inside_a_stage_continues_from_its_last_checkpoint(
    tmp_path, monkeypatch, capsys, checkpoints, whole_with_checkpoints
):
    """Killed right after the teacher's first epoch (its checkpoint 1 of 2) or the learngene distillation's first
    (checkpoint 3: the teacher's two, then one): the rerun continues that training from its checkpoint, not from the
    stage's start, and ends with the report and weights of an uninterrupted run (made once)."""
    from killed_runs import comparable, kill_after_checkpoints, same_weights

    from hf_methods.recipes import learngene_pipeline

    config, whole_dir, whole = whole_with_checkpoints
    out = tmp_path / "resumed"
    argv = ["--config", str(config), "--output_dir", str(out)]
    with monkeypatch.context() as patch:
        kill_after_checkpoints(patch, checkpoints)
        with pytest.raises(KeyboardInterrupt):
            learngene_pipeline.main(argv)
    assert len(list((out / "_trainer").glob("*/checkpoint-*"))) == 1  # the interrupted training's last one
    capsys.readouterr()
    resumed = learngene_pipeline.main(argv)
    assert "continuing from checkpoint-" in capsys.readouterr().out
    assert comparable(resumed, out) == comparable(whole, whole_dir)
    for folder in ("teacher", "learngene", "descendants/depth-1"):
        assert same_weights(whole_dir / folder, out / folder), folder
    assert not (out / "_trainer").exists() and not (out / "_stages").exists()


def test_saved_models_work_with_pipeline_and_their_cards_run_from_anywhere(tmp_path):
    """What a new user does with a run folder: `pipeline("image-classification")` on a descendant and on the teacher
    (their image processor is saved beside them; the one-channel models read the RGB images pipeline() makes, with
    the outputs of the trained model), and the cards' snippets pasted into a script run from another directory."""
    import re

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from hf_methods.data import gray_input
    from hf_methods.recipes import learngene_pipeline

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "depths": [1]}))
    out = tmp_path / "run"
    learngene_pipeline.main(["--config", str(config), "--output_dir", str(out)])
    raw = load_digits().images[:16]
    images = [Image.fromarray(np.round(a * 255 / 16).astype(np.uint8)) for a in raw]  # grayscale, white on black
    size = TINY["image_size"]
    as_trained = torch.nn.functional.interpolate(  # what `hf_methods.data.digits` made of them for training
        torch.tensor(raw, dtype=torch.float32).unsqueeze(1) / 16, size=(size, size), mode="bilinear"
    )
    for folder in ("descendants/depth-1", "teacher"):
        model = T.AutoModelForImageClassification.from_pretrained(out / folder).eval()
        processor = T.AutoImageProcessor.from_pretrained(out / folder)
        with torch.no_grad():
            fed = model(**processor([i.convert("RGB") for i in images], return_tensors="pt")).logits
            trained = gray_input(model).eval()(pixel_values=(as_trained - 0.5) / 0.5).logits
        assert torch.allclose(fed, trained, atol=0.05), (folder, (fed - trained).abs().max())
        predictions = T.pipeline("image-classification", model=str(out / folder))(images[0])
        assert predictions and {p["label"] for p in predictions} <= {str(d) for d in range(10)}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    images[0].save(elsewhere / "digit.png")
    snippets = []
    for folder in ("teacher", "learngene", "descendants/depth-1"):
        card = (out / folder / "README.md").read_text()
        assert str(out.resolve() / folder) in card, folder
        snippets += [(folder, snippet) for snippet in re.findall(r"```python\n(.*?)```", card, re.S)]
    assert len(snippets) >= 3
    # one interpreter runs every snippet, each with fresh globals, as if pasted into its own script elsewhere
    runner = (
        "import sys, json\nfor folder, snippet in json.load(sys.stdin):\n    print('running', folder, flush=True)\n"
    )
    runner += "    exec(compile(snippet, folder, 'exec'), {'__name__': '__main__'})\n"
    proc = subprocess.run([sys.executable, "-c", runner], input=json.dumps(snippets), cwd=elsewhere,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout[-500:], proc.stderr[-2000:])
    value = ModelCard.load(out / "descendants" / "depth-1" / "README.md").data.eval_results[0].metric_value
    assert value == round(value, 4)  # model-index values are rounded
