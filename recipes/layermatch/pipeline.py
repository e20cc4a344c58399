"""The LayerMatch main job: digits with `num_labels` labeled training images and the rest unlabeled; per seed, a small
VGG trained on the labeled images only, with FixMatch, and with LayerMatch (Grad-ReLU + Avg-Clustering), the same
steps each -> test accuracy and the share of unlabeled images with a pseudo-label, mean ± std over the seeds.

    hf-methods layermatch                             # the embedded default: ~1 min on 2 CPUs
    hf-methods layermatch --num_labels 10             # any recipe field can be overridden
    hf-methods layermatch --push_to_hub true --hub_model_id org/layermatch-digits   # the LayerMatch model, seed 0
"""

from __future__ import annotations

import dataclasses
import logging
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
from hf_methods.data import digits, digits_image_processor, for_pipeline, input_format
from hf_methods.models.convnets import VGGForImageClassification
from hf_methods.recipe import (
    RecipeArguments,
    Run,
    digits_vgg,
    parse_recipe,
    train,
    training_args,
    untrained_accuracy,
)
from hf_methods.report import VERDICT_RULE, fmt_params, summarize_arms, verdict_against
from hf_methods.trainers import LayerMatchConfig, LayerMatchTrainer, ResumableTrainer, SemiSupervisedDataset

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "layermatch" / "digits.yaml"
METHOD = "LayerMatch"
ARMS = ("supervised only", "FixMatch", "LayerMatch")


