"""The DeRy main job: a zoo of six models of three families and two sizes each, trained here on one digits task (0-4);
their node features on probe images and the linear CKA of every pair of nodes; the partition of the zoo into K
functionally equivalent blocks; one reassembled network per parameter budget (NASWOT, randomized greedy); on a new
task (digits 5-9), per seed, the reassembled network fine-tuned end to end, the same with its blocks frozen, and the
same network from scratch, for the same number of steps -> test accuracy, mean ± std over the seeds, in a report.

    hf-methods dery                                   # the embedded default: a few minutes on 2 CPUs
    hf-methods dery --num_blocks 2 --finetune_steps 400           # any recipe field can be overridden
    hf-methods dery --push_to_hub true --hub_model_id org/dery-digits   # -> org/dery-digits-<budget>, -zoo-<name>
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import torch
import transformers
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig

from hf_methods import __version__
from hf_methods.cards import run_model_card
from hf_methods.cli import run_script
from hf_methods.data import digits, digits_image_processor, for_pipeline, gray_input, input_format
from hf_methods.models.convnets import ResNet12Config, VGGConfig
from hf_methods.models.dery import (
    SIMILARITY_MEASURES,
    DeRyConfig,
    DeRyForImageClassification,
    ZooPartition,
    block_nodes,
    collect_node_features,
    partition_zoo,
    search_reassembly,
    zoo_similarities,
)
from hf_methods.pareto import fmt_params
from hf_methods.recipe import RecipeArguments, Run, parse_recipe, train, training_args
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against
from hf_methods.trainers import ResumableTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "dery" / "digits.yaml"
METHOD = "DeRy"
ARMS = ("DeRy", "DeRy, frozen blocks", "scratch")
ARM_KEYS = {"DeRy": "dery", "DeRy, frozen blocks": "frozen", "scratch": "scratch"}
INPUT = "one-channel {size}x{size} digits, white on black, standardized (pixel / 16 rescaled to [-1, 1])"


def _distinct(values, name: str, low: int = 1, high: int | None = None) -> None:
    if not values or len(set(values)) != len(values) or any(v < low or (high is not None and v > high) for v in values):
        bound = f" in [{low}, {high}]" if high is not None else f" >= {low}"
        raise ValueError(f"{name} must be distinct integers{bound}, at least one, got {values}.")


@dataclass
class DeRyRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/dery-digits", metadata={"help": "Where the models and report go."})
    hub_model_id: str | None = field(
        default=None,
        metadata={"help": "Repo prefix (org/name): each reassembled model goes to <id>-<budget>, each zoo model to "
                  "<id>-zoo-<name>."},
    )  # fmt: skip
    image_size: int = field(default=16, metadata={"help": "Digits are upsampled from 8x8 to this size."})
    zoo_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "The zoo's task."})
    target_classes: list[int] = field(
        default_factory=lambda: [5, 6, 7, 8, 9], metadata={"help": "The new task the reassembled models learn."}
    )
    vgg_hidden_sizes: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"help": "VGG widths."})
    vgg_depths: list[int] = field(
        default_factory=lambda: [1, 2], metadata={"help": "One zoo VGG per value: convs per stage."}
    )
    resnet_widths: list[int] = field(
        default_factory=lambda: [8, 16],
        metadata={"help": "One zoo ResNet-12 per value: its first stage's width (the four stages double it)."},
    )
    vit_depths: list[int] = field(default_factory=lambda: [3, 6], metadata={"help": "One zoo ViT per value: layers."})
    vit_hidden_size: int = field(default=32, metadata={"help": "Width of the zoo ViTs."})
    vit_heads: int = field(default=4, metadata={"help": "Attention heads of the zoo ViTs."})
    vit_patch_size: int = field(default=4, metadata={"help": "Patch size of the zoo ViTs."})
    zoo_steps: int = field(default=300, metadata={"help": "Training steps of every zoo model."})
    zoo_learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the zoo models."})
    probe_samples: int = field(default=256, metadata={"help": "Probe images (the zoo task's) for node features."})
    similarity_measure: str = field(default="cka", metadata={"help": f"One of {SIMILARITY_MEASURES}."})
    num_blocks: int = field(default=3, metadata={"help": "K, blocks per model (at most the smallest node count)."})
    partition_eps: float = field(default=0.2, metadata={"help": "Block size slack: at most ceil(N/K)(1+eps) nodes."})
    partition_trials: int = field(default=200, metadata={"help": "Random restarts of the partition (official 200)."})
    partition_iterations: int = field(default=200, metadata={"help": "Iterations per restart (official 200)."})
    partition_patience: int = field(default=20, metadata={"help": "Non-improving iterations before a restart ends."})
    compare_across_positions: bool = field(
        default=False,
        metadata={"help": "False: the official block comparison (blocks at different positions score 0); True: "
                  "blocks of different models are compared at any position."},
    )  # fmt: skip
    min_params: list[int] = field(
        default_factory=lambda: [0, 60000], metadata={"help": "Lower bounds (exclusive) of the parameter budgets."}
    )
    max_params: list[int] = field(
        default_factory=lambda: [60000, 200000], metadata={"help": "Upper bounds (inclusive), one per budget."}
    )
    search_trials: int = field(default=10, metadata={"help": "Restarts of the greedy search (official 10)."})
    naswot_batches: int = field(default=5, metadata={"help": "Batches of 32 target images NASWOT averages over."})
    finetune_steps: int = field(default=200, metadata={"help": "Training steps of every fine-tuned or scratch model."})
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of those trainings."})
    max_target_train_samples: int = field(
        default=150,
        metadata={"help": "Training images of the new task (the first of the shuffled split): few labels, where reuse "
                  "matters; 0 takes all (716 for digits 5-9, where every arm ends near 100%%)."},
    )  # fmt: skip
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of every arm per seed."})

    def __post_init__(self):
        super().__post_init__()
        _distinct(self.zoo_classes, "zoo_classes", 0, 9)
        _distinct(self.target_classes, "target_classes", 0, 9)
        if len(self.zoo_classes) < 2 or len(self.target_classes) < 2:
            raise ValueError("zoo_classes and target_classes need at least 2 classes each.")
        _distinct(self.vgg_depths, "vgg_depths")
        _distinct(self.resnet_widths, "resnet_widths")
        _distinct(self.vit_depths, "vit_depths")
        if not self.vgg_hidden_sizes or min(self.vgg_hidden_sizes) < 1:
            raise ValueError(f"vgg_hidden_sizes must be positive integers, got {self.vgg_hidden_sizes}.")
        if self.image_size < 8 or self.image_size % self.vit_patch_size:
            raise ValueError(
                f"image_size must be >= 8 and a multiple of vit_patch_size ({self.vit_patch_size}), got "
                f"{self.image_size}."
            )
        if self.vit_hidden_size % self.vit_heads:
            raise ValueError(f"vit_heads ({self.vit_heads}) must divide vit_hidden_size ({self.vit_hidden_size}).")
        if self.similarity_measure not in SIMILARITY_MEASURES:
            raise ValueError(
                f"similarity_measure must be one of {SIMILARITY_MEASURES}, got {self.similarity_measure!r}."
            )
        counts = {name: len(nodes) for name, nodes in zoo_node_counts(self).items()}
        smallest = min(counts, key=counts.get)
        if not 1 <= self.num_blocks <= counts[smallest]:
            raise ValueError(
                f"num_blocks (K) = {self.num_blocks} is larger than zoo model {smallest!r}'s block count "
                f"({counts[smallest]} nodes); use 1 <= num_blocks <= {counts[smallest]}, or deepen that model."
            )
        if len(self.min_params) != len(self.max_params) or not self.max_params:
            raise ValueError(
                f"min_params and max_params give one budget per position (same length, at least one), got "
                f"{self.min_params} and {self.max_params}."
            )
        for low, high in zip(self.min_params, self.max_params):
            if not 0 <= low < high:
                raise ValueError(f"every budget needs 0 <= min_params < max_params, got ({low}, {high}].")
        if len(set(self.max_params)) != len(self.max_params):
            raise ValueError(f"max_params must be distinct (they name the budgets), got {self.max_params}.")
        for name in ("zoo_steps", "probe_samples", "partition_trials", "partition_iterations", "search_trials",
                     "naswot_batches", "finetune_steps"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.probe_samples < 2:
            raise ValueError("probe_samples must be at least 2.")
        if self.max_target_train_samples < 0:
            raise ValueError(f"max_target_train_samples must be >= 0 (0: all), got {self.max_target_train_samples}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


# --- the zoo ----------------------------------------------------------------------------------------------------------
def zoo_configs(recipe: DeRyRecipe) -> dict[str, transformers.PreTrainedConfig]:
    """{name: config} of the zoo: a VGG per `vgg_depths`, a ResNet-12 per `resnet_widths`, a ViT per `vit_depths`."""
    labels = {"id2label": {i: str(c) for i, c in enumerate(recipe.zoo_classes)}}
    labels["label2id"] = {v: k for k, v in labels["id2label"].items()}
    zoo = {}
    for depth in recipe.vgg_depths:
        zoo[f"vgg-d{depth}"] = VGGConfig(num_channels=1, hidden_sizes=list(recipe.vgg_hidden_sizes),
                                         depths=[depth] * len(recipe.vgg_hidden_sizes), **labels)  # fmt: skip
    for width in recipe.resnet_widths:
        zoo[f"resnet12-w{width}"] = ResNet12Config(num_channels=1, hidden_sizes=[width * 2**i for i in range(4)],
                                                   **labels)  # fmt: skip
    for depth in recipe.vit_depths:
        zoo[f"vit-l{depth}"] = ViTConfig(
            image_size=recipe.image_size, patch_size=recipe.vit_patch_size, num_channels=1,
            hidden_size=recipe.vit_hidden_size, num_hidden_layers=depth, num_attention_heads=recipe.vit_heads,
            intermediate_size=2 * recipe.vit_hidden_size, **labels,
        )  # fmt: skip
    return zoo


def zoo_node_counts(recipe: DeRyRecipe) -> dict[str, list[str]]:
    """The block nodes of every zoo model (read from models built on the meta device)."""
    with torch.device("meta"):
        return {
            name: block_nodes(AutoModelForImageClassification.from_config(config))
            for name, config in zoo_configs(recipe).items()
        }


def family(name: str) -> str:
    return {"vgg": "VGG", "resnet12": "ResNet-12", "vit": "ViT"}[name.split("-")[0]]


# --- data -------------------------------------------------------------------------------------------------------------
def task(split, classes: list[int], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels renumbered 0..len(classes)-1) of `split` restricted to `classes`."""
    rows = split[:]
    x, y = rows["pixel_values"], rows["labels"]
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    y = torch.tensor([classes.index(int(v)) for v in y])
    return (x[:limit], y[:limit]) if limit else (x, y)


