"""The DPC main job: digits with noisy training labels (20% and 50% symmetric, 40% asymmetric by default) and a clean
test split; per noise setting and seed, three arms trained with the same epochs, batch, schedule and augmentation:
cross-entropy on every label, DivideMix-style small-loss selection on one network (cross-entropy, a 2-component
mixture on the per-example losses every epoch after the warm-up, training on the examples it calls clean) and DPC (two
networks, evidential loss, large-margin selection, co-divide and MixMatch) -> test accuracy, and how well each
selection score separates clean from noisy labels (ROC-AUC right after the warm-up), mean ± std over the seeds.

    hf-methods dpc                                      # the embedded default: a few minutes on 2 CPUs
    hf-methods dpc --noises sym:0.8 --epochs 30         # any recipe field can be overridden
    hf-methods dpc --push_to_hub true --hub_model_id org/dpc-digits   # the DPC model of the first seed, per noise
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
from hf_methods.cli import run_script
from hf_methods.data import digits, digits_image_processor, input_format
from hf_methods.models.dpc import DPCForImageClassification, DPCModelConfig
from hf_methods.recipe import RecipeArguments, Run, digits_vgg, parse_recipe, train, training_args
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against
from hf_methods.trainers import DPCConfig, DPCLiteTrainer, DPCTrainer
from hf_methods.trainers.layermatch_trainer import weak_augment

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "dpc" / "digits.yaml"
METHOD = "DPC"
ARMS = ("cross-entropy", "small-loss selection", "DPC")
ASYMMETRIC = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}  # the MNIST-style class flips of Co-teaching / Patrini et al.


def parse_noise(spec: str) -> tuple[str, float]:
    """ "sym:0.5" -> ("sym", 0.5); a ValueError naming the entry otherwise."""
    kind, _, rate = str(spec).partition(":")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if kind not in ("sym", "asym") or not 0.0 <= value <= 1.0:
        raise ValueError(f"noises entry {spec!r} must be 'sym:<rate>' or 'asym:<rate>' with a rate in [0, 1].")
    return kind, value


def noise_name(spec: str) -> str:
    kind, rate = parse_noise(spec)
    return f"{kind}{round(rate * 100)}"


def corrupt_labels(labels: torch.Tensor, spec: str, seed: int) -> torch.Tensor:
    """DivideMix's protocol: `rate` of the examples, drawn at random, get a new label: any digit uniformly ("sym",
    possibly the true one) or the class flip of `ASYMMETRIC` ("asym"; other classes keep theirs)."""
    kind, rate = parse_noise(spec)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(labels), generator=g)[: round(rate * len(labels))]
    noisy = labels.clone()
    if kind == "sym":
        noisy[chosen] = torch.randint(0, 10, (len(chosen),), generator=g)
    else:
        noisy[chosen] = torch.tensor([ASYMMETRIC.get(int(y), int(y)) for y in labels[chosen]], dtype=labels.dtype)
    return noisy


@dataclass
class DPCRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/dpc-digits", metadata={"help": "Where the models and the report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo prefix of the DPC models (org/name)."})
    image_size: int = field(default=8, metadata={"help": "Digits are resized from 8x8 to this size."})
    noises: list[str] = field(
        default_factory=lambda: ["sym:0.2", "sym:0.5", "asym:0.4"],
        metadata={"help": "Label noise settings, 'sym:<rate>' or 'asym:<rate>'."},
    )
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "VGG channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "VGG convolutions per stage."})
    epochs: int = field(default=40, metadata={"help": "Training epochs of every arm."})
    warmup_epochs: int = field(
        default=10, metadata={"help": "Epochs on every label before the selections (official 10)."}
    )
    learning_rate: float = field(default=0.01, metadata={"help": "AdamW learning rate, cosine schedule."})
    mixmatch_alpha: float = field(default=0.75, metadata={"help": "DPC's MixMatch Beta(alpha, alpha) (official 4)."})
    lambda_u: float = field(default=0.0, metadata={"help": "DPC's unlabeled-term weight (official 0 on CIFAR-10)."})
    aux_hidden_size: int = field(default=64, metadata={"help": "Width of DPC's head 2 (official 1024)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of every arm per seed."})

    def __post_init__(self):
        super().__post_init__()
        if not self.noises:
            raise ValueError("noises must name at least one setting, e.g. ['sym:0.5'].")
        for spec in self.noises:
            parse_noise(spec)
        if len({noise_name(s) for s in self.noises}) != len(self.noises):
            raise ValueError(f"noises must be distinct, got {self.noises}.")
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"epochs must be positive and warmup_epochs in [0, epochs), got epochs={self.epochs}, "
                f"warmup_epochs={self.warmup_epochs}."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


def _args(recipe: DPCRecipe, work: Path, seed: int, **kw) -> DPCConfig:
    return training_args(recipe, work, learning_rate=recipe.learning_rate, num_train_epochs=recipe.epochs, seed=seed,
                         cls=DPCConfig, eval_strategy="no", disable_tqdm=True, warmup_epochs=recipe.warmup_epochs,
                         **kw)  # fmt: skip


def dpc_model(recipe: DPCRecipe) -> DPCForImageClassification:
    vgg = digits_vgg(recipe.hidden_sizes, recipe.depths)
    config = DPCModelConfig(backbone_config=vgg.config.to_dict(), id2label=vgg.config.id2label,
                            aux_hidden_size=recipe.aux_hidden_size)  # fmt: skip
    return DPCForImageClassification(config)


def train_arm(recipe: DPCRecipe, arm: str, seed: int, train_set, work: Path, noise: str):
    """One arm of one seed; every network of a seed starts from that seed's initialization. Under asymmetric noise
    the warm-up adds the confidence penalty, as DPC's and DivideMix's code do."""
    torch.manual_seed(seed)
    penalty = parse_noise(noise)[0] == "asym"
    if arm == "DPC":
        args = _args(recipe, work, seed, mixmatch_alpha=recipe.mixmatch_alpha, lambda_u=recipe.lambda_u,
                     confidence_penalty=penalty)  # fmt: skip
        trainer = DPCTrainer(model=dpc_model(recipe), args=args, train_dataset=train_set)
    else:
        warmup = recipe.epochs if arm == "cross-entropy" else recipe.warmup_epochs  # cross-entropy never selects
        args = _args(recipe, work, seed, loss_type="cross_entropy", selection_score="small_loss",
                     confidence_penalty=penalty)  # fmt: skip
        args.warmup_epochs = warmup
        trainer = DPCLiteTrainer(model=digits_vgg(recipe.hidden_sizes, recipe.depths), args=args,
                                 train_dataset=train_set, augment=weak_augment)  # fmt: skip
    trainer.remove_callback(transformers.PrinterCallback)  # the run prints one line per arm
    train(trainer)
    return trainer


def roc_auc(clean: torch.Tensor, scores: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(clean.numpy(), scores.numpy()))


@torch.no_grad()
def test_accuracy(model, test: datasets.Dataset) -> float:
    model.eval()
    rows = test[:]
    x, y = rows["pixel_values"], torch.as_tensor(rows["labels"])
    predictions = torch.cat([model(pixel_values=x[i : i + 256]).logits.argmax(-1) for i in range(0, len(y), 256)])
    return float((predictions == y).float().mean())


def selection_figures(trainer, clean: torch.Tensor) -> dict:
    """ROC-AUC of the score right after the warm-up, and the last selection's size and precision (network 0)."""
    if not trainer.score_history:
        return {"auc_after_warmup": None, "selected_share": None, "selected_clean": None}
    first = trainer.score_history[0]["scores"]
    first = first[0] if first.dim() > 1 else first
    posterior = trainer.clean_posterior
    selected = (posterior[0] if posterior.dim() > 1 else posterior) > trainer.args.p_threshold
    return {
        "auc_after_warmup": roc_auc(clean, first),
        "selected_share": float(selected.float().mean()),
        "selected_clean": float(clean[selected].float().mean()) if selected.any() else 0.0,
    }


