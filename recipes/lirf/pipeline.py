"""The LIRF main job: knowledge deposit and withdrawal on scikit-learn's digits.

Per seed: a small VGG (or ResNet-12), the original network, is trained on all 10 digits. Then the deposit classes
(default 0, 1, 2) are deposited using their training images only:

- LIRF: `LIRFTrainer` fine-tunes two copies of the lower part (target + deposit module) under the frozen upper part;
- the practitioner's baseline, random-label fine-tuning: the same lower part, optimizer and budget, cross-entropy on
  random labels of the deposit images only (no distillation, no deposit module). It is what one does to make a model
  forget a set without the rest of the data, and it changes the same weights LIRF's target changes, so the gap is
  what LIRF's losses add;
- an ablation, LIRF's target loss L_T alone (random labels + distillation on the preserved classes' logits, no
  deposit module): whether the deposit branch changes the target network.

Test metrics: Pre Acc, Dep Acc, F and H-mean of each target network; after withdrawal, the recover network in both
modes ("replace", "sum"): Pre Acc, Dep Acc, Avg Acc. Mean ± std over the seeds. The first seed's target network and
deposit module are saved with cards (for `pipeline()`: RGB input, image processor beside them), and withdrawal is done
from those two saved folders (`LIRFRecoverModel.from_parts`), checked on the test set and saved with its card.

    hf-methods lirf                                  # the embedded default (digits.yaml): about a minute on 2 CPUs
    hf-methods lirf --deposit_classes 3 5 8          # any recipe field can be overridden
    hf-methods lirf --push_to_hub true --hub_model_id org/lirf-digits   # target -> org/lirf-digits, deposit -> -deposit
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
from torch.nn import functional as F
from transformers import AutoModel, AutoModelForImageClassification

from hf_methods import __version__
from hf_methods.cli import run_script
from hf_methods.data import digits, digits_image_processor, for_pipeline, in_memory_rows, input_format, rgb_input
from hf_methods.models.lirf import LIRFModel, LIRFRecoverModel, lirf_metrics, split_points, target_card
from hf_methods.models.lirf.configuration_lirf import RECOVER_MODES, check_deposit_classes
from hf_methods.recipe import RecipeArguments, Run, digits_vgg, parse_recipe, train, training_args
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against
from hf_methods.trainers import ResumableTrainer
from hf_methods.trainers.frozen_models_config import check_alpha, check_temperature
from hf_methods.trainers.lirf_config import LIRFTrainingConfig
from hf_methods.trainers.lirf_trainer import LIRFTrainer, deposit_subset, lirf_loss

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "lirf" / "digits.yaml"
METHOD = "LIRF"
ORIGINAL, BASELINE, ABLATION, TARGET = (
    "original network",
    "random-label fine-tuning",
    "LIRF target loss only (L_T)",
    "LIRF target network",
)
RECOVER = {mode: f"LIRF recover ({mode})" for mode in RECOVER_MODES}
DEPOSIT_ARMS = (ORIGINAL, BASELINE, ABLATION, TARGET)
WITHDRAWAL_ARMS = (ORIGINAL, TARGET, *RECOVER.values())
DEPOSIT_METRICS = ("pre_acc", "dep_acc", "forgetting", "h_mean")
WITHDRAWAL_METRICS = ("pre_acc", "dep_acc", "avg_acc")
NAMES = {"pre_acc": "Pre Acc", "dep_acc": "Dep Acc", "forgetting": "F", "h_mean": "H-mean", "avg_acc": "Avg Acc"}
COLORS = {ORIGINAL: "C0", BASELINE: "C1", ABLATION: "C7", TARGET: "C3", RECOVER["replace"]: "C2", RECOVER["sum"]: "C4"}
SHORT = {TARGET: "lirf", BASELINE: "random-labels", ABLATION: "target-loss"}
ARCHITECTURES = ("vgg", "resnet12")


@dataclass
class LIRFRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/lirf-digits", metadata={"help": "Where the models and report go."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo of the target network (org/name); the deposit module: <id>-deposit."}
    )
    image_size: int = field(default=8, metadata={"help": "Digits are upsampled from 8x8 to this size."})
    architecture: str = field(default="vgg", metadata={"help": "The original network: 'vgg' or 'resnet12'."})
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"help": "Channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={"help": "Convs / blocks per stage."})
    split_module_name: str = field(
        default="stages.1", metadata={"help": "The stage that ends the lower part (LIRF fine-tunes stages up to it)."}
    )
    deposit_classes: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "The digits to deposit (official: the first 3 of 10)."}
    )
    original_steps: int = field(default=400, metadata={"help": "Steps of the original network on all classes."})
    original_learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate of the original."})
    alpha: float = field(default=0.9, metadata={"help": "LIRF's KD weight (unknown officially; inferred 0.9)."})
    temperature: float = field(default=4.0, metadata={"help": "LIRF's KD temperature (unknown; inferred 4)."})
    learning_rate: float = field(default=0.01, metadata={"help": "SGD learning rate of the deposit (inferred)."})
    epochs: float = field(default=20, metadata={"help": "Epochs over the deposit set (inferred 20)."})
    recover_mode: str = field(
        default="replace", metadata={"help": "Mode of the saved deposit / recover network (both are measured)."}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "One run per seed."})

    def __post_init__(self):
        super().__post_init__()
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        self.deposit_classes = check_deposit_classes(self.deposit_classes, 10)
        names = split_points(self.network())
        if self.split_module_name not in names:
            raise ValueError(
                f"split_module_name={self.split_module_name!r} is not a split point of the {self.architecture} "
                f"({len(self.hidden_sizes)} stages); one of {names}."
            )
        for name in ("original_steps", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("original_learning_rate", "learning_rate", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        check_alpha(self.alpha)
        check_temperature(self.temperature)
        if self.recover_mode not in RECOVER_MODES:
            raise ValueError(f"recover_mode must be one of {RECOVER_MODES}, got {self.recover_mode!r}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")

    def network(self):
        """A fresh original network (one channel, labels "0".."9")."""
        if self.architecture == "vgg":
            return digits_vgg(self.hidden_sizes, self.depths)
        from hf_methods.models.convnets import ResNet12Config, ResNet12ForImageClassification

        config = ResNet12Config(num_channels=1, hidden_sizes=list(self.hidden_sizes), depths=list(self.depths),
                                id2label={d: str(d) for d in range(10)})  # fmt: skip
        return ResNet12ForImageClassification(config)


class RandomLabelTrainer(LIRFTrainer):
    """The baseline: cross-entropy of the target logits on random labels of deposit images, nothing else (the deposit
    part gets no gradient; same data guard, optimizer and budget as LIRF)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = model(pixel_values=inputs["pixel_values"])
        random_labels = torch.randint(0, outputs.logits.shape[-1], labels.shape, device=labels.device)
        loss = F.cross_entropy(outputs.logits.float(), random_labels)
        return (loss, outputs) if return_outputs else loss