def rows_of(x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(len(y))]


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(pixel_values=xb).logits.argmax(-1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256))
    )
    model.train(was_training)
    return correct / len(y)


def fit(recipe: DeRyRecipe, run: Run, key: str, model, x, y, steps: int, learning_rate: float, seed: int) -> None:
    args = training_args(recipe, run.trainer_dir(key), learning_rate=learning_rate, max_steps=steps, seed=seed,
                         eval_strategy="no", disable_tqdm=True)  # fmt: skip
    trainer = ResumableTrainer(model=model, args=args, train_dataset=rows_of(x, y))
    trainer.remove_callback(transformers.PrinterCallback)  # the run prints one line per training
    train(trainer)


# --- the run ----------------------------------------------------------------------------------------------------------
def budget_name(high: int) -> str:
    return f"{high // 1000}k" if high % 1000 == 0 else str(high)


def run(recipe: DeRyRecipe) -> dict:
    zoo_config = zoo_configs(recipe)
    budgets = list(zip(recipe.min_params, recipe.max_params))
    stages = len(zoo_config) + 1 + len(budgets) * (1 + len(recipe.seeds) * len(ARMS)) + 1
    run = Run(recipe, stages=stages)
    datasets.disable_progress_bars()
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    zoo_x, zoo_y = task(data["train"], recipe.zoo_classes)
    zoo_test = task(data["test"], recipe.zoo_classes)
    target_x, target_y = task(data["train"], recipe.target_classes, recipe.max_target_train_samples)
    target_test = task(data["test"], recipe.target_classes)
    setup = _training_setup(recipe, len(target_y))

    # 1. the zoo, trained here on the zoo's task and saved with cards (the sources of the reassembled models)
    zoo_rows, zoo = [], {}
    for name, config in zoo_config.items():
        key = f"zoo-{name}"
        done = run.resume_stage(f"zoo model {name}: {recipe.zoo_steps} steps on digits {recipe.zoo_classes}", key)
        folder = run.out / "zoo" / name
        if done is None:
            transformers.set_seed(recipe.seed)
            model = AutoModelForImageClassification.from_config(config)
            fit(recipe, run, key, model, zoo_x, zoo_y, recipe.zoo_steps, recipe.zoo_learning_rate, recipe.seed)
            done = {"name": name, "family": family(name), "params": sum(p.numel() for p in model.parameters()),
                    "accuracy": accuracy(model, *zoo_test), "nodes": block_nodes(model),
                    "source": str(folder.resolve())}  # fmt: skip
            run.save_model(model, f"zoo/{name}", zoo_card(model, folder, done, recipe))
            run.save_stage(key, done)
            run.say(f"  {fmt_params(done['params'])} parameters, accuracy {done['accuracy']:.3f} on its task")
        zoo[name] = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=False)
        zoo_rows.append(done)
    sources = {row["name"]: row["source"] for row in zoo_rows}

    # 2. node features on probe images, similarities, the partition
    done = run.resume_stage(
        f"node features on {recipe.probe_samples} probe images, {recipe.similarity_measure}, partition into "
        f"K={recipe.num_blocks} blocks ({recipe.partition_trials} trials)",
        "partition",
    )
    if done is None:
        probe = zoo_x[: recipe.probe_samples]
        features = {name: collect_node_features(model, probe) for name, model in zoo.items()}
        sims = zoo_similarities(features, recipe.similarity_measure)
        partition = partition_zoo(
            sims, {name: list(f) for name, f in features.items()}, recipe.num_blocks, eps=recipe.partition_eps,
            trials=recipe.partition_trials, num_iter=recipe.partition_iterations, patience=recipe.partition_patience,
            compare_across_positions=recipe.compare_across_positions, seed=recipe.seed,
        )  # fmt: skip
        names = list(features)
        matrix = torch.cat([torch.cat([sims[(a, b)] for b in names], 1) for a in names], 0)
        done = {"partition": partition.to_dict(), "similarity": matrix.tolist()}
        run.save_stage("partition", done)
        run.say(f"  objective {partition.objective:.2f} after {len(partition.history)} iterations")
    partition = ZooPartition.from_dict(done["partition"])
    similarity = done["similarity"]

    # 3. one reassembly per budget
    target_labels = {i: str(c) for i, c in enumerate(recipe.target_classes)}
    searches = []
    for low, high in budgets:
        key = f"search-{budget_name(high)}"
        done = run.resume_stage(f"reassembly search, {fmt_params(low)} < parameters <= {fmt_params(high)}", key)
        if done is None:
            found = search_reassembly(
                partition, sources, target_x, max_params=high, min_params=low, trials=recipe.search_trials,
                num_batches=recipe.naswot_batches, seed=recipe.seed, source_models=zoo, num_channels=1,
                image_size=recipe.image_size, num_labels=len(target_labels), id2label=target_labels,
            )  # fmt: skip
            done = {"budget": budget_name(high), "min_params": low, "max_params": high,
                    "config": found.config.to_dict(), "score": found.score, "params": found.num_parameters,
                    "candidates_scored": found.candidates_scored,
                    "blocks": [{"model": b.model, **found.config.blocks[i], "group": partition.group(b)}
                               for i, b in enumerate(found.blocks)]}  # fmt: skip
            run.save_stage(key, done)
            chosen = " + ".join(f"{b['model']}[{b['start']}..{b['end']}]" for b in done["blocks"])
            run.say(f"  {chosen}: {fmt_params(done['params'])} parameters, NASWOT {done['score']:.2f}")
        searches.append(done)

    # 4. per budget and seed: fine-tuned end to end, frozen blocks, from scratch
    by_source = {sources[name]: model for name, model in zoo.items()}
    rows, kept = [], {}
    for search in searches:
        config = DeRyConfig.from_dict(search["config"])
        for seed in recipe.seeds:
            for arm in ARMS:
                key = f"finetune-{search['budget']}-{ARM_KEYS[arm]}-seed{seed}"
                done = run.resume_stage(
                    f"budget {search['budget']}, seed {seed}: {arm}, {recipe.finetune_steps} steps", key
                )
                keep = seed == recipe.seeds[0] and arm == "DeRy"
                if done is None:
                    transformers.set_seed(seed)
                    if arm == "scratch":
                        model = DeRyForImageClassification(config)
                    else:
                        own = copy.deepcopy(config)
                        own.block_fixed = arm == "DeRy, frozen blocks"
                        model = DeRyForImageClassification.from_sources(own, source_models=by_source)
                    before = accuracy(model, *target_test)
                    fit(recipe, run, key, model, target_x, target_y, recipe.finetune_steps,
                        recipe.finetune_learning_rate, seed)  # fmt: skip
                    done = {"budget": search["budget"], "arm": arm, "seed": seed, "initial_accuracy": before,
                            "accuracy": accuracy(model, *target_test), "params": model.num_parameters(),
                            "trainable_params": model.num_parameters(only_trainable=True)}  # fmt: skip
                    run.save_stage(key, done, model if keep else None)
                    run.say(f"  accuracy {done['initial_accuracy']:.3f} -> {done['accuracy']:.3f}")
                if keep:
                    kept[search["budget"]] = DeRyForImageClassification.from_pretrained(
                        run.stage_folder(key), trust_remote_code=False
                    )
                rows.append(done)

    summaries, verdicts = {}, []
    for search in searches:
        budget = search["budget"]
        summary = summarize_arms([r for r in rows if r["budget"] == budget], ARMS, ("accuracy", "initial_accuracy"))
        summaries[budget] = summary
        verdicts.append(
            verdict_against(
                summary,
                "DeRy",
                "accuracy",
                f"test accuracy at budget {budget} ({fmt_params(search['params'])} parameters)",
            )  # fmt: skip
        )
    results = {
        "method": METHOD,
        "dataset": f"scikit-learn digits {recipe.target_classes} (zoo trained on digits {recipe.zoo_classes})",
        "dataset_id": "sklearn-digits",
        "training_setup": setup,
        "input_format": INPUT.format(size=recipe.image_size),
        "recipe": dataclasses.asdict(recipe),
        "zoo": zoo_rows,
        "partition": partition.to_dict() | {"history": None},
        "similarity": similarity,
        "searches": searches,
        "runs": rows,
        "summary": summaries,
        "outcome": {b: _outcome(s) for b, s in summaries.items()},
        "verdict": " ".join([*verdicts, VERDICT_RULE]),
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the reassembled models (first seed) with their cards, and the report")
    processor = digits_image_processor(recipe.image_size)
    for budget, model in kept.items():  # the card counts the trained one-channel network; the saved copy reads RGB
        card = dery_card(model, run.out / f"dery-{budget}", results, budget, input_format(processor))
        run.save_model(for_pipeline(model, processor), f"dery-{budget}", card, processor)
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"DeRy done in {results['elapsed_s']:.0f}s: "
        + "; ".join(
            f"budget {b}: " + ", ".join(f"{s['arm']} {s['accuracy_mean']:.3f}" for s in summary)
            for b, summary in summaries.items()
        )
        + f". Report in {run.out}/"
    )
    return results