def run(recipe: DPCRecipe) -> dict:
    run = Run(recipe, stages=len(recipe.noises) * len(recipe.seeds) * len(ARMS) + 1)
    datasets.disable_progress_bars()
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    images, truth = data["train"][:]["pixel_values"], torch.as_tensor(data["train"][:]["labels"])
    test = data["test"]
    rows, kept, settings = [], {}, []
    for spec in recipe.noises:
        name = noise_name(spec)
        noisy = corrupt_labels(truth, spec, recipe.seed)
        clean = noisy == truth
        settings.append({"noise": spec, "name": name, "noisy_share": float((~clean).float().mean())})
        train_set = [{"pixel_values": x, "labels": y} for x, y in zip(images, noisy)]  # in memory, as in_memory_rows
        for seed in recipe.seeds:
            for arm in ARMS:
                key = f"{name}-seed{seed}-{arm.replace(' ', '_')}"
                done = run.resume_stage(f"{spec}, seed {seed}: {arm}", key)
                keep = seed == recipe.seeds[0] and arm == "DPC"
                if done is None:
                    trainer = train_arm(recipe, arm, seed, train_set, run.trainer_dir(key), spec)
                    done = {"noise": spec, "arm": arm, "seed": seed,
                            "test_accuracy": test_accuracy(trainer.model, test),
                            **selection_figures(trainer, clean)}  # fmt: skip
                    run.save_stage(key, done, trainer.model if keep else None)
                    auc = done["auc_after_warmup"]
                    auc_text = "" if auc is None else f", clean/noisy ROC-AUC after the warm-up {auc:.3f}"
                    run.say(f"  test accuracy {done['test_accuracy']:.3f}{auc_text}")
                if keep:
                    kept[name] = run.stage_folder(key)
                rows.append(done)
    for setting in settings:
        runs = [r for r in rows if r["noise"] == setting["noise"]]
        arms = summarize_arms(runs, ARMS, ("test_accuracy",))
        for entry in arms:
            aucs = [
                r["auc_after_warmup"] for r in runs if r["arm"] == entry["arm"] and r["auc_after_warmup"] is not None
            ]
            entry["auc_after_warmup_mean"] = statistics.fmean(aucs) if aucs else None
            entry["auc_after_warmup_std"] = statistics.stdev(aucs) if len(aucs) > 1 else 0.0 if aucs else None
        setting["summary"] = arms
        setting["verdict"] = verdict_against(
            arms, "DPC", "test_accuracy", f"test accuracy under {setting['noise']} noise"
        )
    processor = digits_image_processor(recipe.image_size)
    results = {
        "method": METHOD,
        "dataset": "scikit-learn digits, noisy training labels",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe, len(truth)),
        "recipe": dataclasses.asdict(recipe),
        "settings": settings,
        "runs": rows,
        "verdict": " ".join(s["verdict"] for s in settings) + " " + VERDICT_RULE,
        "input_format": input_format(processor),
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the DPC model of the first seed per noise setting with its card, and the report")
    for setting in settings:
        model = DPCForImageClassification.from_pretrained(kept[setting["name"]], trust_remote_code=False)
        folder = f"dpc-{setting['name']}"
        run.save_model(model, folder, dpc_card(model, run.out / folder, results, setting), processor)
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"DPC done in {results['elapsed_s']:.0f}s: test accuracy "
        + "; ".join(
            f"{s['noise']} " + ", ".join(f"{a['arm']} {a['test_accuracy_mean']:.3f}" for a in s["summary"])
            for s in settings
        )
        + f". Report in {run.out}/"
    )
    return results


