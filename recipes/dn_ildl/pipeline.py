"""The DN-ILDL main job: features of blended digits from a small VGG trained by the recipe, their label distributions
(the blend weights) corrupted with instance- and label-dependent noise; per seed, least squares on the noisy
distributions, DN-ILDL on them, and least squares on the true ones (the noiseless fit, a reference) -> the six LDL
metrics on test blends, mean ± std over the seeds.

    hf-methods dn-ildl                                  # the embedded default: ~30 s on 2 CPUs
    hf-methods dn-ildl --nuclear_weight 1               # any recipe field can be overridden
    hf-methods dn-ildl --push_to_hub true --hub_model_id org/dn-ildl-digits   # the DN-ILDL map of the first seed
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
from hf_methods.cli import run_script
from hf_methods.data import digit_blends, digits, in_memory_rows
from hf_methods.models.dn_ildl import DNILDL, DNILDLForLabelDistribution
from hf_methods.recipe import RecipeArguments, Run, digits_vgg, parse_recipe, train, training_args
from hf_methods.report import VERDICT_RULE, arm_metrics_figure, arm_metrics_markdown, summarize_arms, verdict_against
from hf_methods.trainers import ResumableTrainer
from hf_methods.trainers.ldl_losses import LOWER_IS_BETTER, METRICS, ldl_metrics

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "dn_ildl" / "digits.yaml"
METHOD = "DN-ILDL"
ARMS = ("least squares", "DN-ILDL", "noiseless least squares")
_SOLVER = DNILDL()


@dataclass
class DNILDLRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/dn-ildl-digits", metadata={"help": "Where the models and report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the DN-ILDL map (org/name)."})
    num_train: int = field(default=1000, metadata={"help": "Training blends (noisy distributions)."})
    num_test: int = field(default=500, metadata={"help": "Test blends (true distributions)."})
    backbone_steps: int = field(default=300, metadata={"help": "Steps of the VGG trained on single digits."})
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "VGG channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "VGG convolutions per stage."})
    feature_noise_rows: int = field(default=3, metadata={"help": "Non-zero rows of the feature noise P."})
    feature_noise_scale: float = field(default=0.1, metadata={"help": "Std of P's non-zero entries."})
    label_noise_rows: int = field(default=3, metadata={"help": "Non-zero rows of the label noise Q."})
    label_noise_scale: float = field(default=0.5, metadata={"help": "Q's non-zero entries are U(0, scale)."})
    nuclear_weight: float = field(default=_SOLVER.nuclear_weight, metadata={"help": "DN-ILDL's l1."})
    feature_noise_weight: float = field(default=_SOLVER.feature_noise_weight, metadata={"help": "DN-ILDL's l2."})
    label_noise_weight: float = field(default=_SOLVER.label_noise_weight, metadata={"help": "DN-ILDL's l3."})
    graph_weight: float = field(default=_SOLVER.graph_weight, metadata={"help": "DN-ILDL's l4."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Blends and noise per seed."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_train", "num_test", "backbone_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.feature_noise_rows < 0 or self.label_noise_rows < 0:
            raise ValueError("feature_noise_rows and label_noise_rows must be >= 0.")
        if self.label_noise_rows > 10:
            raise ValueError(f"label_noise_rows must be at most 10 (the labels), got {self.label_noise_rows}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")

    def solver(self, **overrides) -> DNILDL:
        values = dict(nuclear_weight=self.nuclear_weight, feature_noise_weight=self.feature_noise_weight,
                      label_noise_weight=self.label_noise_weight, graph_weight=self.graph_weight)  # fmt: skip
        return DNILDL(**{**values, **overrides})


def least_squares() -> DNILDL:
    """Plain least squares with the same prediction rule: no low rank, no noise factors, no graph (one step)."""
    return DNILDL(nuclear_weight=0.0, feature_noise_weight=1e12, label_noise_weight=1e12, graph_weight=0.0, max_iter=1)


@torch.no_grad()
def features(model, images: torch.Tensor) -> torch.Tensor:
    """The classifier's input (pooled features) of `images`."""
    found = []
    hook = model.classifier.register_forward_pre_hook(lambda module, args: found.append(args[0]))
    try:
        model.eval()(pixel_values=images)
    finally:
        hook.remove()
    return found[0].to(torch.float64)