def _outcome(summary: list[dict]) -> str:
    """win / tie / lose of DeRy (end to end) against the same network from scratch (the rule of `verdict_against`)."""
    mine, other = summary[0], summary[-1]
    gap = mine["accuracy_mean"] - other["accuracy_mean"]
    band = max(mine["accuracy_std"], other["accuracy_std"])
    return "win" if gap > band else "lose" if gap < -band else "tie"


def _training_setup(recipe: DeRyRecipe, target_train: int) -> str:
    comparison = "every-position" if recipe.compare_across_positions else "the official same-position"
    return (
        f"Digits {recipe.image_size}x{recipe.image_size}. Zoo: VGG {recipe.vgg_hidden_sizes} x depth "
        f"{recipe.vgg_depths}, ResNet-12 of widths {recipe.resnet_widths}, ViT of {recipe.vit_depths} layers (width "
        f"{recipe.vit_hidden_size}, patch {recipe.vit_patch_size}), each trained {recipe.zoo_steps} steps on digits "
        f"{recipe.zoo_classes} (AdamW lr {recipe.zoo_learning_rate:g}). Similarity: {recipe.similarity_measure} of "
        f"the node outputs on {recipe.probe_samples} probe images of that task. Partition: K={recipe.num_blocks}, eps "
        f"{recipe.partition_eps:g}, {recipe.partition_trials} trials x up to {recipe.partition_iterations} iterations "
        f"(patience {recipe.partition_patience}), {comparison} block comparison. Search: NASWOT on "
        f"{recipe.naswot_batches} batches of 32 images of the new task, {recipe.search_trials} greedy trials, budgets "
        + ", ".join(f"({fmt_params(lo)}, {fmt_params(hi)}]" for lo, hi in zip(recipe.min_params, recipe.max_params))
        + f" parameters. New task: digits {recipe.target_classes}, {target_train} training images; every arm trains "
        f"{recipe.finetune_steps} steps, AdamW lr {recipe.finetune_learning_rate:g}, weight decay 0.05, cosine, batch "
        f"{recipe.batch_size}, plain cross-entropy. Scratch: the same network, every part freshly initialized (each "
        f"block its source architecture's way). Seeds {recipe.seeds}."
    )


