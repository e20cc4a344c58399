"""The RankMatch main job: label distributions made from digits (each image blends 2 or 3 digits with known weights;
the weights are its label distribution), `num_labeled` training blends with their distributions and `num_unlabeled`
without; per seed, a label-distribution VGG trained on the labeled blends only, with plain KL consistency on the
unlabeled ones (FixMatch-style: one weak view, no ranking) and with RankMatch (K weak views, pairwise ranking), the same
steps each -> the six LDL metrics on test blends, mean ± std over the seeds.

    hf-methods rankmatch                               # the embedded default: ~1 min on 2 CPUs
    hf-methods rankmatch --num_labeled 50              # any recipe field can be overridden
    hf-methods rankmatch --push_to_hub true --hub_model_id org/rankmatch-digits   # the RankMatch model, first seed
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
from hf_methods.data import digit_blends, digits
from hf_methods.models.label_distribution import LabelDistributionConfig, LabelDistributionModel
from hf_methods.recipe import RecipeArguments, Run, digits_vgg, parse_recipe, train, training_args
from hf_methods.report import VERDICT_RULE, arm_metrics_figure, arm_metrics_markdown, summarize_arms, verdict_against
from hf_methods.trainers import RankMatchConfig, RankMatchTrainer, ResumableTrainer, SemiSupervisedDataset
from hf_methods.trainers.ldl_losses import LOWER_IS_BETTER, METRICS, ldl_metrics

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "rankmatch" / "digits.yaml"
METHOD = "RankMatch"
ARMS = ("supervised only", "KL consistency", "RankMatch")


@dataclass
class RankMatchRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/rankmatch-digits", metadata={"help": "Where the model and report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the RankMatch model (org/name)."})
    batch_size: int = field(default=16, metadata={"help": "Labeled blends per step."})
    num_labeled: int = field(default=100, metadata={"help": "Training blends with their label distributions."})
    num_unlabeled: int = field(default=2000, metadata={"help": "Training blends without."})
    num_test: int = field(default=500, metadata={"help": "Test blends (from the test split's digits)."})
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "VGG channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "VGG convolutions per stage."})
    steps: int = field(default=400, metadata={"help": "Optimizer steps of every arm."})
    unlabeled_ratio: int = field(default=4, metadata={"help": "Unlabeled blends per labeled blend in a batch."})
    num_weak_views: int = field(default=2, metadata={"help": "K weak views averaged into RankMatch's pseudo labels."})
    ranking_weight: float = field(default=0.05, metadata={"help": "Weight of RankMatch's ranking losses."})
    lambda_u: float = field(default=1.0, metadata={"help": "Weight of the unlabeled consistency."})
    learning_rate: float = field(default=0.003, metadata={"help": "AdamW learning rate, cosine schedule."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of each arm per seed."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_labeled", "num_unlabeled", "num_test", "steps", "unlabeled_ratio", "num_weak_views"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


def ldl_model(recipe: RankMatchRecipe) -> LabelDistributionModel:
    vgg = digits_vgg(recipe.hidden_sizes, recipe.depths)
    config = LabelDistributionConfig(backbone_config=vgg.config.to_dict(), id2label=vgg.config.id2label)
    return LabelDistributionModel(config)


def blends(recipe: RankMatchRecipe, data, seed: int) -> tuple[list[dict], list[torch.Tensor]]:
    """The seed's labeled rows and unlabeled images, blended from the training split."""
    rows = data["train"][:]
    n = recipe.num_labeled + recipe.num_unlabeled
    images, dists = digit_blends(rows["pixel_values"], rows["labels"], n, seed=1000 + seed)
    labeled = [{"pixel_values": images[i], "label_distribution": dists[i]} for i in range(recipe.num_labeled)]
    return labeled, list(images[recipe.num_labeled :])


def train_arm(recipe: RankMatchRecipe, arm: str, seed: int, labeled, unlabeled, work: Path):
    torch.manual_seed(seed)
    model = ldl_model(recipe)
    common = dict(learning_rate=recipe.learning_rate, max_steps=recipe.steps, seed=seed, eval_strategy="no",
                  disable_tqdm=True)  # fmt: skip
    if arm == "supervised only":
        trainer = ResumableTrainer(model=model, args=training_args(recipe, work, **common), train_dataset=labeled)
    else:
        plain = arm == "KL consistency"
        args = training_args(recipe, work, cls=RankMatchConfig, lambda_u=recipe.lambda_u,
                             num_weak_views=1 if plain else recipe.num_weak_views,
                             ranking_weight=0.0 if plain else recipe.ranking_weight, **common)  # fmt: skip
        data = SemiSupervisedDataset(labeled, unlabeled, unlabeled_ratio=recipe.unlabeled_ratio)
        trainer = RankMatchTrainer(model=model, args=args, train_dataset=data)
    trainer.remove_callback(transformers.PrinterCallback)
    train(trainer)
    return model