class TargetLossOnlyTrainer(LIRFTrainer):
    """The ablation: LIRF's target loss L_T alone (no L_R, so no deposit module is trained)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(pixel_values=inputs["pixel_values"])
        a, t = self.args.alpha, self.args.temperature
        _, parts = lirf_loss(outputs.original_logits, outputs.logits, outputs.deposit_logits, inputs["labels"],
                             self.deposit_classes, a, t)  # fmt: skip
        loss = a * t * t * parts["target_kd"] + (1 - a) * parts["target_ce"]
        return (loss, outputs) if return_outputs else loss


def deposit_args(recipe: LIRFRecipe, output_dir, **overrides) -> LIRFTrainingConfig:
    """The deposit's training arguments: the official SGD (momentum 0.9, weight decay 5e-4), the recipe's lr, epochs,
    alpha and T; linear decay without warm-up (the official step schedule is unknown)."""
    return training_args(recipe, output_dir, learning_rate=recipe.learning_rate, num_train_epochs=recipe.epochs,
                         cls=LIRFTrainingConfig, alpha=recipe.alpha, temperature=recipe.temperature, optim="sgd",
                         optim_args="momentum=0.9", weight_decay=5e-4, lr_scheduler_type="linear", warmup_steps=0,
                         eval_strategy="no", disable_tqdm=True, **overrides)  # fmt: skip


def _quiet(trainer):
    trainer.remove_callback(transformers.PrinterCallback)
    return trainer


@torch.no_grad()
def _logits(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i : i + 512]) for i in range(0, len(x), 512)])


def _classify(model, x: torch.Tensor) -> torch.Tensor:
    """The logits of a classifier (eval mode) on `x`."""
    model.eval()
    return _logits(lambda v: model(pixel_values=v).logits, x)


def evaluate(model: LIRFModel, x, y, deposit) -> dict:
    """`lirf_metrics` of a trained LIRFModel, plus the recover network's figures in both modes."""
    model.eval()
    z0, zt, zr = _logits(model.original_logits, x), _logits(model.target_logits, x), _logits(model.deposit_logits, x)
    out = {}
    for mode in RECOVER_MODES:
        recover = model._combine(zt, zr, mode)
        m = lirf_metrics(y, deposit, original=z0, target=zt, recover=recover)
        out[mode] = m
    return out


