"""The GTL main job: evolve a learngene in a population of CNNs on tasks from base classes, then initialize
descendants on held-out classes from it, from scratch, or from a random gene of the same size, for the ancestor's
architecture and a deeper, wider one.

    hf-methods gtl                                     # embedded default: digits, no network, ~2.5 min on 2 CPUs
    hf-methods gtl --generations 10 --population_size 16 --granularity kernel
    accelerate launch --num_processes 4 -m hf_methods.recipes.gtl.pipeline   # 4 individuals train at once

Data: scikit-learn's digits (16x16). Tasks during evolution are N-way K-shot tasks drawn from `base_classes`; the
downstream tasks come from `held_out_classes`, never seen by the evolution. The random-gene baseline takes a
uniformly random mask of the same granularity and budget over a network trained normally on all base classes for
`reference_steps` steps, so it tests whether *evolved* selection matters beyond "some base-class knowledge".
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import torch
import transformers
from transformers import Trainer

from hf_methods import __version__
from hf_methods.cards import gtl_card
from hf_methods.cli import run_script
from hf_methods.data import accuracy, digits
from hf_methods.models.convnets import (
    ResNet12Config,
    ResNet12ForImageClassification,
    VGGConfig,
    VGGForImageClassification,
)
from hf_methods.models.gtl import GTLModel, conv_layers, sample_mask
from hf_methods.recipe import CPU, RecipeArguments, Run, parse_recipe, training_args
from hf_methods.report import fmt_params
from hf_methods.trainers.gtl_config import GTLEvolutionConfig
from hf_methods.trainers.gtl_evolution import GTLEvolution, TaskSampler
from hf_methods.trainers.gtl_processes import evolution_process

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "gtl" / "digits.yaml"
BACKBONES = {
    "vgg": (VGGConfig, VGGForImageClassification),
    "resnet12": (ResNet12Config, ResNet12ForImageClassification),
}
INITS = ("learngene", "scratch", "random gene")


@dataclass
class GTLRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/gtl-digits", metadata={"help": "Where the learngene and the report go."})
    batch_size: int = field(default=32, metadata={"help": "Batch size of individuals and descendants."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the learngene (org/name)."})
    image_size: int = field(default=16, metadata={"help": "Digits are upsampled from 8x8 to this size."})
    base_classes: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4, 5],
        metadata={"help": "Digit classes the evolution's tasks are drawn from."},
    )
    held_out_classes: list[int] = field(
        default_factory=lambda: [6, 7, 8, 9],
        metadata={"help": "Digit classes of the downstream tasks (never seen by the evolution)."},
    )
    backbone: str = field(default="vgg", metadata={"help": "'vgg' (VGG-style) or 'resnet12' (few-shot ResNet-12)."})
    hidden_sizes: list[int] = field(
        default_factory=lambda: [16, 32, 64, 64],
        metadata={"help": "Stage widths of the ancestors (the population's networks)."},
    )
    depths: list[int] = field(
        default_factory=lambda: [1, 1, 1, 1],
        metadata={"help": "Convolutions (VGG) or residual blocks (ResNet-12) per stage of the ancestors."},
    )
    descendant_hidden_sizes: list[int] = field(
        default_factory=lambda: [32, 64, 128, 128], metadata={"help": "Stage widths of the deeper, wider descendant."}
    )
    descendant_depths: list[int] = field(
        default_factory=lambda: [1, 1, 2, 2], metadata={"help": "Depths of the deeper, wider descendant."}
    )
    population_size: int = field(default=12, metadata={"help": "Individuals per generation."})
    tournament_size: int = field(
        default=2, metadata={"help": "Individuals per tournament; each tournament's winner passes its gene on."}
    )
    generations: int = field(default=8, metadata={"help": "Generations of evolution."})
    gene_fraction: float = field(
        default=0.2, metadata={"help": "Budget: fraction of the convolution weights in the gene (paper: about 0.2)."}
    )
    granularity: str = field(default="channel", metadata={"help": "'channel', 'kernel' or 'layer'."})
    mutation_rate: float = field(default=0.1, metadata={"help": "Expected fraction of gene units swapped per child."})
    n_way: int = field(default=5, metadata={"help": "Classes per evolution task."})
    k_shot: int = field(default=5, metadata={"help": "Training examples per class of an evolution task."})
    query_shots: int = field(default=15, metadata={"help": "Fitness examples per class of an evolution task."})
    individual_steps: int = field(
        default=20, metadata={"help": "Training steps of every individual (the per-individual budget)."}
    )
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate of individuals and descendants."})
    downstream_tasks: int = field(
        default=8, metadata={"help": "Held-out tasks per (descendant, init); mean and std are reported."}
    )
    downstream_k_shot: int = field(default=5, metadata={"help": "Training examples per class of a downstream task."})
    downstream_query_shots: int = field(default=30, metadata={"help": "Test examples per class of a downstream task."})
    downstream_steps: int = field(default=20, metadata={"help": "Training steps of every descendant."})
    reference_steps: int = field(
        default=200,
        metadata={"help": "Steps of the network trained on all base classes that the random-gene baseline masks."},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar over individuals."})

    def __post_init__(self):
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}.")
        overlap = sorted(set(self.base_classes) & set(self.held_out_classes))
        if overlap:
            raise ValueError(f"base_classes and held_out_classes share {overlap}; downstream classes must be held out.")
        for name in ("base_classes", "held_out_classes"):
            bad = [c for c in getattr(self, name) if not 0 <= c <= 9]
            if bad:
                raise ValueError(f"{name} has {bad}; the digits are classes 0..9.")
        for name in (
            "downstream_tasks",
            "downstream_k_shot",
            "downstream_query_shots",
            "downstream_steps",
            "reference_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")


def network(recipe: GTLRecipe, num_labels: int, hidden_sizes=None, depths=None):
    """A freshly initialized backbone (under the caller's torch seed)."""
    config_cls, model_cls = BACKBONES[recipe.backbone]
    return model_cls(
        config_cls(
            num_channels=1,
            num_labels=num_labels,
            hidden_sizes=list(hidden_sizes or recipe.hidden_sizes),
            depths=list(depths or recipe.depths),
        )
    )


def _train_args(recipe: GTLRecipe, work: Path, steps: int, seed: int) -> transformers.TrainingArguments:
    """Descendants and the reference network: `steps` steps at a constant learning rate, no weight decay."""
    return training_args(
        recipe,
        work,
        learning_rate=recipe.learning_rate,
        max_steps=steps,
        seed=seed,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        warmup_steps=0,
        eval_strategy="no",
        save_strategy="no",  # short trainings; the evolution keeps its own checkpoints (`GTLCheckpoint`)
        disable_tqdm=True,
    )


def _fit_and_score(model, recipe, work, support, query, seed) -> float:
    trainer = Trainer(
        model=model,
        args=_train_args(recipe, work, recipe.downstream_steps, seed),
        train_dataset=support,
        eval_dataset=query,
        compute_metrics=accuracy,
    )
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    return trainer.evaluate()["eval_accuracy"]


def reference_network(recipe: GTLRecipe, data, work: Path):
    """A network trained normally on every base class: the source of the random-gene baseline's values."""
    base = data.filter(lambda row: int(row["labels"]) in recipe.base_classes)
    remap = {c: i for i, c in enumerate(recipe.base_classes)}
    base = base.map(lambda row: {"labels": remap[int(row["labels"])]}).with_format("torch")
    transformers.set_seed(recipe.seed + 1)
    model = network(recipe, len(recipe.base_classes))
    args = _train_args(recipe, work, recipe.reference_steps, recipe.seed + 1)
    trainer = Trainer(model=model, args=args, train_dataset=base)
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    return model


def downstream(recipe: GTLRecipe, gene: GTLModel, random_gene: GTLModel, data, work: Path, say=print) -> list[dict]:
    """Held-out tasks: every (descendant architecture, init) trained from the same task, seed and budget."""
    sampler = TaskSampler(
        data,
        "n_way_k_shot",
        n_way=len(recipe.held_out_classes),
        k_shot=recipe.downstream_k_shot,
        query_shots=recipe.downstream_query_shots,
        base_classes=recipe.held_out_classes,
    )
    archs = {
        f"ancestor ({recipe.backbone} {recipe.hidden_sizes}, depths {recipe.depths})": (
            recipe.hidden_sizes,
            recipe.depths,
        ),
        f"deeper/wider ({recipe.backbone} {recipe.descendant_hidden_sizes}, depths {recipe.descendant_depths})": (
            recipe.descendant_hidden_sizes,
            recipe.descendant_depths,
        ),
    }
    scores = {(a, i): [] for a in archs for i in INITS}
    params = {}
    for t in range(recipe.downstream_tasks):
        support, query, _ = sampler.sample(torch.Generator().manual_seed(10_000 + recipe.seed * 1000 + t))
        for arch, (hidden, depths) in archs.items():
            for init in INITS:
                transformers.set_seed(recipe.seed + 100 + t)  # same fresh weights for the three inits
                model = network(recipe, len(recipe.held_out_classes), hidden, depths)
                if init == "learngene":
                    gene.inherit(model)
                elif init == "random gene":
                    random_gene.inherit(model)
                params[arch] = sum(p.numel() for p in model.parameters())
                scores[(arch, init)].append(_fit_and_score(model, recipe, work, support, query, recipe.seed + t))
        say(
            f"      task {t + 1}/{recipe.downstream_tasks}: "
            + ", ".join(f"{init} {statistics.mean(scores[(a, init)]):.3f}" for a in list(archs)[:1] for init in INITS)
            + " (ancestor architecture, running means)"
        )
    rows = []
    for (arch, init), accs in scores.items():
        rows.append(
            {
                "architecture": arch,
                "init": init,
                "params": params[arch],
                "accuracies": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            }
        )
    return rows


def run(recipe: GTLRecipe) -> dict:
    # Under `accelerate launch`, every process trains its own individuals: leave the launcher's process group (and take
    # this process's GPU) before any TrainingArguments exists; the run then speaks from rank 0 only.
    rank, _, _ = evolution_process(use_cpu=CPU)
    run = Run(recipe, stages=5, rank=rank)
    datasets.disable_progress_bars()
    out = run.out

    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    train = data["train"]
    run.stage(
        f"evolving a {recipe.granularity} learngene ({recipe.gene_fraction:g} of the convolution weights) in "
        f"{recipe.population_size} {recipe.backbone} networks for {recipe.generations} generations on "
        f"{recipe.n_way}-way {recipe.k_shot}-shot tasks from digits {recipe.base_classes}"
    )
    args = GTLEvolutionConfig(
        output_dir=str(out),
        population_size=recipe.population_size,
        tournament_size=recipe.tournament_size,
        generations=recipe.generations,
        gene_fraction=recipe.gene_fraction,
        granularity=recipe.granularity,
        mutation_rate=recipe.mutation_rate,
        n_way=recipe.n_way,
        k_shot=recipe.k_shot,
        query_shots=recipe.query_shots,
        base_classes=list(recipe.base_classes),
        max_steps=recipe.individual_steps,
        learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.batch_size,
        lr_scheduler_type="constant",
        seed=recipe.seed,
        disable_tqdm=recipe.disable_tqdm,
        report_to="none",
        use_cpu=CPU,
    )
    evolution = GTLEvolution(model_init=lambda n: network(recipe, n), args=args, train_dataset=train)
    gene = evolution.run()
    run.is_main_process = evolution.rank == 0
    if not run.is_main_process:  # the other processes only trained individuals
        return {}
    best = evolution.history[-1]
    run.stage(
        f"learngene {best['best_id']}: fitness {best['best']:.3f}, {fmt_params(gene.num_gene_parameters)} "
        f"convolution weights ({gene.stored_fraction:.1%} of the ancestor's)"
    )

    run.stage(
        f"random-gene baseline: a {recipe.backbone} trained on all base classes for {recipe.reference_steps} "
        "steps, masked at random with the same granularity and budget"
    )
    reference = reference_network(recipe, train, run.work)
    random_mask = sample_mask(
        conv_layers(reference), recipe.gene_fraction, recipe.granularity, torch.Generator().manual_seed(recipe.seed + 2)
    )
    random_gene = GTLModel.from_network(reference, random_mask)

    run.stage(
        f"downstream: {recipe.downstream_tasks} {len(recipe.held_out_classes)}-way "
        f"{recipe.downstream_k_shot}-shot tasks on held-out digits {recipe.held_out_classes}, "
        f"{recipe.downstream_steps} steps each, learngene vs scratch vs random gene, ancestor and deeper/wider "
        "descendants"
    )
    rows = downstream(recipe, gene, random_gene, _all_digits(data), run.work, run.say)
    results = {
        "method": "GTL",
        "dataset": "scikit-learn digits",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "learngene": {
            "id": best["best_id"],
            "fitness": best["best"],
            "params": gene.num_gene_parameters,
            "stored_fraction": gene.stored_fraction,
            "lineage": gene.config.lineage,
        },
        "generations": evolution.history,
        "downstream": rows,
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("writing the learngene's card and the report")
    run.save_card("learngene", gtl_card(gene, run.out / "learngene", results))
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    by = {(r["architecture"].split(" ")[0], r["init"]): r["mean"] for r in rows}
    run.finish(
        f"GTL done in {results['elapsed_s']:.0f}s: learngene {fmt_params(gene.num_gene_parameters)} weights; held-out "
        f"accuracy ancestor arch learngene {by[('ancestor', 'learngene')]:.3f} / scratch "
        f"{by[('ancestor', 'scratch')]:.3f} / random gene {by[('ancestor', 'random gene')]:.3f}; deeper/wider "
        f"{by[('deeper/wider', 'learngene')]:.3f} / "
        f"{by[('deeper/wider', 'scratch')]:.3f} / {by[('deeper/wider', 'random gene')]:.3f}. Report in {run.out}/"
    )
    return results


def _all_digits(data):
    """Train and test splits together: downstream tasks draw their own support and query sets."""
    from datasets import concatenate_datasets

    return concatenate_datasets([data["train"], data["test"]]).with_format("torch")


def _training_setup(recipe: GTLRecipe) -> str:
    return (
        f"Evolution: {recipe.population_size} {recipe.backbone} networks (widths {recipe.hidden_sizes}, depths "
        f"{recipe.depths}) x {recipe.generations} generations; each individual trains {recipe.individual_steps} steps "
        f"(AdamW lr {recipe.learning_rate}, batch {recipe.batch_size}) on a {recipe.n_way}-way {recipe.k_shot}-shot "
        "task "
        f"from digits {recipe.base_classes}; fitness = accuracy on {recipe.query_shots} query images per class; "
        f"tournaments of {recipe.tournament_size}; {recipe.granularity} genes of {recipe.gene_fraction:g} of the "
        f"convolution weights; mutation rate {recipe.mutation_rate}; Lamarckian inheritance (trained values). "
        f"Downstream: {recipe.downstream_tasks} {len(recipe.held_out_classes)}-way {recipe.downstream_k_shot}-shot "
        "tasks "
        f"on held-out digits {recipe.held_out_classes} ({recipe.downstream_query_shots} test images per class), "
        f"{recipe.downstream_steps} steps each, same fresh init and data for the three inits; seed {recipe.seed}."
    )


def report_figure(results: dict):
    """report.png: fitness per generation, and the descendants' held-out accuracy per init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, rows = results["generations"], results["downstream"]
    fig, (ax_fit, ax_down) = plt.subplots(1, 2, figsize=(12, 4.5))
    gens = [h["generation"] for h in history]
    ax_fit.plot(gens, [h["best"] for h in history], "o-", label="best")
    ax_fit.plot(gens, [h["mean"] for h in history], "s--", label="mean")
    ax_fit.set(xlabel="generation", ylabel="fitness (query accuracy)", title="Evolution")
    ax_fit.legend()
    archs = list(dict.fromkeys(r["architecture"] for r in rows))
    width = 0.8 / len(INITS)
    for k, init in enumerate(INITS):
        sel = [next(r for r in rows if r["architecture"] == a and r["init"] == init) for a in archs]
        ax_down.bar(
            [i + k * width for i in range(len(archs))],
            [r["mean"] for r in sel],
            width,
            yerr=[r["std"] for r in sel],
            label=init,
            capsize=3,
        )
    ax_down.set_xticks([i + width for i in range(len(archs))], [a.split(" (")[0] for a in archs])
    ax_down.set(ylabel="held-out task accuracy", title="Descendants on held-out classes")
    ax_down.legend()
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    """report.md: fitness per generation, the learngene's lineage, the downstream table."""
    history, rows = results["generations"], results["downstream"]
    gene = results["learngene"]
    lines = [
        f"# GTL on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"Learngene `{gene['id']}`: fitness {gene['fitness']:.3f}, {fmt_params(gene['params'])} convolution "
        f"weights ({gene['stored_fraction']:.1%} of the ancestor's). Saved in `learngene/`.",
        "",
        "![report](report.png)",
        "",
        "## Evolution",
        "",
        "| generation | best | mean | best individual |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h['generation']} | {h['best']:.3f} | {h['mean']:.3f} | {h['best_id']} |" for h in history]
    lines += [
        "",
        "Lineage of the learngene (oldest first):",
        "",
        "| individual | generation | fitness |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r.get('id')} | {r.get('generation')} | {r.get('fitness', float('nan')):.3f} |"
        for r in gene["lineage"] or []
    ]
    lines += [
        "",
        "## Descendants on held-out classes",
        "",
        "| descendant | parameters | init | accuracy (mean ± std) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['architecture']} | {fmt_params(r['params'])} | {r['init']} | {r['mean']:.3f} ± {r['std']:.3f} |"
        for r in rows
    ]
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(GTLRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.gtl.pipeline"))


def push_gtl_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a GTL run: the learngene only (descendants are trained per downstream task)."""
    from hf_methods.hub import push_model

    gene = transformers.AutoModel.from_pretrained(out_dir / "learngene", trust_remote_code=False)
    push_model(gene, repo_id, gtl_card(gene, repo_id, results), commit_message="Upload the GTL learngene", **hub_kwargs)
    return {"learngene": repo_id}