@torch.no_grad()
def evaluate(model, images: torch.Tensor, dists: torch.Tensor) -> dict[str, float]:
    model.eval()
    predicted = torch.cat([model(pixel_values=images[i : i + 256]).distribution for i in range(0, len(images), 256)])
    return ldl_metrics(predicted, dists)


def run(recipe: RankMatchRecipe) -> dict:
    run = Run(recipe, stages=len(recipe.seeds) * len(ARMS) + 1)
    datasets.disable_progress_bars()
    data = digits(image_size=8, seed=recipe.seed)
    test = data["test"][:]
    test_images, test_dists = digit_blends(test["pixel_values"], test["labels"], recipe.num_test, seed=recipe.seed)
    rows, kept = [], None
    for seed in recipe.seeds:
        labeled, unlabeled = blends(recipe, data, seed)
        for arm in ARMS:
            key = f"seed{seed}-{arm.replace(' ', '_')}"
            done = run.resume_stage(f"seed {seed}: {arm}, {recipe.num_labeled} labeled blends, {recipe.steps} steps",
                                    key)  # fmt: skip
            keep = seed == recipe.seeds[0] and arm == "RankMatch"
            if done is None:
                model = train_arm(recipe, arm, seed, labeled, unlabeled, run.trainer_dir(key))
                done = {"arm": arm, "seed": seed, **evaluate(model, test_images, test_dists)}
                run.save_stage(key, done, model if keep else None)
                run.say("  " + ", ".join(f"{m} {done[m]:.3f}" for m in METRICS))
            if keep:
                kept = run.stage_folder(key)
            rows.append(done)
    summary = summarize_arms(rows, ARMS, METRICS)
    verdicts = [verdict_against(summary, "RankMatch", m, m, higher_is_better=not LOWER_IS_BETTER[m]) for m in METRICS]
    results = {
        "method": METHOD,
        "dataset": "scikit-learn digits blended into label distributions",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "runs": rows,
        "summary": summary,
        "verdict": " ".join(verdicts) + " " + VERDICT_RULE,
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the RankMatch model of the first seed with its card, and the report")
    model = LabelDistributionModel.from_pretrained(kept, trust_remote_code=False)
    run.save_model(model, "rankmatch", rankmatch_card(model, run.out / "rankmatch", results))
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    mine = next(s for s in summary if s["arm"] == "RankMatch")
    run.finish(
        f"RankMatch done in {results['elapsed_s']:.0f}s: cosine "
        + ", ".join(f"{s['arm']} {s['cosine_mean']:.3f}" for s in summary)
        + f" (RankMatch KL {mine['kl_mean']:.3f}). Report in {run.out}/"
    )
    return results


def _training_setup(recipe: RankMatchRecipe) -> str:
    return (
        f"Blended digits (8x8; 2 or 3 digits per image, Dirichlet(2) weights = the label distribution): "
        f"{recipe.num_labeled} labeled and {recipe.num_unlabeled} unlabeled training blends, {recipe.num_test} test "
        f"blends from the test split's digits. A label-distribution VGG {recipe.hidden_sizes} x {recipe.depths} "
        f"(softmax of its classifier), AdamW lr {recipe.learning_rate:g}, cosine schedule, {recipe.steps} steps of "
        f"{recipe.batch_size} labeled (+ {recipe.unlabeled_ratio * recipe.batch_size} unlabeled) blends. RankMatch: "
        f"K = {recipe.num_weak_views} weak views, ranking weight {recipe.ranking_weight:g}; both semi-supervised arms "
        f"lambda_u {recipe.lambda_u:g}. Seeds {recipe.seeds} (each blends its own training set)."
    )


def rankmatch_card(model, repo_or_path, results: dict):
    mine = next(s for s in results["summary"] if s["arm"] == "RankMatch")
    return model.model_card(
        repo_or_path,
        {
            "training_setup": results["training_setup"],
            "metrics": {f"{m} (mean over seeds)": round(mine[f"{m}_mean"], 4) for m in METRICS},
            "dataset": results["dataset"],
        },
    )


def report_figure(results: dict):
    return arm_metrics_figure(results["summary"], METRICS, LOWER_IS_BETTER, ["#999999", "#4c72b0", "#dd8452"])


def report_markdown(results: dict) -> str:
    return arm_metrics_markdown(results, f"RankMatch on {results['dataset']}", METRICS, LOWER_IS_BETTER,
                                closing=["The RankMatch model of the first seed is saved in `rankmatch/` (with its "
                                         "card)."])  # fmt: skip


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(RankMatchRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_rankmatch_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a RankMatch run: the RankMatch model of the first seed."""
    from hf_methods.hub import push_saved_model

    model = LabelDistributionModel.from_pretrained(out_dir / "rankmatch", trust_remote_code=False)
    push_saved_model(out_dir / "rankmatch", repo_id, rankmatch_card(model, repo_id, results),
                     commit_message="Upload the RankMatch model", **hub_kwargs)  # fmt: skip
    return {"rankmatch": repo_id}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.rankmatch.pipeline"))