def run(recipe: LIRFRecipe) -> dict:
    run = Run(recipe, stages=2 * len(recipe.seeds) + 1)
    datasets.disable_progress_bars()
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    train_rows = in_memory_rows(data["train"])
    deposit_rows = deposit_subset(train_rows, recipe.deposit_classes)
    test = data["test"][:]
    x, y = test["pixel_values"], test["labels"]
    deposit = recipe.deposit_classes
    cls = type(recipe.network())
    rows = []
    for seed in recipe.seeds:
        key = f"original-seed{seed}"
        done = run.resume_stage(f"seed {seed}: the original {recipe.architecture}, {recipe.original_steps} steps on "
                                "all 10 digits", key)  # fmt: skip
        if done is None:
            transformers.set_seed(seed)
            original = recipe.network()
            args = training_args(recipe, run.trainer_dir(key), learning_rate=recipe.original_learning_rate,
                                 max_steps=recipe.original_steps, eval_strategy="no", disable_tqdm=True,
                                 seed=seed)  # fmt: skip
            train(_quiet(ResumableTrainer(model=original, args=args, train_dataset=train_rows)))
            acc = float((_classify(original, x).argmax(-1) == y).float().mean())
            run.save_stage(key, {"accuracy": acc}, original)
            run.say(f"  original test accuracy {acc:.3f}")
        original = cls.from_pretrained(run.stage_folder(key), trust_remote_code=False)

        key = f"deposit-seed{seed}"
        done = run.resume_stage(f"seed {seed}: deposit of digits {deposit} ({len(deposit_rows)} training images): "
                                "LIRF, random-label fine-tuning, L_T only", key)  # fmt: skip
        if done is None:
            figures = {}
            for arm, trainer_cls in ((TARGET, LIRFTrainer), (BASELINE, RandomLabelTrainer),
                                     (ABLATION, TargetLossOnlyTrainer)):  # fmt: skip
                transformers.set_seed(seed)
                model = LIRFModel.from_original(original, recipe.split_module_name, deposit, recipe.recover_mode)
                args = deposit_args(recipe, run.trainer_dir(f"{key}-{SHORT[arm]}"), seed=seed)
                train(_quiet(trainer_cls(model=model, args=args, train_dataset=deposit_rows)))
                figures[arm] = evaluate(model, x, y, deposit)
                if arm == TARGET:
                    lirf = model
            done = {"rows": _rows(figures, seed)}
            run.save_stage(key, done, lirf if seed == recipe.seeds[0] else None)
            m = figures[TARGET][recipe.recover_mode]
            base = figures[BASELINE]["replace"]["h_mean"]
            run.say(f"  LIRF: Pre Acc {m['pre_acc']:.3f}, Dep Acc {m['dep_acc']:.3f}, H-mean {m['h_mean']:.3f}, "
                    f"Avg Acc {m['avg_acc']:.3f}; random labels: H-mean {base:.3f}")  # fmt: skip
        rows += done["rows"]

    run.stage("withdrawal from the saved target network + deposit module; saving the models with cards, the report")
    results = _results(recipe, rows)
    # saved for pipeline() (RGB input, image processor beside), VGG and ResNet-12 alike
    processor = digits_image_processor(recipe.image_size)
    lirf = LIRFModel.from_pretrained(run.stage_folder(f"deposit-seed{recipe.seeds[0]}"), trust_remote_code=False)
    target, deposit_module = lirf.export_target(), lirf.export_deposit()
    target, deposit_module = for_pipeline(target, processor), rgb_input(deposit_module)
    own = evaluate(lirf, x, y, deposit)[recipe.recover_mode]
    results["saved"] = {"seed": recipe.seeds[0], "target": {k: own[k] for k in DEPOSIT_METRICS}}
    card = target_card(
        target,
        run.out / "target",
        _card_results(results, "target"),
        deposit_classes=deposit,
        preserved_classes=lirf.config.preserved_classes,
    )
    run.save_model(target, "target", card, processor)
    run.save_model(deposit_module, "deposit", None, processor)
    # withdrawal, as the owner does it: the two saved folders, nothing else
    loaded_target = AutoModelForImageClassification.from_pretrained(run.out / "target", trust_remote_code=False)
    loaded_deposit = AutoModel.from_pretrained(run.out / "deposit", trust_remote_code=False)
    images = x.repeat(1, 3, 1, 1)  # what the saved RGB models read: a gray image as three channels
    withdrawn = {}
    for mode in RECOVER_MODES:
        recover = LIRFRecoverModel.from_parts(loaded_target, loaded_deposit, recover_mode=mode)
        m = lirf_metrics(y, deposit, original=_logits(lirf.original_logits, x),
                         target=_classify(loaded_target, images), recover=_classify(recover, images))  # fmt: skip
        withdrawn[mode] = {k: m[k] for k in ("pre_acc", "dep_acc", "avg_acc", "recover_pre_acc", "recover_dep_acc")}
        if mode == recipe.recover_mode:
            kept = recover
    results["saved"]["withdrawal_from_files"] = withdrawn
    results["saved"]["in_memory"] = {k: own[k] for k in ("avg_acc", "recover_pre_acc", "recover_dep_acc")}
    run.save_model(kept, "recover", kept.model_card(run.out / "recover", _card_results(results, "recover")),
                   processor)  # fmt: skip
    card = loaded_deposit.model_card(
        run.out / "deposit", {**_card_results(results, "deposit"), "target_ref": str((run.out / "target").resolve())}
    )
    run.save_card("deposit", card)
    results["elapsed_s"] = run.elapsed()
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    lirf_s = next(s for s in results["deposit_summary"] if s["arm"] == TARGET)
    base_s = next(s for s in results["deposit_summary"] if s["arm"] == BASELINE)
    rec_s = next(s for s in results["withdrawal_summary"] if s["arm"] == RECOVER[recipe.recover_mode])
    run.finish(
        f"LIRF done in {results['elapsed_s']:.0f}s: H-mean {lirf_s['h_mean_mean']:.3f} (random labels "
        f"{base_s['h_mean_mean']:.3f}), Pre Acc {lirf_s['pre_acc_mean']:.3f}, Dep Acc {lirf_s['dep_acc_mean']:.3f} -> "
        f"{rec_s['dep_acc_mean']:.3f} after withdrawal. Report in {run.out}/"
    )
    return results


