"""The Stochastic Optimum Shifting main job: digits; per seed, a small VGG trained plainly and the same VGG trained with
SOS on its classifier at every epoch end (`OptimumShiftingCallback`) -> test accuracy, training loss, the classifier's
weight norm and the Hutchinson estimate of the trace of the training loss's Hessian (all parameters, the whole
training set), mean ± std over the seeds, in a report.

    hf-methods sos                                    # the embedded default: ~1 min on 2 CPUs
    hf-methods sos --num_samples 32                   # any recipe field can be overridden
    hf-methods sos --push_to_hub true --hub_model_id org/sos-digits   # the SOS model of the first seed
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
import torch.nn.functional as F
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
    untrained_accuracy,
)
from hf_methods.report import VERDICT_RULE, fmt_params, summarize_arms, verdict_against
from hf_methods.trainers import OptimumShiftingCallback, ResumableTrainer, hutchinson_trace

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "optimum_shifting" / "digits.yaml"
METHOD = "Optimum Shifting"
ARMS = ("plain", "SOS")
METRICS = ("accuracy", "train_loss", "hessian_trace", "classifier_norm")


@dataclass
class SOSRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/sos-digits", metadata={"help": "Where the model and the report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the SOS model (org/name)."})
    image_size: int = field(default=8, metadata={"help": "Digits are resized from 8x8 to this size."})
    hidden_sizes: list[int] = field(
        default_factory=lambda: [16, 128],
        metadata={"help": "VGG channels per stage (the last is the classifier's input)."},
    )
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "VGG convolutions per stage."})
    epochs: float = field(default=20, metadata={"help": "Training epochs of every model."})
    learning_rate: float = field(default=0.003, metadata={"help": "AdamW learning rate, cosine schedule."})
    num_samples: int = field(default=64, metadata={"help": "Training images per shift (fewer than d_in + 1)."})
    hessian_probes: int = field(default=20, metadata={"help": "Rademacher probes of the Hutchinson estimate."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of each arm per seed."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_samples < 1 or self.hessian_probes < 1 or not self.epochs > 0:
            raise ValueError(
                f"num_samples, hessian_probes and epochs must be positive, got {self.num_samples}, "
                f"{self.hessian_probes}, {self.epochs}."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


def flatness(model, train_set: datasets.Dataset, probes: int, seed: int) -> tuple[float, float]:
    """(training loss, Hutchinson trace of its Hessian over all parameters), on the whole training set, eval mode."""
    model.eval()
    rows = train_set[:]
    x, y = rows["pixel_values"], rows["labels"]

    def loss():
        return F.cross_entropy(model(pixel_values=x).logits, y)

    with torch.no_grad():
        value = float(loss())
    return value, hutchinson_trace(loss, model.parameters(), num_probes=probes, seed=seed)


def classifier_norm(model) -> float:
    layer = model.classifier
    return float(torch.cat([layer.weight.detach().flatten(), layer.bias.detach()]).norm())


def train_arm(recipe: SOSRecipe, arm: str, seed: int, data, work: Path):
    torch.manual_seed(seed)
    model = digits_vgg(recipe.hidden_sizes, recipe.depths)
    args = training_args(recipe, work, learning_rate=recipe.learning_rate, num_train_epochs=recipe.epochs, seed=seed,
                         eval_strategy="no", disable_tqdm=True)  # fmt: skip
    callback = OptimumShiftingCallback(num_samples=recipe.num_samples, seed=seed) if arm == "SOS" else None
    trainer = ResumableTrainer(
        model=model, args=args, train_dataset=in_memory_rows(data["train"]), callbacks=[c for c in (callback,) if c]
    )
    trainer.remove_callback(transformers.PrinterCallback)  # the run prints one line per arm
    train(trainer)
    return model, callback


def run(recipe: SOSRecipe) -> dict:
    run = Run(recipe, stages=len(recipe.seeds) * len(ARMS) + 1)
    datasets.disable_progress_bars()
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    rows, kept = [], None
    for seed in recipe.seeds:
        for arm in ARMS:
            key = f"seed{seed}-{arm}"
            done = run.resume_stage(f"seed {seed}: {arm} training, {recipe.epochs:g} epochs", key)
            keep = seed == recipe.seeds[0] and arm == "SOS"
            if done is None:
                model, callback = train_arm(recipe, arm, seed, data, run.trainer_dir(key))
                loss, trace = flatness(model, data["train"], recipe.hessian_probes, seed)
                shifts = callback.history if callback else []
                accuracy = untrained_accuracy(model, data["test"])  # computed directly, as Trainer.evaluate would
                done = {"arm": arm, "seed": seed, "accuracy": accuracy, "train_loss": loss,
                        "hessian_trace": trace, "classifier_norm": classifier_norm(model),
                        "shifts": [{"step": s["step"], **s["classifier"]} for s in shifts]}  # fmt: skip
                run.save_stage(key, done, model if keep else None)
                run.say(
                    f"  accuracy {done['accuracy']:.3f}, training loss {loss:.4f}, Hessian trace {trace:.2f}, "
                    f"classifier norm {done['classifier_norm']:.2f}"
                )
            if keep:
                kept = VGGForImageClassification.from_pretrained(run.stage_folder(key), trust_remote_code=False)
            rows.append(done)
    summary = summarize_arms(rows, ARMS, METRICS)
    processor = digits_image_processor(recipe.image_size)
    verdicts = [
        verdict_against(summary, "SOS", "accuracy", "test accuracy"),
        verdict_against(summary, "SOS", "hessian_trace", "Hessian trace (lower is flatter)", higher_is_better=False),
    ]
    results = {
        "method": METHOD,
        "dataset": "scikit-learn digits",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe, kept),
        "recipe": dataclasses.asdict(recipe),
        "runs": rows,
        "summary": summary,
        "verdict": " ".join([*verdicts, VERDICT_RULE]),
        "input_format": input_format(processor),
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the SOS model of the first seed with its card, and the report")
    model = for_pipeline(kept, processor)
    run.save_model(model, "sos", sos_card(model, run.out / "sos", results), processor)
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    by = {s["arm"]: s for s in summary}
    run.finish(
        f"SOS done in {results['elapsed_s']:.0f}s: accuracy plain {by['plain']['accuracy_mean']:.3f} / SOS "
        f"{by['SOS']['accuracy_mean']:.3f}, Hessian trace plain {by['plain']['hessian_trace_mean']:.2f} / SOS "
        f"{by['SOS']['hessian_trace_mean']:.2f}. {results['verdict']} Report in {run.out}/"
    )
    return results


def _training_setup(recipe: SOSRecipe, model) -> str:
    size, d_in = recipe.image_size, model.classifier.in_features
    return (
        f"Digits ({size}x{size}), VGG {recipe.hidden_sizes} x {recipe.depths} with BatchNorm, AdamW lr "
        f"{recipe.learning_rate:g}, cosine schedule, batch {recipe.batch_size}, {recipe.epochs:g} epochs. SOS: at "
        f"every epoch end the classifier ({d_in} inputs + bias) moves to the minimum-norm weights with the same "
        f"outputs on {recipe.num_samples} random training images. Hessian trace: Hutchinson, {recipe.hessian_probes} "
        f"probes, all parameters, the whole training set. Seeds {recipe.seeds}."
    )


def sos_card(model, repo_or_path, results: dict):
    sos = next(s for s in results["summary"] if s["arm"] == "SOS")
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"VGG trained with Stochastic Optimum Shifting ({fmt_params(model.num_parameters())} parameters), digits",
        description=(
            "A small VGG whose classifier was moved to its minimum-norm equivalent on a random batch at every epoch "
            f"end (Stochastic Optimum Shifting). Seed {results['recipe']['seeds'][0]} of the recipe's runs."
        ),
        tags=["optimum-shifting", "flat-minima"],
        training_setup=results["training_setup"],
        metrics={"accuracy (mean over seeds)": round(sos["accuracy_mean"], 4)},
        dataset=results["dataset"],
        pipeline_tag="image-classification",
        input_format=results["input_format"],
    )


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric, label in zip(
        axes, ("accuracy", "hessian_trace", "classifier_norm"), ("test accuracy", "Hessian trace", "classifier norm")
    ):
        means = [s[f"{metric}_mean"] for s in summary]
        stds = [s[f"{metric}_std"] for s in summary]
        ax.bar(range(len(summary)), means, yerr=stds, capsize=4, color=["#999999", "#dd8452"])
        for i, (m, d) in enumerate(zip(means, stds)):
            ax.text(i, m + d, f"{m:.3g}", ha="center", va="bottom")
        ax.set_xticks(range(len(summary)), [s["arm"] for s in summary])
        ax.set(title=f"{label} (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    lines = [
        f"# Stochastic Optimum Shifting on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"**{results['verdict']}**",
        "",
        "![report](report.png)",
        "",
        "| arm | test accuracy | training loss | Hessian trace | classifier norm |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['arm']} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} | {s['train_loss_mean']:.4f} ± "
        f"{s['train_loss_std']:.4f} | {s['hessian_trace_mean']:.2f} ± {s['hessian_trace_std']:.2f} | "
        f"{s['classifier_norm_mean']:.2f} ± {s['classifier_norm_std']:.2f} |"
        for s in results["summary"]
    ]
    shifts = [s for r in results["runs"] for s in r["shifts"]]
    if shifts:
        worst = max(s["max_output_change"] for s in shifts)
        shrink = sum(s["norm_after"] / s["norm_before"] for s in shifts) / len(shifts)
        lines += [
            "",
            f"{len(shifts)} shifts in all: each kept the classifier's outputs on its batch (largest change "
            f"{worst:.1e}) and left it {shrink:.3f} of its norm on average.",
        ]
    lines += ["", "The SOS model of the first seed is saved in `sos/` (pipeline-ready, with its card).", ""]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(SOSRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_sos_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of an SOS run: the SOS model of the first seed."""
    from hf_methods.hub import push_saved_model

    model = VGGForImageClassification.from_pretrained(out_dir / "sos", trust_remote_code=False)
    push_saved_model(out_dir / "sos", repo_id, sos_card(model, repo_id, results),
                     commit_message="Upload the SOS model", **hub_kwargs)  # fmt: skip
    return {"sos": repo_id}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.optimum_shifting.pipeline"))