# --- cards ------------------------------------------------------------------------------------------------------------
def zoo_card(model, repo_or_path, row: dict, recipe: DeRyRecipe):
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"{row['name']}: a {row['family']} of a DeRy zoo ({fmt_params(row['params'])} parameters)",
        description=(
            f"One of the zoo models a DeRy run trained on scikit-learn digits {recipe.zoo_classes} "
            f"({recipe.image_size}x{recipe.image_size}), then cut into blocks that reassembled networks reuse. Its "
            f"block nodes: {', '.join(f'`{n}`' for n in row['nodes'])}."
        ),
        tags=["model-reassembly", "dery-zoo"],
        training_setup=f"{recipe.zoo_steps} steps, AdamW lr {recipe.zoo_learning_rate:g}, batch {recipe.batch_size}.",
        metrics={"accuracy on its task": round(row["accuracy"], 4)},
        dataset=f"scikit-learn digits {recipe.zoo_classes}",
        input_format=INPUT.format(size=recipe.image_size),
    )


def dery_card(model, repo_or_path, results: dict, budget: str, input_format: str | None = None):
    summary = {s["arm"]: s for s in results["summary"][budget]}
    search = next(s for s in results["searches"] if s["budget"] == budget)
    return model.model_card(
        repo_or_path,
        {
            "title": f"DeRy reassembled network, budget {budget} ({fmt_params(search['params'])} parameters), digits",
            "training_setup": results["training_setup"] + " This model: the first seed's end-to-end fine-tuning.",
            "metrics": {f"{arm} accuracy (mean over seeds)": round(s["accuracy_mean"], 4) for arm, s in summary.items()}
            | {"NASWOT score": round(search["score"], 3)},
            "dataset": results["dataset"],
            "input_format": input_format,
        },
    )