def _rows(figures: dict, seed: int) -> list[dict]:
    """One row per table, arm and seed (fractions)."""
    lirf = figures[TARGET]["replace"]
    rows = [{"table": "deposit", "arm": ORIGINAL, "seed": seed, "pre_acc": lirf["original_pre_acc"],
             "dep_acc": lirf["original_dep_acc"], "forgetting": 0.0, "h_mean": 0.0}]  # fmt: skip
    for arm in (BASELINE, ABLATION, TARGET):
        m = figures[arm]["replace"]
        rows.append({"table": "deposit", "arm": arm, "seed": seed, **{k: m[k] for k in DEPOSIT_METRICS}})
    rows.append({"table": "withdrawal", "arm": ORIGINAL, "seed": seed, "pre_acc": lirf["original_pre_acc"],
                 "dep_acc": lirf["original_dep_acc"], "avg_acc": lirf["original_avg_acc"]})  # fmt: skip
    rows.append({"table": "withdrawal", "arm": TARGET, "seed": seed, "pre_acc": lirf["pre_acc"],
                 "dep_acc": lirf["dep_acc"], "avg_acc": lirf["target_avg_acc"]})  # fmt: skip
    for mode, arm in RECOVER.items():
        m = figures[TARGET][mode]
        rows.append({"table": "withdrawal", "arm": arm, "seed": seed, "pre_acc": m["recover_pre_acc"],
                     "dep_acc": m["recover_dep_acc"], "avg_acc": m["avg_acc"]})  # fmt: skip
    return rows