def corrupt(x: torch.Tensor, d: torch.Tensor, recipe: DNILDLRecipe, seed: int) -> torch.Tensor:
    """`normalize(max(D + X P + D Q, 0))` with `feature_noise_rows` non-zero rows of P (N(0, scale)) and
    `label_noise_rows` of Q (U(0, scale)): noise that depends on the instance and on the labels."""
    g = torch.Generator().manual_seed(10_000 + seed)
    p = torch.zeros(x.shape[1], d.shape[1], dtype=torch.float64)
    rows = torch.randperm(x.shape[1], generator=g)[: recipe.feature_noise_rows]
    p[rows] = recipe.feature_noise_scale * torch.randn(len(rows), d.shape[1], generator=g, dtype=torch.float64)
    q = torch.zeros(d.shape[1], d.shape[1], dtype=torch.float64)
    rows = torch.randperm(d.shape[1], generator=g)[: recipe.label_noise_rows]
    q[rows] = recipe.label_noise_scale * torch.rand(len(rows), d.shape[1], generator=g, dtype=torch.float64)
    noisy = (d + x @ p + d @ q).clamp_min(0)
    sums = noisy.sum(1, keepdim=True)
    return torch.where(sums > 0, noisy / sums.clamp_min(1e-300), d)


def run(recipe: DNILDLRecipe) -> dict:
    run = Run(recipe, stages=2 + len(recipe.seeds))
    datasets.disable_progress_bars()
    data = digits(image_size=8, seed=recipe.seed)
    done = run.resume_stage(f"a VGG on single digits, {recipe.backbone_steps} steps (the feature extractor)",
                            "backbone")  # fmt: skip
    if done is None:
        torch.manual_seed(recipe.seed)
        backbone = digits_vgg(recipe.hidden_sizes, recipe.depths)
        args = training_args(recipe, run.trainer_dir("backbone"), learning_rate=0.003, max_steps=recipe.backbone_steps,
                             eval_strategy="no", disable_tqdm=True)  # fmt: skip
        trainer = ResumableTrainer(model=backbone, args=args, train_dataset=in_memory_rows(data["train"]))
        trainer.remove_callback(transformers.PrinterCallback)
        train(trainer)
        run.save_stage("backbone", {"steps": recipe.backbone_steps}, backbone)
    backbone = type(digits_vgg(recipe.hidden_sizes, recipe.depths)).from_pretrained(
        run.stage_folder("backbone"), trust_remote_code=False
    )
    train_rows, test_rows = data["train"][:], data["test"][:]
    test_images, test_dists = digit_blends(test_rows["pixel_values"], test_rows["labels"], recipe.num_test,
                                           seed=recipe.seed)  # fmt: skip
    rows, kept = [], None
    for seed in recipe.seeds:
        key = f"seed{seed}"
        done = run.resume_stage(f"seed {seed}: {recipe.num_train} noisy blends, three fits", key)
        images, dists = digit_blends(train_rows["pixel_values"], train_rows["labels"], recipe.num_train,
                                     seed=1000 + seed)  # fmt: skip
        x, t = features(backbone, images), features(backbone, test_images)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        x, t = (x - mean) / std, (t - mean) / std  # standardized with the training features' statistics
        truth = dists.to(torch.float64)
        noisy = corrupt(x, truth, recipe, seed)
        fitted = {"least squares": least_squares().fit(x, noisy), "DN-ILDL": recipe.solver().fit(x, noisy),
                  "noiseless least squares": least_squares().fit(x, truth)}  # fmt: skip
        if done is None:
            done = [{"arm": arm, "seed": seed, **ldl_metrics(fitted[arm].predict(t), test_dists)} for arm in ARMS]
            done[1]["iterations"] = fitted["DN-ILDL"].n_iter_
            done[0]["noise_chebyshev"] = ldl_metrics(noisy, truth)["chebyshev"]
            run.save_stage(key, {"rows": done})
            run.say("  cosine " + ", ".join(f"{r['arm']} {r['cosine']:.3f}" for r in done))
        else:
            done = done["rows"]
        if seed == recipe.seeds[0]:
            kept = DNILDLForLabelDistribution.from_solver(fitted["DN-ILDL"], id2label=backbone.config.id2label)
        rows += done
    summary = summarize_arms(rows, ARMS, METRICS)
    dn = [verdict_against(summary[:2], "DN-ILDL", m, m, higher_is_better=not LOWER_IS_BETTER[m]) for m in METRICS]
    results = {
        "method": METHOD,
        "dataset": "scikit-learn digits blended into label distributions, dependent label-distribution noise",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "runs": rows,
        "summary": summary,
        "verdict": " ".join(dn) + " " + VERDICT_RULE,
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the DN-ILDL map of the first seed with its card, and the report")
    run.save_model(kept, "dn-ildl", dn_ildl_card(kept, run.out / "dn-ildl", results))
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"DN-ILDL done in {results['elapsed_s']:.0f}s: cosine "
        + ", ".join(f"{s['arm']} {s['cosine_mean']:.3f}" for s in summary)
        + f". Report in {run.out}/"
    )
    return results