# --- report -----------------------------------------------------------------------------------------------------------
def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, heat) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.1]})
    colors = {"DeRy": "#dd8452", "DeRy, frozen blocks": "#4c72b0", "scratch": "#999999"}
    for i, arm in enumerate(ARMS):
        points = [(next(s for s in results["searches"] if s["budget"] == b)["params"], next(x for x in summary
                   if x["arm"] == arm)) for b, summary in results["summary"].items()]  # fmt: skip
        xs = [p * (1 + 0.02 * (i - 1)) for p, _ in points]  # side by side
        ys, errors = [s["accuracy_mean"] for _, s in points], [s["accuracy_std"] for _, s in points]
        ax.errorbar(xs, ys, yerr=errors, fmt="o-", capsize=4, color=colors[arm], label=arm)
    ax.set(xscale="log", xlabel="parameters of the reassembled network", ylabel="test accuracy (mean ± std over seeds)",
           title="new task: reassembled vs the same network from scratch")  # fmt: skip
    ax.legend()
    matrix = torch.tensor(results["similarity"])
    image = heat.imshow(matrix.numpy(), cmap="viridis", vmin=0, vmax=1)
    edges, names, at = [], [], 0
    for row in results["zoo"]:
        names.append((at + len(row["nodes"]) / 2 - 0.5, row["name"]))
        at += len(row["nodes"])
        edges.append(at - 0.5)
    for edge in edges[:-1]:
        heat.axhline(edge, color="white", lw=1.5)
        heat.axvline(edge, color="white", lw=1.5)
    at = 0
    for row in results["zoo"]:  # the partition's cuts inside each model, on the diagonal
        span = [at - 0.5, at + len(row["nodes"]) - 0.5]
        for block in results["partition"]["blocks"][row["name"]][:-1]:
            cut = at + block["end"] + 0.5
            heat.plot([cut, cut], span, color="red", lw=1)
            heat.plot(span, [cut, cut], color="red", lw=1)
        at += len(row["nodes"])
    fig.colorbar(image, ax=heat, fraction=0.046, pad=0.04)
    heat.set_xticks([p for p, _ in names], [n for _, n in names], rotation=45, ha="right", fontsize=8)
    heat.set_yticks([p for p, _ in names], [n for _, n in names], fontsize=8)
    heat.set_title(f"{results['recipe']['similarity_measure']} between every pair of nodes (red: block cuts)")
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    outcome = ", ".join(f"budget {b}: **{o}**" for b, o in results["outcome"].items())
    lines = [
        f"# DeRy on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"DeRy (fine-tuned end to end) against the same network from scratch: {outcome}.",
        "",
        f"**{results['verdict']}**",
        "",
        "![report](report.png)",
        "",
        "| budget | arm | parameters (trainable) | accuracy before training | test accuracy |",
        "|---|---|---|---|---|",
    ]
    for budget, summary in results["summary"].items():
        for s in summary:
            run = next(r for r in results["runs"] if r["budget"] == budget and r["arm"] == s["arm"])
            lines.append(
                f"| {budget} | {s['arm']} | {fmt_params(run['params'])} ({fmt_params(run['trainable_params'])}) | "
                f"{s['initial_accuracy_mean']:.3f} ± {s['initial_accuracy_std']:.3f} | "
                f"{s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} |"
            )
    lines += ["", "## The reassembled networks", "", "| budget | position | zoo model | nodes | type | group |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for search in results["searches"]:
        for i, b in enumerate(search["blocks"]):
            nodes = f"`{b['start']}`..`{b['end']}`"
            lines.append(f"| {search['budget']} | {i + 1} | {b['model']} | {nodes} | {b['type']} | {b['group']} |")
        lines.append(
            f"| {search['budget']} | | {fmt_params(search['params'])} parameters, NASWOT {search['score']:.2f}, "
            f"{search['candidates_scored']} candidates scored | | | |"
        )
    lines += ["", "## The zoo and its partition", "",
              f"Partition objective {results['partition']['objective']:.2f} (K={results['partition']['num_blocks']}).",
              "", "| model | family | parameters | accuracy on its task | blocks (first..last node, group) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for row in results["zoo"]:
        blocks = results["partition"]["blocks"][row["name"]]
        cut = "; ".join(f"`{b['first_node']}`..`{b['last_node']}` (g{b['group']})" for b in blocks)
        lines.append(
            f"| {row['name']} | {row['family']} | {fmt_params(row['params'])} | {row['accuracy']:.3f} | {cut} |"
        )
    lines += ["", "| budget | seed | arm | accuracy before | test accuracy |", "|---|---|---|---|---|"]
    lines += [f"| {r['budget']} | {r['seed']} | {r['arm']} | {r['initial_accuracy']:.3f} | {r['accuracy']:.3f} |"
              for r in results["runs"]]  # fmt: skip
    lines += ["", "The reassembled network of each budget (first seed, fine-tuned end to end) is saved in "
              "`dery-<budget>/` with its card; the zoo models in `zoo/<name>/`.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(DeRyRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_dery_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a DeRy run: each zoo model to `<repo_id>-zoo-<name>`, then each reassembled model to
    `<repo_id>-<budget>` with its sources renamed to those repos (config and card)."""
    from hf_methods.hub import push_model, push_saved_model

    pushed, renamed = {}, {}
    recipe = DeRyRecipe(**{k: v for k, v in results["recipe"].items() if k not in ("push_to_hub", "hub_model_id")})
    for row in results["zoo"]:
        folder, repo = Path(out_dir) / "zoo" / row["name"], f"{repo_id}-zoo-{row['name']}"
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=False)
        push_saved_model(folder, repo, zoo_card(model, repo, row, recipe),
                         commit_message=f"Upload the DeRy zoo model {row['name']}", **hub_kwargs)  # fmt: skip
        pushed[f"zoo/{row['name']}"], renamed[row["source"]] = repo, repo
    for search in results["searches"]:
        budget = search["budget"]
        folder, repo = Path(out_dir) / f"dery-{budget}", f"{repo_id}-{budget}"
        model = DeRyForImageClassification.from_pretrained(folder, trust_remote_code=False)  # reads RGB
        model.config = model.config.with_sources_renamed(renamed)
        processor = AutoImageProcessor.from_pretrained(folder)
        card = dery_card(gray_input(model), repo, results, budget, input_format(processor))  # the trained counts
        push_model(model, repo, card, processor, commit_message=f"Upload the DeRy network of budget {budget}",
                   **hub_kwargs)  # fmt: skip
        pushed[f"dery-{budget}"] = repo
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.dery.pipeline"))