def _results(recipe: LIRFRecipe, rows: list[dict]) -> dict:
    deposit_rows = [r for r in rows if r["table"] == "deposit"]
    withdrawal_rows = [r for r in rows if r["table"] == "withdrawal"]
    dep = summarize_arms(deposit_rows, DEPOSIT_ARMS, DEPOSIT_METRICS)
    wd = summarize_arms(withdrawal_rows, WITHDRAWAL_ARMS, WITHDRAWAL_METRICS)
    targets = [s for s in dep if s["arm"] != ORIGINAL]
    recover = RECOVER[recipe.recover_mode]
    verdicts = [
        verdict_against(targets, TARGET, "h_mean", "H-mean"),
        verdict_against(
            [s for s in dep if s["arm"] in (TARGET, ORIGINAL)],
            TARGET,
            "pre_acc",
            "Pre Acc (accuracy on the preserved digits)",
        ),  # fmt: skip
        verdict_against(
            [s for s in wd if s["arm"] in (recover, ORIGINAL, TARGET)],
            recover,
            "dep_acc",
            "Dep Acc (accuracy on the deposited digits)",
        ),  # fmt: skip
        verdict_against(
            [s for s in wd if s["arm"] in (*RECOVER.values(), ORIGINAL)], recover, "avg_acc", "Avg Acc (all digits)"
        ),  # fmt: skip
    ]
    return {
        "method": METHOD,
        "dataset": f"scikit-learn digits ({recipe.image_size}x{recipe.image_size})",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "runs": rows,
        "deposit_summary": dep,
        "withdrawal_summary": wd,
        "verdict": " ".join(verdicts) + " " + VERDICT_RULE,
        "plain_verdict": _plain_verdict(dep, wd, recover),
        "hf_methods_version": __version__,
    }


def _gap(summary, arm, other, metric) -> float:
    """The gap in means of `arm` over `other` beyond the larger std (> 0: better, < 0: worse, 0: a tie)."""
    a = next(s for s in summary if s["arm"] == arm)
    b = next(s for s in summary if s["arm"] == other)
    gap = a[f"{metric}_mean"] - b[f"{metric}_mean"]
    band = max(a[f"{metric}_std"], b[f"{metric}_std"])
    return gap if abs(gap) > band else 0.0


def _mean(summary, arm, metric) -> float:
    return next(s for s in summary if s["arm"] == arm)[f"{metric}_mean"]