def _training_setup(recipe: DNILDLRecipe) -> str:
    return (
        f"Features: the pooled output (the classifier's input) of a VGG {recipe.hidden_sizes} x {recipe.depths} "
        f"trained {recipe.backbone_steps} steps on single digits, standardized. Inputs: {recipe.num_train} training "
        f"and {recipe.num_test} test blends of 2 or 3 digits (Dirichlet(2) weights = the label distribution). Noise: "
        f"normalize(max(D + X P + D Q, 0)) with {recipe.feature_noise_rows} non-zero rows of P (N(0, "
        f"{recipe.feature_noise_scale:g})) and {recipe.label_noise_rows} of Q (U(0, {recipe.label_noise_scale:g})). "
        f"DN-ILDL: l1 {recipe.nuclear_weight:g}, l2 {recipe.feature_noise_weight:g}, l3 {recipe.label_noise_weight:g}, "
        f"l4 {recipe.graph_weight:g}. Every fit predicts normalize(max(xW, 0)). Seeds {recipe.seeds}."
    )


def dn_ildl_card(model, repo_or_path, results: dict):
    mine = next(s for s in results["summary"] if s["arm"] == "DN-ILDL")
    return model.model_card(
        repo_or_path,
        {
            "training_setup": results["training_setup"],
            "metrics": {f"{m} (mean over seeds)": round(mine[f"{m}_mean"], 4) for m in METRICS},
            "dataset": results["dataset"],
        },
    )


def report_figure(results: dict):
    return arm_metrics_figure(results["summary"], METRICS, LOWER_IS_BETTER, ["#4c72b0", "#dd8452", "#999999"])


def report_markdown(results: dict) -> str:
    notes = ["The noiseless fit sees the true distributions: it is the reference, not a competitor."]
    closing = ["The DN-ILDL map of the first seed is saved in `dn-ildl/` (with its card); the feature extractor it "
               "reads is the recipe's VGG (its `_stages/backbone/` folder)."]  # fmt: skip
    return arm_metrics_markdown(results, f"DN-ILDL on {results['dataset']}", METRICS, LOWER_IS_BETTER, notes, closing)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(DNILDLRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_dn_ildl_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a DN-ILDL run: the DN-ILDL map of the first seed."""
    from hf_methods.hub import push_saved_model

    model = DNILDLForLabelDistribution.from_pretrained(out_dir / "dn-ildl", trust_remote_code=False)
    push_saved_model(out_dir / "dn-ildl", repo_id, dn_ildl_card(model, repo_id, results),
                     commit_message="Upload the DN-ILDL map", **hub_kwargs)  # fmt: skip
    return {"dn-ildl": repo_id}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.dn_ildl.pipeline"))
