"""The shared recipe machinery: `parse_recipe` (the shipped recipes use the one vocabulary; a renamed field, in a YAML
recipe or as a flag, is a one-line error naming its new name), `RecipeArguments`, `training_args`, `Run`, and the
digits-on-canvas generator the L2D and RDD recipes share."""

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from hf_methods.data import digit_canvases
from hf_methods.recipe import CPU, RENAMED_FIELDS, RecipeArguments, Run, parse_recipe, train, training_args
from hf_methods.recipes.l2d.pipeline import DEFAULT_RECIPE as L2D_YAML
from hf_methods.recipes.l2d.pipeline import L2DRecipe
from hf_methods.recipes.learngene_pipeline import LearngeneRecipe
from hf_methods.recipes.learngene_pool.pipeline import DEFAULT_RECIPE as POOL_YAML
from hf_methods.recipes.learngene_pool.pipeline import PoolRecipe
from hf_methods.recipes.rdd.pipeline import DEFAULT_RECIPE as RDD_YAML
from hf_methods.recipes.rdd.pipeline import RDDRecipe
from hf_methods.recipes.sws.pipeline import DEFAULT_RECIPE as SWS_YAML
from hf_methods.recipes.tleg.pipeline import DEFAULT_RECIPE as TLEG_YAML
from hf_methods.trainers import DistillationConfig

RECIPES = [
    (LearngeneRecipe, TLEG_YAML, "distillation_alpha", "alpha", 1.0),
    (LearngeneRecipe, SWS_YAML, "distillation_alpha", "alpha", 1.0),
    (PoolRecipe, POOL_YAML, "distillation_alpha", "alpha", 0.9),
    (L2DRecipe, L2D_YAML, "softmax_temperature", "temperature", 1.0),
    (RDDRecipe, RDD_YAML, "kd_weight", "lambda_logits", 1.0),
]


@pytest.mark.parametrize("cls, yaml_path, old, new, value", RECIPES)
def test_shipped_recipes_use_the_new_names_with_the_same_values(cls, yaml_path, old, new, value):
    assert RENAMED_FIELDS[old] == new and old not in cls.__dataclass_fields__
    (recipe,) = parse_recipe(cls, [], default_config=yaml_path)
    assert getattr(recipe, new) == value
    (recipe,) = parse_recipe(cls, [f"--{new}", "0.5"], default_config=yaml_path)
    assert getattr(recipe, new) == 0.5


@pytest.mark.parametrize("cls, yaml_path, old, new, value", RECIPES)
def test_an_old_name_is_a_one_line_error_naming_the_new_one(tmp_path, cls, yaml_path, old, new, value):
    message = f"`{old}` was renamed to `{new}`"
    for flags in ([f"--{old}", "0.5"], [f"--{old}=0.5"], [f"--{old.replace('_', '-')}", "0.5"]):
        with pytest.raises(SystemExit, match=message) as err:
            parse_recipe(cls, flags, default_config=yaml_path)
        assert "\n" not in str(err.value)
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text(yaml_path.read_text().replace(f"{new}:", f"{old}:"))
    with pytest.raises(SystemExit, match=f"old.yaml: {message}$") as err:
        parse_recipe(cls, ["--config", str(old_yaml)])
    assert "\n" not in str(err.value)


def test_an_old_name_the_recipe_never_had_is_just_unknown(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kd_weight: 1.0\n")  # the TLEG recipe has no lambda_logits either
    with pytest.raises(SystemExit, match=r"unknown field\(s\) \['kd_weight'\]"):
        parse_recipe(LearngeneRecipe, ["--config", str(path)])
    with pytest.raises(SystemExit, match="`old_method` was renamed to `method`"):  # a recipe's own rename map
        parse_recipe(LearngeneRecipe, ["--old_method", "sws"], renamed={"old_method": "method"})


@dataclass
class ToyRecipe(RecipeArguments):
    output_dir: str = field(default="outputs/toy", metadata={"help": "Where it goes."})
    num_threads: int | None = field(default=1, metadata={"help": "Threads."})
    epochs: float = field(default=2, metadata={"help": "Epochs."})

    def __post_init__(self):
        super().__post_init__()
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}.")