def _plain_verdict(dep: list[dict], wd: list[dict], recover: str) -> str:
    beat = _gap(dep, TARGET, BASELINE, "h_mean") > 0
    kept = _gap(dep, TARGET, ORIGINAL, "pre_acc") >= 0
    back = _gap(wd, recover, ORIGINAL, "dep_acc") >= 0
    return (
        f"Here LIRF {'beat' if beat else 'did not beat'} random-label fine-tuning on H-mean "
        f"({_mean(dep, TARGET, 'h_mean'):.3f} vs {_mean(dep, BASELINE, 'h_mean'):.3f}) "
        f"{'and' if kept == beat else 'but'} {'kept' if kept else 'lost'} Pre Acc "
        f"({_mean(dep, TARGET, 'pre_acc'):.3f} vs the original's {_mean(dep, ORIGINAL, 'pre_acc'):.3f}; random-label "
        f"fine-tuning: {_mean(dep, BASELINE, 'pre_acc'):.3f}). Withdrawal "
        f"{'brought Dep Acc back' if back else 'did not bring Dep Acc all the way back'}: "
        f"{_mean(wd, recover, 'dep_acc'):.3f} with the {recover} network vs {_mean(wd, ORIGINAL, 'dep_acc'):.3f} for "
        f"the original and {_mean(wd, TARGET, 'dep_acc'):.3f} for the target. "
        + (
            "LIRF's target network ties its own target loss alone (L_T, no deposit module) on H-mean: the forgetting "
            "and the kept accuracy come from L_T; what the deposit branch adds is the withdrawal."
            if _gap(dep, TARGET, ABLATION, "h_mean") == 0
            else f"LIRF's target network {'beats' if _gap(dep, TARGET, ABLATION, 'h_mean') > 0 else 'loses to'} its "
            "own target loss alone (L_T, no deposit module) on H-mean."
        )
    )


def _training_setup(recipe: LIRFRecipe) -> str:
    return (
        f"Original network: {recipe.architecture} {recipe.hidden_sizes} x {recipe.depths}, AdamW "
        f"{recipe.original_learning_rate:g}, {recipe.original_steps} steps on all 10 digits. Split after "
        f"{recipe.split_module_name!r} (lower = stages up to it). Deposit of digits {recipe.deposit_classes} from "
        f"their training images only: SGD (momentum 0.9, weight decay 5e-4), lr {recipe.learning_rate:g} with linear "
        f"decay, {recipe.epochs:g} epochs, batch {recipe.batch_size}; LIRF alpha {recipe.alpha:g}, T "
        f"{recipe.temperature:g} (unknown in the official code: inferred). Random-label fine-tuning: the same lower "
        f"part, optimizer and budget, cross-entropy on random labels only. Seeds {recipe.seeds}."
    )