def _training_setup(recipe: DPCRecipe, n: int) -> str:
    return (
        f"Digits, {n} training images with noisy labels ({', '.join(recipe.noises)}), clean test split. Every arm: "
        f"VGG {recipe.hidden_sizes} x {recipe.depths} with BatchNorm, {recipe.epochs} epochs of batch "
        f"{recipe.batch_size}, AdamW lr {recipe.learning_rate:g} with a cosine schedule, random shifts of up to 1/8 "
        f"of the side; the selections start after {recipe.warmup_epochs} warm-up epochs. DPC trains two such networks "
        f"(head 2 of width {recipe.aux_hidden_size}), MixMatch Beta({recipe.mixmatch_alpha:g}), lambda_u "
        f"{recipe.lambda_u:g}, and predicts with their summed logits. Seeds {recipe.seeds}."
    )


def dpc_card(model, repo_or_path, results: dict, setting: dict):
    dpc = next(a for a in setting["summary"] if a["arm"] == "DPC")
    return model.model_card(
        repo_or_path,
        {
            "training_setup": results["training_setup"] + f" This model: {setting['noise']} noise, the first seed.",
            "metrics": {f"test accuracy under {setting['noise']} noise (mean over seeds)": dpc["test_accuracy_mean"]},
            "dataset": results["dataset"],
            "input_format": results["input_format"],
        },
    )


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    fig, (ax_acc, ax_auc) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(ARMS)
    colors = ["#999999", "#4c72b0", "#dd8452"]
    for i, arm in enumerate(ARMS):
        entries = [next(a for a in s["summary"] if a["arm"] == arm) for s in settings]
        xs = [j + (i - (len(ARMS) - 1) / 2) * width for j in range(len(settings))]
        for ax, metric in ((ax_acc, "test_accuracy"), (ax_auc, "auc_after_warmup")):
            if entries[0][f"{metric}_mean"] is not None:
                means, stds = [e[f"{metric}_mean"] for e in entries], [e[f"{metric}_std"] for e in entries]
                ax.bar(xs, means, width, yerr=stds, capsize=3, label=arm, color=colors[i])
    for ax in (ax_acc, ax_auc):
        ax.set_xticks(range(len(settings)), [s["noise"] for s in settings])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(ARMS), frameon=False)
    lowest = min(a["test_accuracy_mean"] - a["test_accuracy_std"] for s in settings for a in s["summary"])
    ax_acc.set(ylim=(max(0.0, lowest - 0.05), 1.0), ylabel="test accuracy (mean ± std over seeds)",
               title="Clean test split")  # fmt: skip
    ax_auc.set(ylim=(0.5, 1.0), ylabel="ROC-AUC, clean vs noisy labels", title="Selection score after the warm-up")
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    lines = [f"# DPC on {results['dataset']}", "", results["training_setup"], "", f"**{results['verdict']}**", "",
             "![report](report.png)", ""]  # fmt: skip
    for s in results["settings"]:
        lines += [
            f"## {s['noise']} noise ({s['noisy_share']:.1%} of the training labels are wrong)",
            "",
            "| arm | test accuracy | clean/noisy ROC-AUC after the warm-up |",
            "|---|---|---|",
        ]
        for a in s["summary"]:
            auc = a["auc_after_warmup_mean"]
            auc_text = "-" if auc is None else f"{auc:.3f} ± {a['auc_after_warmup_std']:.3f}"
            lines.append(f"| {a['arm']} | {a['test_accuracy_mean']:.3f} ± {a['test_accuracy_std']:.3f} | {auc_text} |")
        lines.append("")
    lines += ["Every run (the selection columns are network 0's last selection):", "",
              "| noise | seed | arm | test accuracy | ROC-AUC after warm-up | selected | of which clean |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["runs"]:
        cells = [f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("auc_after_warmup", "selected_share",
                                                                       "selected_clean")]  # fmt: skip
        lines.append(
            f"| {r['noise']} | {r['seed']} | {r['arm']} | {r['test_accuracy']:.3f} | " + " | ".join(cells) + " |"
        )
    lines += ["", "The DPC model of the first seed of each noise setting is saved in `dpc-<noise>/` (pipeline-ready, "
              "with its card).", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(DPCRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_dpc_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a DPC run: the DPC model of each noise setting to `<repo_id>-<noise>`."""
    from hf_methods.hub import push_saved_model

    pushed = {}
    for setting in results["settings"]:
        folder, repo = f"dpc-{setting['name']}", f"{repo_id}-{setting['name']}"
        model = DPCForImageClassification.from_pretrained(out_dir / folder, trust_remote_code=False)
        push_saved_model(out_dir / folder, repo, dpc_card(model, repo, results, setting),
                         commit_message=f"Upload the DPC model ({setting['noise']} noise)", **hub_kwargs)  # fmt: skip
        pushed[folder] = repo
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.dpc.pipeline"))
