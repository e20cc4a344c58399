"""The IMWA main job: a long-tailed digits training split (100:1 from digit 0 to digit 9) and a balanced test split;
per seed, four small VGGs with BatchNorm: one model for `steps` steps, one model for `replicas x steps` (the compute of
the averages), vanilla model weight averaging (`replicas` models averaged once, IMWA with one episode) and IMWA
(averaged every `steps / episodes` steps) -> balanced test accuracy (mean per-class recall) and the three rarest
digits' recall, mean ± std over the seeds, in a report.

    hf-methods imwa                                   # the embedded default: ~1 min on 2 CPUs
    hf-methods imwa --episodes 4 --replicas 2         # any recipe field can be overridden
    hf-methods imwa --push_to_hub true --hub_model_id org/imwa-digits   # the IMWA model of the first seed
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

from hf_methods import __version__
from hf_methods.cards import run_model_card
from hf_methods.cli import run_script
from hf_methods.data import digits, digits_image_processor, for_pipeline, in_memory_rows, input_format
from hf_methods.models.convnets import VGGForImageClassification
from hf_methods.recipe import (
    RecipeArguments,
    Run,
    digits_vgg,
    parse_recipe,
    train,
    training_args,
)
from hf_methods.report import VERDICT_RULE, fmt_params, summarize_arms, verdict_against
from hf_methods.trainers import IMWAConfig, IMWATrainer, ResumableTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "imwa" / "digits.yaml"
METHOD = "IMWA"
ARMS = ("one model", "one model, same compute", "vanilla averaging", "IMWA")
TAIL = 3  # the rarest digits whose recall the report shows apart


@dataclass
class IMWARecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/imwa-digits", metadata={"help": "Where the model and the report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the IMWA model (org/name)."})
    image_size: int = field(default=8, metadata={"help": "Digits are resized from 8x8 to this size."})
    imbalance_ratio: float = field(
        default=100.0, metadata={"help": "Images of digit 0 over images of digit 9 in the training split (>= 1)."}
    )
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "VGG channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "VGG convolutions per stage."})
    replicas: int = field(default=4, metadata={"help": "M: models trained from each average."})
    episodes: int = field(default=8, metadata={"help": "E: averaging rounds of IMWA (must divide steps)."})
    steps: int = field(default=320, metadata={"help": "T: optimizer steps of every model (each replica's budget)."})
    learning_rate: float = field(default=0.003, metadata={"help": "AdamW learning rate, cosine schedule."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of every arm per seed."})

    def __post_init__(self):
        super().__post_init__()
        if not self.imbalance_ratio >= 1.0:
            raise ValueError(f"imbalance_ratio must be >= 1, got {self.imbalance_ratio}.")
        if self.replicas < 1 or self.episodes < 1 or self.steps < 1:
            raise ValueError(
                f"replicas, episodes and steps must be positive, got {self.replicas}, {self.episodes}, {self.steps}."
            )
        if self.steps % self.episodes:
            raise ValueError(f"episodes={self.episodes} must divide steps={self.steps}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


def long_tailed(train: datasets.Dataset, ratio: float) -> tuple[datasets.Dataset, list[int]]:
    """Digit c keeps the first `round(n_max * ratio^(-c/9))` of its images (at least one): an exponential profile from
    the most frequent digit 0 to digit 9, `ratio` times rarer. Returns the subset and the count per digit."""
    labels = [int(y) for y in train[:]["labels"]]
    by_class = {c: [i for i, y in enumerate(labels) if y == c] for c in range(10)}
    n_max = min(len(v) for v in by_class.values())
    counts = [max(1, round(n_max * ratio ** (-c / 9))) for c in range(10)]
    keep = sorted(i for c in range(10) for i in by_class[c][: counts[c]])
    return train.select(keep), counts


@torch.no_grad()
def per_class_recall(model, test: datasets.Dataset) -> list[float]:
    model.eval()
    rows = test[:]  # every column as one tensor
    x, y = rows["pixel_values"], torch.as_tensor(rows["labels"])
    predictions = torch.cat([model(pixel_values=x[i : i + 256]).logits.argmax(-1) for i in range(0, len(y), 256)])
    return [float((predictions[y == c] == c).float().mean()) for c in range(10)]


def _args(recipe: IMWARecipe, work: Path, steps: int, seed: int, cls=transformers.TrainingArguments, **kw):
    return training_args(recipe, work, learning_rate=recipe.learning_rate, max_steps=steps, seed=seed, cls=cls,
                         eval_strategy="no", disable_tqdm=True, **kw)  # fmt: skip


def train_arm(recipe: IMWARecipe, arm: str, seed: int, train_set, work: Path) -> VGGForImageClassification:
    """One arm of one seed; every arm starts from the same initialization of that seed."""
    torch.manual_seed(seed)
    model = digits_vgg(recipe.hidden_sizes, recipe.depths)
    if arm in ("one model", "one model, same compute"):
        steps = recipe.steps * (recipe.replicas if arm == "one model, same compute" else 1)
        trainer = ResumableTrainer(model=model, args=_args(recipe, work, steps, seed), train_dataset=train_set)
        trainer.remove_callback(transformers.PrinterCallback)  # the run prints one line per arm
        train(trainer)
        return model
    episodes = 1 if arm == "vanilla averaging" else recipe.episodes
    args = _args(recipe, work, recipe.steps, seed, cls=IMWAConfig, imwa_replicas=recipe.replicas,
                 imwa_episodes=episodes, save_strategy="no")  # fmt: skip
    IMWATrainer(model, args, train_dataset=train_set).train()
    return model


def run(recipe: IMWARecipe) -> dict:
    run = Run(recipe, stages=len(recipe.seeds) * len(ARMS) + 1)
    datasets.disable_progress_bars()
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    train_set, counts = long_tailed(data["train"], recipe.imbalance_ratio)
    rows_in_memory = in_memory_rows(train_set)
    test = data["test"]
    tail = sorted(range(10), key=lambda c: counts[c])[:TAIL]
    rows, kept = [], None
    for seed in recipe.seeds:
        for arm in ARMS:
            key = f"seed{seed}-{arm.replace(' ', '_').replace(',', '')}"
            compute = recipe.steps * (1 if arm == "one model" else recipe.replicas)
            done = run.resume_stage(f"seed {seed}: {arm} ({compute} optimizer steps in all)", key)
            keep = seed == recipe.seeds[0] and arm == "IMWA"
            if done is None:
                model = train_arm(recipe, arm, seed, rows_in_memory, run.trainer_dir(key))
                recall = per_class_recall(model, test)
                done = {"arm": arm, "seed": seed, "compute_steps": compute, "recall": recall,
                        "balanced_accuracy": statistics.fmean(recall),
                        "tail_recall": statistics.fmean(recall[c] for c in tail)}  # fmt: skip
                run.save_stage(key, done, model if keep else None)
                run.say(f"  balanced accuracy {done['balanced_accuracy']:.3f}, rarest digits {done['tail_recall']:.3f}")
            if keep:
                kept = VGGForImageClassification.from_pretrained(run.stage_folder(key), trust_remote_code=False)
            rows.append(done)
    summary = summarize_arms(rows, ARMS, ("balanced_accuracy", "tail_recall"))
    for entry in summary:
        entry["compute_steps"] = next(r["compute_steps"] for r in rows if r["arm"] == entry["arm"])
    processor = digits_image_processor(recipe.image_size)
    results = {
        "method": METHOD,
        "dataset": "scikit-learn digits, long-tailed training split",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe, counts, len(train_set)),
        "recipe": dataclasses.asdict(recipe),
        "train_counts": counts,
        "tail_digits": tail,
        "runs": rows,
        "summary": summary,
        "verdict": verdict_against(summary, "IMWA", "balanced_accuracy", "balanced accuracy") + " " + VERDICT_RULE,
        "input_format": input_format(processor),
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the IMWA model of the first seed with its card, and the report")
    model = for_pipeline(kept, processor)
    imwa = next(s for s in summary if s["arm"] == "IMWA")
    run.save_model(model, "imwa", imwa_card(model, run.out / "imwa", results, imwa), processor)
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"IMWA done in {results['elapsed_s']:.0f}s: balanced accuracy "
        + ", ".join(f"{s['arm']} {s['balanced_accuracy_mean']:.3f}" for s in summary)
        + f". {results['verdict']} Report in {run.out}/"
    )
    return results


def _training_setup(recipe: IMWARecipe, counts: list[int], n: int) -> str:
    return (
        f"Long-tailed digits: {n} training images, {counts[0]} of digit 0 down to {counts[-1]} of digit 9 "
        f"(imbalance {recipe.imbalance_ratio:g}:1); balanced test split. VGG {recipe.hidden_sizes} x {recipe.depths} "
        f"with BatchNorm, AdamW lr {recipe.learning_rate:g} with a cosine schedule, batch {recipe.batch_size}. Every "
        f"model trains {recipe.steps} steps; the averages use {recipe.replicas} replicas (IMWA averages every "
        f"{recipe.steps // recipe.episodes} steps, {recipe.episodes} episodes). Seeds {recipe.seeds}."
    )


def imwa_card(model, repo_or_path, results: dict, imwa: dict):
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"IMWA-trained VGG ({fmt_params(sum(p.numel() for p in model.parameters()))} parameters), digits",
        description=(
            "A small VGG trained with Iterative Model Weight Averaging: replicas trained from the current average, "
            "averaged (parameters and BatchNorm statistics) after every episode. Seed "
            f"{results['recipe']['seeds'][0]} of the recipe's runs."
        ),
        tags=["imwa", "model-averaging", "long-tail"],
        training_setup=results["training_setup"],
        metrics={"balanced accuracy (mean over seeds)": round(imwa["balanced_accuracy_mean"], 4)},
        dataset=results["dataset"],
        pipeline_tag="image-classification",
        input_format=results["input_format"],
    )


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    fig, (ax_acc, ax_counts) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [s["arm"] for s in summary]
    means, stds = [s["balanced_accuracy_mean"] for s in summary], [s["balanced_accuracy_std"] for s in summary]
    ax_acc.bar(range(len(names)), means, yerr=stds, capsize=4,
               color=["#999999", "#666666", "#4c72b0", "#dd8452"])  # fmt: skip
    for i, (mean, std) in enumerate(zip(means, stds)):
        ax_acc.text(i, mean + std + 0.005, f"{mean:.3f}", ha="center")
    ax_acc.set_xticks(range(len(names)), names, rotation=15)
    low = min(m - d for m, d in zip(means, stds))
    ax_acc.set(ylim=(max(0.0, low - 0.05), 1.0), ylabel="balanced test accuracy (mean ± std over seeds)",
               title="Long-tailed digits")  # fmt: skip
    ax_counts.bar(range(10), results["train_counts"], color="#4c72b0")
    ax_counts.set(xlabel="digit", ylabel="training images", title="Training split", xticks=range(10))
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    lines = [
        f"# IMWA on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"**{results['verdict']}**",
        "",
        "![report](report.png)",
        "",
        f"| arm | optimizer steps in all | balanced accuracy | recall of the rarest digits {results['tail_digits']} |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s['arm']} | {s['compute_steps']} | {s['balanced_accuracy_mean']:.3f} ± "
        f"{s['balanced_accuracy_std']:.3f} | {s['tail_recall_mean']:.3f} ± {s['tail_recall_std']:.3f} |"
        for s in results["summary"]
    ]
    lines += ["", "Every run:", "", "| seed | arm | balanced accuracy | rarest digits |", "|---|---|---|---|"]
    lines += [
        f"| {r['seed']} | {r['arm']} | {r['balanced_accuracy']:.3f} | {r['tail_recall']:.3f} |" for r in results["runs"]
    ]
    lines += ["", "The IMWA model of the first seed is saved in `imwa/` (pipeline-ready, with its card).", ""]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(IMWARecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_imwa_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of an IMWA run: the IMWA model of the first seed."""
    from hf_methods.hub import push_saved_model

    model = VGGForImageClassification.from_pretrained(out_dir / "imwa", trust_remote_code=False)
    imwa = next(s for s in results["summary"] if s["arm"] == "IMWA")
    push_saved_model(out_dir / "imwa", repo_id, imwa_card(model, repo_id, results, imwa),
                     commit_message="Upload the IMWA model", **hub_kwargs)  # fmt: skip
    return {"imwa": repo_id}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.imwa.pipeline"))