def _card_results(results: dict, which: str) -> dict:
    saved, summary = results["saved"], results["deposit_summary"]
    mine = next(s for s in summary if s["arm"] == TARGET)
    mode = results["recipe"]["recover_mode"]
    if which == "target":
        metrics = {f"{NAMES[k]} (this model)": round(v, 4) for k, v in saved["target"].items()}
        seeds = f"{mine['seeds']} seed{'s' if mine['seeds'] != 1 else ''}"
        metrics |= {f"{NAMES[k]} (mean over {seeds})": round(mine[f"{k}_mean"], 4)
                    for k in DEPOSIT_METRICS}  # fmt: skip
    else:
        w = saved["withdrawal_from_files"][mode]
        metrics = {"Avg Acc of the recover network": round(w["avg_acc"], 4),
                   "Dep Acc of the recover network": round(w["recover_dep_acc"], 4),
                   "Pre Acc of the recover network": round(w["recover_pre_acc"], 4),
                   "Dep Acc of the target network": round(w["dep_acc"], 4)}  # fmt: skip
    return {"training_setup": results["training_setup"], "metrics": metrics, "dataset": results["dataset"],
            "input_format": input_format(digits_image_processor(results["recipe"]["image_size"]))
            if which != "deposit" and results["recipe"]["architecture"] == "vgg" else None}  # fmt: skip


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [4, 3]})
    for ax, summary, metrics, title in (
        (axes[0], results["deposit_summary"], DEPOSIT_METRICS, "Deposit: the target networks"),
        (axes[1], results["withdrawal_summary"], WITHDRAWAL_METRICS, "Withdrawal: the recover networks"),
    ):
        width = 0.8 / len(summary)
        for i, s in enumerate(summary):
            xs = [j + (i - (len(summary) - 1) / 2) * width for j in range(len(metrics))]
            ax.bar(xs, [s[f"{m}_mean"] for m in metrics], width, yerr=[s[f"{m}_std"] for m in metrics], capsize=2,
                   label=s["arm"], color=COLORS[s["arm"]])  # fmt: skip
        ax.set_xticks(range(len(metrics)), [NAMES[m] for m in metrics])
        ax.set(ylim=(0, 1.05), ylabel="fraction (test set)", title=title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    def table(summary, metrics):
        lines = ["| arm | " + " | ".join(NAMES[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for s in summary:
            cells = " | ".join(f"{s[f'{m}_mean']:.3f} ± {s[f'{m}_std']:.3f}" for m in metrics)
            lines.append(f"| {s['arm']} | {cells} |")
        return lines

    saved = results["saved"]
    seeds = results["deposit_summary"][0]["seeds"]
    lines = [f"# LIRF (recoverable forgetting) on {results['dataset']}", "", results["training_setup"], "",
             f"**{results['plain_verdict']}**", "", results["verdict"], "", "![report](report.png)", "",
             f"## Deposit (mean ± std over {seeds} seeds; fractions of the test set)", "",
             "Pre Acc / Dep Acc: accuracy on the preserved / deposited digits; F = the original's Dep Acc - the "
             "target's; H-mean = harmonic mean of Pre Acc and F.", "",
             *table(results["deposit_summary"], DEPOSIT_METRICS), "",
             "## Withdrawal", "",
             "The recover network = the target network + the deposit module; Avg Acc is its accuracy on all digits.",
             "", *table(results["withdrawal_summary"], WITHDRAWAL_METRICS), ""]  # fmt: skip
    mode = results["recipe"]["recover_mode"]
    w, mem = saved["withdrawal_from_files"][mode], saved["in_memory"]
    read = "read as RGB"
    lines += [f"Withdrawal from the saved folders (seed {saved['seed']}: `target/` + `deposit/`, {read}, "
              f"{mode} mode): Avg Acc {w['avg_acc']:.3f} (Pre {w['recover_pre_acc']:.3f}, Dep "
              f"{w['recover_dep_acc']:.3f}); the same network in memory before saving: {mem['avg_acc']:.3f} (Pre "
              f"{mem['recover_pre_acc']:.3f}, Dep {mem['recover_dep_acc']:.3f}).", "",
              "Saved: `target/` (the target network, a stock classifier"
              + "; `pipeline('image-classification')` loads it"
              + "), `deposit/` (the deposit module, to keep apart), `recover/` (the withdrawn network). "
              "`hf-methods push` pushes the target and the deposit module.", "",
              "## Every run", "", "| table | seed | arm | Pre Acc | Dep Acc | F | H-mean | Avg Acc |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["runs"]:
        cells = " | ".join(f"{r[m]:.3f}" if m in r else "" for m in ("pre_acc", "dep_acc", "forgetting", "h_mean",
                                                                      "avg_acc"))  # fmt: skip
        lines.append(f"| {r['table']} | {r['seed']} | {r['arm']} | {cells} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(LIRFRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_lirf_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of an LIRF run: the target network to `repo_id`, the deposit module to `<repo_id>-deposit`
    (its card names the target it works with). The recover network stays local: it holds the deposited knowledge,
    and the owner rebuilds it from the two."""
    from hf_methods.hub import push_saved_model
    from hf_methods.models.lirf import LIRFDepositModule

    deposit_repo = f"{repo_id}-deposit"
    deposit_classes = list(results["recipe"]["deposit_classes"])
    target = AutoModelForImageClassification.from_pretrained(out_dir / "target", trust_remote_code=False)
    card = target_card(target, repo_id, _card_results(results, "target"), deposit_classes=deposit_classes,
                       preserved_classes=[c for c in range(10) if c not in deposit_classes])  # fmt: skip
    push_saved_model(out_dir / "target", repo_id, card, commit_message="Upload the LIRF target network", **hub_kwargs)
    deposit = LIRFDepositModule.from_pretrained(out_dir / "deposit", trust_remote_code=False)
    card = deposit.model_card(deposit_repo, {**_card_results(results, "deposit"), "target_ref": repo_id})
    push_saved_model(out_dir / "deposit", deposit_repo, card, commit_message="Upload the LIRF deposit module",
                     **hub_kwargs)  # fmt: skip
    return {"target": repo_id, "deposit": deposit_repo}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.lirf.pipeline"))