def test_recipe_arguments_defaults_redeclared_and_validated():
    recipe = ToyRecipe()
    assert (recipe.output_dir, recipe.num_threads, recipe.seed, recipe.batch_size) == ("outputs/toy", 1, 0, 32)
    assert [f.name for f in dataclasses.fields(ToyRecipe)][:7] == [
        "output_dir",
        "seed",
        "num_threads",
        "batch_size",
        "push_to_hub",
        "hub_model_id",
        "hub_private",
    ]
    assert RecipeArguments().num_threads == 1  # the thread policy of every recipe (benchmarks/bench_threads.py)
    for kwargs, match in (
        ({"num_threads": 0}, "^num_threads must be a positive integer"),
        ({"batch_size": 0}, "^batch_size must be"),
        ({"push_to_hub": True}, "^push_to_hub needs hub_model_id"),
        ({"hub_model_id": "no-org"}, "^hub_model_id must look like 'org/name'"),
        ({"epochs": 0}, "^epochs must be positive"),
    ):
        with pytest.raises(ValueError, match=match) as err:
            ToyRecipe(**kwargs)
        assert "\n" not in str(err.value)


def test_parse_recipe_names_the_new_name_of_a_renamed_field(tmp_path):
    (recipe,) = parse_recipe(ToyRecipe, ["--num_threads", "3", "--hub_model_id", "org/x"])
    assert recipe.num_threads == 3 and recipe.hub_model_id == "org/x"
    with pytest.raises(SystemExit, match="`torch_threads` was renamed to `num_threads`"):
        parse_recipe(ToyRecipe, ["--torch_threads", "3"])
    with pytest.raises(SystemExit, match="`n_epochs` was renamed to `epochs`"):
        parse_recipe(ToyRecipe, ["--n_epochs=3"], renamed={"n_epochs": "epochs"})
    old = tmp_path / "old.yaml"
    old.write_text("torch_threads: 2\n")
    with pytest.raises(SystemExit, match="`torch_threads` was renamed to `num_threads`"):
        parse_recipe(ToyRecipe, ["--config", str(old)])


def test_training_args_shared_defaults_and_overrides(tmp_path):
    recipe = ToyRecipe(batch_size=8, seed=5)
    args = training_args(recipe, tmp_path, learning_rate=1e-3, num_train_epochs=2)
    expected = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=256,
        weight_decay=0.05,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="epoch",  # the last checkpoint, for `train` to continue a killed stage
        save_total_limit=1,
        logging_strategy="no",
        report_to="none",
        seed=5,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=CPU,
    )
    assert args.to_dict() == expected.to_dict()
    steps = training_args(
        recipe, tmp_path, learning_rate=3e-3, max_steps=7, cls=DistillationConfig, alpha=0.5, eval_strategy="no"
    )
    assert type(steps) is DistillationConfig and steps.max_steps == 7 and steps.alpha == 0.5
    assert steps.save_strategy == "steps" and steps.save_steps == 0.2  # a step budget: every 20% of it
    off = training_args(ToyRecipe(save_checkpoints=False), tmp_path, learning_rate=1e-3, num_train_epochs=2)
    assert off.save_strategy == "no"
    assert steps.eval_strategy == "no" and steps.num_train_epochs == TrainingArguments("x").num_train_epochs
    with pytest.raises(TypeError, match="num_train_epochs or max_steps"):
        training_args(recipe, tmp_path, learning_rate=1e-3)