@dataclass
class LayerMatchRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/layermatch-digits", metadata={"help": "Where the model and report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the LayerMatch model (org/name)."})
    batch_size: int = field(default=16, metadata={"help": "Labeled images per step."})
    image_size: int = field(default=8, metadata={"help": "Digits are resized from 8x8 to this size."})
    num_labels: int = field(default=40, metadata={"help": "Labeled training images, balanced over the 10 digits."})
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "VGG channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "VGG convolutions per stage."})
    steps: int = field(default=400, metadata={"help": "Optimizer steps of every arm."})
    unlabeled_ratio: int = field(default=4, metadata={"help": "Unlabeled images per labeled image in a batch (mu)."})
    threshold: float = field(default=0.95, metadata={"help": "Pseudo-label confidence threshold tau."})
    lambda_u: float = field(default=1.0, metadata={"help": "Weight of the unlabeled term."})
    center_momentum: float = field(default=0.99, metadata={"help": "EMA momentum of LayerMatch's centres."})
    learning_rate: float = field(default=0.003, metadata={"help": "AdamW learning rate, cosine schedule."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of each arm per seed."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_labels < 10 or self.num_labels % 10:
            raise ValueError(f"num_labels must be a positive multiple of 10 (balanced digits), got {self.num_labels}.")
        if self.steps < 1 or self.unlabeled_ratio < 1:
            raise ValueError(f"steps and unlabeled_ratio must be positive, got {self.steps}, {self.unlabeled_ratio}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


def split(train: datasets.Dataset, num_labels: int, seed: int):
    """`num_labels / 10` labeled images of every digit (drawn with `seed`) and every other training image unlabeled."""
    rows = train[:]
    g = torch.Generator().manual_seed(seed)
    labeled_idx = []
    for digit in range(10):
        idx = (rows["labels"] == digit).nonzero().flatten()
        labeled_idx += idx[torch.randperm(len(idx), generator=g)[: num_labels // 10]].tolist()
    taken = set(labeled_idx)
    labeled = [{"pixel_values": rows["pixel_values"][i], "labels": rows["labels"][i]} for i in labeled_idx]
    unlabeled = [rows["pixel_values"][i] for i in range(len(rows["labels"])) if i not in taken]
    return labeled, unlabeled


def train_arm(recipe: LayerMatchRecipe, arm: str, seed: int, labeled, unlabeled, work: Path) -> tuple:
    torch.manual_seed(seed)
    model = digits_vgg(recipe.hidden_sizes, recipe.depths)
    common = dict(learning_rate=recipe.learning_rate, max_steps=recipe.steps, seed=seed, eval_strategy="no",
                  disable_tqdm=True, logging_strategy="steps", logging_steps=max(1, recipe.steps // 10))  # fmt: skip
    if arm == "supervised only":
        trainer = ResumableTrainer(model=model, args=training_args(recipe, work, **common), train_dataset=labeled)
    else:
        flags = dict(grad_relu=arm == "LayerMatch", avg_clustering=arm == "LayerMatch")
        args = training_args(recipe, work, cls=LayerMatchConfig, threshold=recipe.threshold, lambda_u=recipe.lambda_u,
                             center_momentum=recipe.center_momentum, **flags, **common)  # fmt: skip
        data = SemiSupervisedDataset(labeled, unlabeled, unlabeled_ratio=recipe.unlabeled_ratio)
        trainer = LayerMatchTrainer(model=model, args=args, train_dataset=data)
    trainer.remove_callback(transformers.PrinterCallback)  # the run prints one line per arm
    train(trainer)
    mask = [e["mask_rate"] for e in trainer.state.log_history if "mask_rate" in e]
    return model, (mask[-1] if mask else None)


def run(recipe: LayerMatchRecipe) -> dict:
    run = Run(recipe, stages=len(recipe.seeds) * len(ARMS) + 1)
    datasets.disable_progress_bars()
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    rows, kept = [], None
    for seed in recipe.seeds:
        labeled, unlabeled = split(data["train"], recipe.num_labels, seed)
        for arm in ARMS:
            key = f"seed{seed}-{arm.replace(' ', '_')}"
            done = run.resume_stage(f"seed {seed}: {arm}, {recipe.num_labels} labels, {recipe.steps} steps", key)
            keep = seed == recipe.seeds[0] and arm == "LayerMatch"
            if done is None:
                model, mask = train_arm(recipe, arm, seed, labeled, unlabeled, run.trainer_dir(key))
                done = {
                    "arm": arm,
                    "seed": seed,
                    "accuracy": untrained_accuracy(model, data["test"]),
                    "mask_rate": mask,
                }
                run.save_stage(key, done, model if keep else None)
                masked = f", pseudo-labeled share at the end {mask:.2f}" if mask is not None else ""
                run.say(f"  test accuracy {done['accuracy']:.3f}{masked}")
            if keep:
                kept = VGGForImageClassification.from_pretrained(run.stage_folder(key), trust_remote_code=False)
            rows.append(done)
    summary = summarize_arms(rows, ARMS, ("accuracy",))
    processor = digits_image_processor(recipe.image_size)
    results = {
        "method": METHOD,
        "dataset": f"scikit-learn digits, {recipe.num_labels} labels",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe, len(data["train"])),
        "recipe": dataclasses.asdict(recipe),
        "runs": rows,
        "summary": summary,
        "verdict": verdict_against(summary, "LayerMatch", "accuracy", "test accuracy") + " " + VERDICT_RULE,
        "input_format": input_format(processor),
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the LayerMatch model of the first seed with its card, and the report")
    model = for_pipeline(kept, processor)
    run.save_model(model, "layermatch", layermatch_card(model, run.out / "layermatch", results), processor)
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"LayerMatch done in {results['elapsed_s']:.0f}s: test accuracy "
        + ", ".join(f"{s['arm']} {s['accuracy_mean']:.3f}" for s in summary)
        + f". {results['verdict']} Report in {run.out}/"
    )
    return results


def _training_setup(recipe: LayerMatchRecipe, n_train: int) -> str:
    return (
        f"Digits ({recipe.image_size}x{recipe.image_size}): {recipe.num_labels} labeled training images "
        f"({recipe.num_labels // 10} per digit), the other {n_train - recipe.num_labels} unlabeled. VGG "
        f"{recipe.hidden_sizes} x {recipe.depths} with BatchNorm, AdamW lr {recipe.learning_rate:g}, cosine schedule, "
        f"{recipe.steps} steps of {recipe.batch_size} labeled (+ {recipe.unlabeled_ratio * recipe.batch_size} "
        f"unlabeled, weak and strong views) images. Threshold {recipe.threshold:g}, lambda_u {recipe.lambda_u:g}, "
        f"centre momentum {recipe.center_momentum:g}. Seeds {recipe.seeds} (each draws its own labeled images)."
    )


def layermatch_card(model, repo_or_path, results: dict):
    mine = next(s for s in results["summary"] if s["arm"] == "LayerMatch")
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"VGG trained with LayerMatch ({fmt_params(model.num_parameters())} parameters), digits, few labels",
        description=(
            "A small VGG trained semi-supervised with LayerMatch: FixMatch whose unlabeled term never trains the "
            "classifier (Grad-ReLU) and uses a moving average of it as cluster centres (Avg-Clustering). Seed "
            f"{results['recipe']['seeds'][0]} of the recipe's runs."
        ),
        tags=["layermatch", "semi-supervised", "fixmatch"],
        training_setup=results["training_setup"],
        metrics={"accuracy (mean over seeds)": round(mine["accuracy_mean"], 4)},
        dataset=results["dataset"],
        pipeline_tag="image-classification",
        input_format=results["input_format"],
    )


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    means, stds = [s["accuracy_mean"] for s in summary], [s["accuracy_std"] for s in summary]
    ax.bar(range(len(summary)), means, yerr=stds, capsize=4, color=["#999999", "#4c72b0", "#dd8452"])
    for i, (m, d) in enumerate(zip(means, stds)):
        ax.text(i, m + d + 0.005, f"{m:.3f}", ha="center")
    ax.set_xticks(range(len(summary)), [s["arm"] for s in summary])
    ax.set(ylabel="test accuracy (mean ± std over seeds)", title=results["dataset"],
           ylim=(max(0.0, min(m - d for m, d in zip(means, stds)) - 0.05), 1.0))  # fmt: skip
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    lines = [
        f"# LayerMatch on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"**{results['verdict']}**",
        "",
        "![report](report.png)",
        "",
        "| arm | test accuracy |",
        "|---|---|",
    ]
    lines += [f"| {s['arm']} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} |" for s in results["summary"]]
    lines += ["", "| seed | arm | test accuracy | pseudo-labeled share at the end |", "|---|---|---|---|"]
    lines += [
        f"| {r['seed']} | {r['arm']} | {r['accuracy']:.3f} | "
        f"{'' if r['mask_rate'] is None else format(r['mask_rate'], '.2f')} |"
        for r in results["runs"]
    ]
    lines += [
        "",
        "The LayerMatch model of the first seed is saved in `layermatch/` (pipeline-ready, with its card).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(LayerMatchRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_layermatch_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a LayerMatch run: the LayerMatch model of the first seed."""
    from hf_methods.hub import push_saved_model

    model = VGGForImageClassification.from_pretrained(out_dir / "layermatch", trust_remote_code=False)
    push_saved_model(out_dir / "layermatch", repo_id, layermatch_card(model, repo_id, results),
                     commit_message="Upload the LayerMatch model", **hub_kwargs)  # fmt: skip
    return {"layermatch": repo_id}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.layermatch.pipeline"))