def test_run_stages_reports_and_finish(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        run = Run(ToyRecipe(output_dir=str(tmp_path / "out"), num_threads=1, seed=3), stages=2)
        assert torch.get_num_threads() == 1 and run.is_main_process and run.num_processes == 1
        first = torch.rand(3)
        Run(ToyRecipe(output_dir=str(tmp_path / "other"), num_threads=1, seed=3), stages=2)
        assert torch.equal(first, torch.rand(3))  # seeded
    finally:
        torch.set_num_threads(threads)
    run.stage("one")
    run.say("   detail")
    run.stage("two")
    run.work.mkdir(parents=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    run.write_report({"method": "toy", "value": 1.5}, markdown="# toy\n", figure=figure)
    assert not plt.fignum_exists(figure.number)  # closed once written
    run.finish("toy done")
    assert capsys.readouterr().out.splitlines() == ["[1/2] one", "   detail", "[2/2] two", "toy done"]
    out = tmp_path / "out"
    assert json.loads((out / "report.json").read_text()) == {"method": "toy", "value": 1.5}
    assert (out / "report.md").read_text() == "# toy\n" and (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert not run.work.exists() and not list(out.glob(".*"))  # scratch folder and temporary files gone
    from hf_methods.pareto import usual_mode

    assert all(p.stat().st_mode & 0o777 == usual_mode(p.is_dir()) for p in out.rglob("*"))  # as plain writes are


def test_only_the_main_process_speaks_and_writes(tmp_path, capsys):
    run = Run(ToyRecipe(output_dir=str(tmp_path / "out"), num_threads=None), stages=1, rank=1)
    run.stage("hidden")
    run.write_report({"x": 1}, markdown="x")
    run.save_card("model", "card")
    run.finish("hidden")
    assert capsys.readouterr().out == "" and not (tmp_path / "out").exists()


def test_a_rank_destroys_its_process_group_before_the_interpreter_goes():
    """gloo threads left at interpreter exit abort a rank (SIGABRT); `Run` in a process group leaves it atexit."""
    code = """
import atexit, os, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1")
from hf_methods.recipe import leave_process_group
dist.init_process_group("gloo", rank=0, world_size=1)
dist.all_reduce(__import__("torch").ones(2))
leave_process_group()
print(dist.is_initialized())
leave_process_group()  # a second call (atexit after an explicit one) is harmless
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]


@pytest.mark.parametrize("command", ["tleg", "sws", "pool", "l2d", "cpt", "rdd", "gtl"])
def test_every_recipe_prints_its_help(command, capsys):
    from hf_methods.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hf-methods {command} ")  # the command's own name, not just hf-methods
    assert all(
        f"--{name}" in text
        for name in ("config", "output_dir", "seed", "num_threads", "batch_size", "push_to_hub", "hub_model_id")
    )


def test_digit_canvases_layouts():
    grid = digit_canvases(40, 20, canvas_size=24, min_digits=2, max_digits=4, layout="grid", seed=1)
    free = digit_canvases(40, 20, canvas_size=32, min_digits=1, max_digits=3, layout="free", seed=1)
    for splits, size in ((grid, 24), (free, 32)):
        train = splits["train"]
        assert train["pixel_values"].shape == (40, 1, size, size) and train["pixel_values"].dtype == np.float32
        assert train["pixel_values"].min() == -1.0 and train["segmentation"].shape == (40, size, size)
        placed = train["sources"] >= 0
        assert ((train["classes"] >= 0) == placed).all() and ((train["positions"][..., 0] >= 0) == placed).all()
        # every digit lies inside the canvas and the foreground labels are its class + 1
        for i in range(5):
            for (y, x), c in zip(train["positions"][i][placed[i]], train["classes"][i][placed[i]]):
                window = train["segmentation"][i, y : y + 8, x : x + 8]
                assert set(np.unique(window)) <= {0, c + 1}
        used = {name: set(s["sources"][s["sources"] >= 0].tolist()) for name, s in splits.items()}
        assert used["train"] and used["test"] and not used["train"] & used["test"]
    assert (grid["train"]["positions"][grid["train"]["sources"] >= 0] % 8 == 0).all()  # grid cells
    assert ((grid["train"]["sources"] >= 0).sum(1) >= 2).all()
    with pytest.raises(ValueError, match="multiple of 8"):
        digit_canvases(4, 4, canvas_size=20, layout="grid")
    with pytest.raises(ValueError, match="cells of the canvas"):
        digit_canvases(4, 4, canvas_size=16, max_digits=5, layout="grid")
    with pytest.raises(ValueError, match="layout"):
        digit_canvases(4, 4, layout="random")


def test_train_continues_a_killed_training_from_its_last_checkpoint(tmp_path, capsys):
    """Killed right after epoch 2 of 3 was checkpointed (and while saving a later one, which is skipped and removed):
    `train` with a new model and trainer in the same folder ends with the weights and logs of an uninterrupted
    training (dropout on: the RNG states are restored too). A ViT renames its keys on save, which transformers' own
    resume silently fails to load (#43701): `ResumableTrainer`."""
    from transformers import Trainer, TrainerCallback, ViTConfig, ViTForImageClassification, set_seed

    from hf_methods.data import accuracy, digits
    from hf_methods.trainers import ResumableTrainer

    data = digits(8, seed=0, max_train_samples=64)
    recipe = ToyRecipe(batch_size=16)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, hidden_dropout_prob=0.2, num_labels=10,
    )  # fmt: skip

    class Killed(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.epoch == 2:
                raise KeyboardInterrupt("killed")

    def trainer(folder, *callbacks, cls=ResumableTrainer):
        set_seed(0)
        args = training_args(recipe, folder, learning_rate=1e-2, num_train_epochs=3)
        model = ViTForImageClassification(config)
        return cls(model, args, train_dataset=data["train"], eval_dataset=data["test"],
                       compute_metrics=accuracy, callbacks=list(callbacks))  # fmt: skip

    whole = trainer(tmp_path / "whole")
    train(whole)
    with pytest.raises(KeyboardInterrupt):
        train(trainer(tmp_path / "killed", Killed()))
    assert [p.name for p in (tmp_path / "killed").iterdir()] == ["checkpoint-8"]  # only the last one is kept
    with pytest.raises(TypeError, match="continues only a ResumableTrainer"):
        train(trainer(tmp_path / "killed", cls=Trainer))
    half_written = tmp_path / "killed" / "checkpoint-12"  # what a run killed while saving its next one leaves
    half_written.mkdir()
    (half_written / "config.json").write_text("{}")
    capsys.readouterr()
    resumed = trainer(tmp_path / "killed")
    train(resumed)
    out = capsys.readouterr().out
    assert "removing checkpoint-12" in out and "continuing from checkpoint-8" in out
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    evals = [[e for e in t.state.log_history if "eval_accuracy" in e] for t in (whole, resumed)]
    assert len(evals[0]) == 3 and [e["eval_accuracy"] for e in evals[0]] == [e["eval_accuracy"] for e in evals[1]]


def test_each_training_of_a_run_has_its_own_folder_removed_with_its_stage(tmp_path):
    run = Run(ToyRecipe(output_dir=str(tmp_path / "out")), stages=1)
    folder = run.trainer_dir("teacher")
    assert folder == run.work / "teacher"
    with pytest.raises(ValueError, match="already given to another training"):
        run.trainer_dir("teacher")  # two trainings sharing checkpoints would continue from each other's
    (folder / "checkpoint-3").mkdir(parents=True)
    run.save_stage("teacher", {"accuracy": 0.5})
    assert not folder.exists() and run.resumed("teacher") == {"accuracy": 0.5}


def test_recipes_refuse_fsdp_on_cpu_in_one_line(tmp_path, monkeypatch):
    """accelerate applies FSDP on GPUs only; on CPU each process would train alone on its share, without a warning."""
    from hf_methods.recipe import CPU, RecipeError

    if not CPU:
        pytest.skip("a GPU machine: FSDP applies")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RecipeError, match=r"FSDP was requested .* GPUs only. On CPU launch with multi_gpu.yaml"):
        Run(ToyRecipe(output_dir=str(tmp_path / "out")), stages=1)
    assert not (tmp_path / "out").exists()


def test_recipes_refuse_zero3_in_one_line_and_name_the_config_that_works(tmp_path, monkeypatch):
    """Under `accelerate launch` with a ZeRO-3 config a recipe would crash at its second stage (the models earlier
    stages trained are left partitioned): it stops before anything runs instead."""
    from hf_methods.recipe import RecipeError

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(RecipeError, match=r"ZeRO-2 \(zero2.yaml\) but not ZeRO-3"):
        Run(ToyRecipe(output_dir=str(tmp_path / "out")), stages=1)
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    from hf_methods.recipes.accelerate_configs import NAMES, config_file

    assert all(config_file(name).is_file() for name in NAMES)
