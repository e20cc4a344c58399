"""The RepFusion main job on scikit-learn's digits: a DDPM teacher (the shared `diffusion_teacher` stage), then per
seed a small VGG pre-trained by RepFusion (its pooled last feature map regresses the teacher UNet's mid-block feature of
the clean image at a timestep a REINFORCE policy picks per image), and the same with one fixed timestep (no policy);
each backbone, and one from scratch, is fine-tuned on a few labels per class -> test accuracy, mean ± std over seeds,
and the policy's learned timestep distribution.

    hf-methods repfusion                                    # the embedded default (digits.yaml)
    hf-methods repfusion --labels_per_class 10 --fixed_timesteps 0 250
    hf-methods repfusion --push_to_hub true --hub_model_id org/repfusion-digits   # the fine-tuned student + teacher
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import ClassVar

import datasets
import torch
import transformers

from hf_methods import __version__
from hf_methods.cli import run_script
from hf_methods.data import accuracy, digits, in_memory_rows
from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.repfusion import RepFusionConfig, RepFusionDistiller, backbone_card, hooked_module
from hf_methods.recipe import RecipeError, Run, parse_recipe, train, training_args
from hf_methods.recipes.diffusion_teacher import DiffusionTeacherRecipe, diffusion_teacher
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against
from hf_methods.trainers import ResumableTrainer
from hf_methods.trainers.repfusion_config import RepFusionTrainingConfig
from hf_methods.trainers.repfusion_trainer import RepFusionTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "repfusion" / "digits.yaml"
METHOD = "RepFusion"
SCRATCH, REPFUSION = "from scratch", "RepFusion (policy)"
LABELS = {d: str(d) for d in range(10)}


def fixed_arm(t: int) -> str:
    return f"fixed t = {t}"


@dataclass
class RepFusionRecipe(DiffusionTeacherRecipe):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields:
    `DiffusionTeacherRecipe`, `RecipeArguments`)."""

    method_name: ClassVar[str] = METHOD  # the teacher's card cites RepFusion
    output_dir: str = field(default="outputs/repfusion-digits", metadata={"help": "Where the models and report go."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the fine-tuned student (org/name)."})
    labels_per_class: int = field(
        default=5, metadata={"help": "Labeled training images per digit (fine-tuning, reward head and policy)."}
    )
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64], metadata={"help": "Student VGG channels."})
    depths: list[int] = field(default_factory=lambda: [1, 1], metadata={"help": "Student VGG convolutions per stage."})
    teacher_hook: str = field(
        default="mid_block.resnets.1.conv2", metadata={"help": "Teacher UNet module whose output is distilled."}
    )
    policy_num_timesteps: int = field(
        default=50, metadata={"help": "Timesteps the policy chooses among (t_k = k * T / K; T = all of them)."}
    )
    fixed_timesteps: list[int] = field(
        default_factory=lambda: [0, 500],
        metadata={"help": "t of each fixed-timestep baseline arm (0: the official clean-image setting)."},
    )
    feature_loss: str = field(
        default="pooled",
        metadata={"help": "'pooled' (official classification variant) or 'spatial' (official dense variant)."},
    )
    pretrain_epochs: float = field(default=60, metadata={"help": "RepFusion pre-training epochs over all images."})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Pre-training learning rate (AdamW)."})
    policy_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the policy (AdamW; empty: pretrain_learning_rate)."}
    )
    entropy_reg: float = field(default=0.1, metadata={"help": "Initial entropy weight (decays to 0 at the end)."})
    kd_weight: float = field(default=1.0, metadata={"help": "Weight of the feature regression."})
    finetune_epochs: float = field(default=60, metadata={"help": "Fine-tuning epochs over the labeled images."})
    finetune_learning_rate: float = field(default=3e-3, metadata={"help": "Fine-tuning learning rate (AdamW)."})
    finetune_batch_size: int = field(default=32, metadata={"help": "Fine-tuning batch size."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Labeled subset and training."})

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.labels_per_class:
            raise ValueError(f"labels_per_class must be a positive integer, got {self.labels_per_class}.")
        if not 2 <= self.policy_num_timesteps <= self.num_train_timesteps:
            raise ValueError(
                f"policy_num_timesteps must be in [2, num_train_timesteps={self.num_train_timesteps}], got "
                f"{self.policy_num_timesteps}."
            )
        bad = [t for t in self.fixed_timesteps if not 0 <= t < self.num_train_timesteps]
        if bad or len(set(self.fixed_timesteps)) != len(self.fixed_timesteps):
            raise ValueError(
                f"fixed_timesteps must be distinct timesteps in [0, num_train_timesteps={self.num_train_timesteps}), "
                f"got {self.fixed_timesteps}."
            )
        for name in ("pretrain_epochs", "finetune_epochs", "pretrain_learning_rate", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.feature_loss not in ("pooled", "spatial"):
            raise ValueError(f"feature_loss must be 'pooled' or 'spatial', got {self.feature_loss!r}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")

    def arms(self) -> tuple[str, ...]:
        return (SCRATCH, *(fixed_arm(t) for t in self.fixed_timesteps), REPFUSION)


def student_config(recipe: RepFusionRecipe) -> VGGConfig:
    return VGGConfig(num_channels=1, hidden_sizes=list(recipe.hidden_sizes), depths=list(recipe.depths),
                     id2label=LABELS)  # fmt: skip


def probe_timesteps(scheduler) -> list[int]:
    """The timesteps at which the teacher's own features are probed: 10 evenly spaced over [0, T)."""
    steps = scheduler.config.num_train_timesteps
    return [i * steps // 10 for i in range(10)]


def labeled_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` training images of every digit, drawn with `seed`."""
    g = torch.Generator().manual_seed(20_000 + seed)
    picks = []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def pretrain(run: Run, recipe: RepFusionRecipe, unet, scheduler, rows: list[dict], fixed: int | None, seed: int):
    """A RepFusion distiller pre-trained on `rows` (labels -100 outside the labeled subset); resumable stage `key`."""
    config = RepFusionConfig(
        student=student_config(recipe).to_dict(), num_channels=1, image_size=recipe.image_size,
        teacher_hidden_size=hooked_module(unet, recipe.teacher_hook).out_channels,
        teacher_hook=recipe.teacher_hook, num_train_timesteps=scheduler.config.num_train_timesteps,
        policy_num_timesteps=recipe.policy_num_timesteps, fixed_timestep=fixed, kd_weight=recipe.kd_weight,
        entropy_reg=recipe.entropy_reg, feature_loss=recipe.feature_loss, id2label=LABELS,
    )  # fmt: skip
    key = f"pretrain-seed{seed}-{'policy' if fixed is None else f't{fixed}'}"
    done = run.resumed(key)
    if done is not None:
        model = RepFusionDistiller.from_pretrained(run.stage_folder(key), trust_remote_code=False)
        return model.attach_teacher(unet, scheduler), done
    torch.manual_seed(seed)
    model = RepFusionDistiller(config)
    args = training_args(
        recipe, run.trainer_dir(key), learning_rate=recipe.pretrain_learning_rate,
        num_train_epochs=recipe.pretrain_epochs, cls=RepFusionTrainingConfig, optim="adamw_torch", optim_args=None,
        weight_decay=1e-4, entropy_end_epoch=recipe.pretrain_epochs, policy_learning_rate=recipe.policy_learning_rate,
        eval_strategy="no", disable_tqdm=True,
        logging_strategy="epoch",
    )  # fmt: skip
    trainer = RepFusionTrainer(model=model, args=args, train_dataset=rows, teacher_model=unet,
                               teacher_scheduler=scheduler)  # fmt: skip
    trainer.remove_callback(transformers.PrinterCallback)
    train(trainer)
    logs = [e for e in trainer.state.log_history if "loss_feat" in e]
    done = {k: logs[-1][k] for k in RepFusionTrainer.loss_parts} if logs else {}
    run.save_stage(key, done, model)
    return model, done


@torch.no_grad()
def pooled_features(model, images: torch.Tensor) -> torch.Tensor:
    """The classifier's input (the pooled last feature map) of `images`, in eval mode."""
    found = []
    hook = model.classifier.register_forward_pre_hook(lambda module, args: found.append(args[0]))
    was = model.training
    try:
        model.eval()(pixel_values=images)
    finally:
        hook.remove()
        model.train(was)
    return found[0].double()


def probe_accuracy(model, train_rows, test_set) -> float:
    """Test accuracy of a logistic regression on the frozen pooled features of the labeled images (standardized): how
    much the backbone's representation tells the digit before any fine-tuning."""
    x = pooled_features(model, torch.stack([r["pixel_values"] for r in train_rows]))
    t = pooled_features(model, torch.stack([r["pixel_values"] for r in test_set]))
    y, y_test = torch.stack([r["labels"] for r in train_rows]), torch.stack([r["labels"] for r in test_set])
    return logistic_probe(x, y, t, y_test)


def logistic_probe(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Test accuracy of a logistic regression fitted on standardized features `x` (statistics of `x`)."""
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    clf = LogisticRegression(max_iter=2000).fit(((x - mean) / std).numpy(), y.numpy())
    return float(clf.score(((x_test - mean) / std).numpy(), y_test.numpy()))


@torch.no_grad()
def teacher_probe(distiller, train_rows, test_set, timesteps) -> list[float]:
    """Per timestep t, the linear-probe test accuracy of the teacher's own pooled feature of the clean images at t (the
    quantity the policy's reward estimates): what the policy should learn to prefer."""
    x = torch.stack([r["pixel_values"] for r in train_rows])
    x_test = torch.stack([r["pixel_values"] for r in test_set])
    y, y_test = torch.stack([r["labels"] for r in train_rows]), torch.stack([r["labels"] for r in test_set])

    def pooled(images, t):
        return distiller.teacher_features(images, torch.full((len(images),), t)).flatten(2).mean(-1).double()

    return [logistic_probe(pooled(x, t), y, pooled(x_test, t), y_test) for t in timesteps]


def finetune(run: Run, recipe: RepFusionRecipe, model, train_rows, test_set, key: str) -> float:
    """Test accuracy of `model` fine-tuned on the labeled rows (resumable stage `key`)."""
    args = training_args(
        recipe, run.trainer_dir(key), learning_rate=recipe.finetune_learning_rate,
        num_train_epochs=recipe.finetune_epochs, per_device_train_batch_size=recipe.finetune_batch_size,
        eval_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = ResumableTrainer(model=model, args=args, train_dataset=train_rows, compute_metrics=accuracy)
    trainer.remove_callback(transformers.PrinterCallback)
    train(trainer)
    return trainer.evaluate(test_set)["eval_accuracy"]


def run(recipe: RepFusionRecipe) -> dict:
    arms = recipe.arms()
    run = Run(recipe, stages=2 + len(recipe.seeds) * len(arms))
    datasets.disable_progress_bars()
    unet, scheduler = diffusion_teacher(run, recipe)
    try:
        width = getattr(hooked_module(unet, recipe.teacher_hook), "out_channels", None)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    if width is None:
        raise RecipeError(f"teacher_hook {recipe.teacher_hook!r} is not a convolution; name a Conv2d of the UNet.")
    data = digits(recipe.image_size, seed=recipe.seed)
    train_rows, test_set = in_memory_rows(data["train"]), data["test"]
    all_labels = torch.stack([r["labels"] for r in train_rows])
    rows, distributions, kept, probe_curve = [], [], None, []
    for seed in recipe.seeds:
        picked = set(labeled_subset(all_labels, recipe.labels_per_class, seed).tolist())
        masked = [{**r, "labels": r["labels"] if i in picked else torch.tensor(-100)} for i, r in enumerate(train_rows)]
        labeled = [r for i, r in enumerate(train_rows) if i in picked]
        for arm in arms:
            key = f"seed{seed}-" + ("scratch" if arm == SCRATCH else "policy" if arm == REPFUSION else f"t{arm[10:]}")
            done = run.resume_stage(f"seed {seed}: {arm}, fine-tuned on {len(labeled)} labels", key)
            if done is None:
                pre = {}
                if arm == SCRATCH:
                    torch.manual_seed(seed)
                    model = VGGForImageClassification(student_config(recipe))
                else:
                    fixed = None if arm == REPFUSION else int(arm.rsplit(" ", 1)[1])
                    distiller, pre = pretrain(run, recipe, unet, scheduler, masked, fixed, seed)
                    if arm == REPFUSION:
                        images = torch.stack([r["pixel_values"] for r in test_set])
                        pre["timestep_distribution"] = distiller.timestep_distribution(images).tolist()
                        if seed == recipe.seeds[0]:
                            steps = probe_timesteps(scheduler)
                            pre["teacher_probe"] = teacher_probe(distiller, labeled, test_set, steps)
                    torch.manual_seed(seed)
                    model = distiller.export_student_backbone(id2label=LABELS)
                probe = probe_accuracy(model, labeled, test_set)
                acc = finetune(run, recipe, model, labeled, test_set, key)
                done = {"arm": arm, "seed": seed, "accuracy": acc, "linear_probe": probe, **pre}
                run.save_stage(key, done, model if (arm == REPFUSION and seed == recipe.seeds[0]) else None)
                run.say(f"  {arm}: test accuracy {acc:.3f} (linear probe before fine-tuning {probe:.3f})")
            if arm == REPFUSION:
                distributions.append(done["timestep_distribution"])
                if seed == recipe.seeds[0]:
                    probe_curve = done["teacher_probe"]
                    kept = VGGForImageClassification.from_pretrained(run.stage_folder(key), trust_remote_code=False)
            rows.append(done)
    summary = summarize_arms(rows, arms, ["accuracy", "linear_probe"])
    k = recipe.policy_num_timesteps
    grid = (torch.arange(k) * scheduler.config.num_train_timesteps // k).tolist()
    mean_dist = torch.tensor(distributions).mean(0).tolist()
    results = {
        "method": METHOD,
        "dataset": f"scikit-learn digits ({recipe.image_size}x{recipe.image_size}), {recipe.labels_per_class} labels "
        "per digit",
        "dataset_id": "sklearn-digits",
        "teacher": run.teacher_info,
        "training_setup": _training_setup(recipe, run.teacher_info),
        "recipe": dataclasses.asdict(recipe),
        "runs": rows,
        "summary": summary,
        "timestep_grid": grid,
        "timestep_distribution": mean_dist,
        "timestep_mean": sum(t * p for t, p in zip(grid, mean_dist)),
        "teacher_probe": {"timesteps": probe_timesteps(scheduler), "accuracy": probe_curve},
        "verdict": verdict_against(summary, REPFUSION, "accuracy", "test accuracy after fine-tuning")
        + " "
        + verdict_against(summary, REPFUSION, "linear_probe", "linear-probe accuracy of the frozen backbone")
        + " "
        + VERDICT_RULE,
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the fine-tuned RepFusion student of the first seed with its card, and the report")
    run.save_model(kept, "student", student_card(kept, run.out / "student", results))
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"RepFusion done in {results['elapsed_s']:.0f}s: test accuracy "
        + ", ".join(f"{s['arm']} {s['accuracy_mean']:.3f}" for s in summary)
        + f". Report in {run.out}/"
    )
    return results


def _training_setup(recipe: RepFusionRecipe, teacher: dict) -> str:
    return (
        f"Teacher: {teacher.get('source')} ({teacher.get('training_setup')}). Student: a VGG {recipe.hidden_sizes} x "
        f"{recipe.depths} (BatchNorm, 1-channel {recipe.image_size}x{recipe.image_size} digits in [-1, 1]). "
        f"Pre-training on all training images, {recipe.pretrain_epochs:g} epochs, AdamW lr "
        f"{recipe.pretrain_learning_rate:g}, batch {recipe.batch_size}: MSE between the "
        + (
            "pooled 1x1-projected last student map and the pooled teacher feature"
            if recipe.feature_loss == "pooled"
            else "1x1-projected last student map, bilinearly resized, and the teacher feature map"
        )
        + f" at `{recipe.teacher_hook}` of the clean image at t "
        f"(kd_weight {recipe.kd_weight:g}); RepFusion picks t per image with a policy over "
        f"{recipe.policy_num_timesteps} timesteps (REINFORCE, lr "
        f"{recipe.policy_learning_rate or recipe.pretrain_learning_rate:g}, "
        f"reward -CE of the reward head, entropy weight "
        f"{recipe.entropy_reg:g} decaying to 0 at the last epoch), trained on the labeled images only; the "
        f"fixed-timestep baselines use t = {', '.join(map(str, recipe.fixed_timesteps))} for every image. "
        f"Fine-tuning (every arm, fresh head): {recipe.labels_per_class} labeled "
        f"images per digit, {recipe.finetune_epochs:g} epochs, AdamW lr {recipe.finetune_learning_rate:g}, batch "
        f"{recipe.finetune_batch_size}. Seeds {recipe.seeds} (labeled subset, initializations, training)."
    )


def student_card(model, repo_or_path, results: dict):
    mine = next(s for s in results["summary"] if s["arm"] == REPFUSION)
    teacher = results.get("teacher") or {}
    return backbone_card(
        model,
        repo_or_path,
        results={
            "fine_tuned": True,
            "teacher": teacher.get("hub_id") or (teacher.get("source") if "/" in str(teacher.get("source")) else None),
            "teacher_hook": results["recipe"]["teacher_hook"],
            "training_setup": results["training_setup"],
            "metrics": {"test accuracy (mean over seeds)": round(mine["accuracy_mean"], 4)},
            "dataset": results["dataset"],
            "description": (
                "A small VGG digit classifier pre-trained with RepFusion (regressing the feature of a DDPM UNet at "
                "timesteps picked per image by a REINFORCE policy), then fine-tuned on a few labels. "
                + results["verdict"]
            ),
        },
    )


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    grid, dist = results["timestep_grid"], results["timestep_distribution"]
    width = grid[1] - grid[0] if len(grid) > 1 else 1
    left.bar(grid, dist, width=width * 0.9, align="edge", color="#4c72b0", label="learned policy (mean over seeds)")
    left.axhline(1 / len(grid), color="#999999", ls="--", label="initial policy (uniform)")
    probe = results.get("teacher_probe") or {}
    if probe.get("accuracy"):
        twin = left.twinx()
        twin.plot(probe["timesteps"], probe["accuracy"], "o-", color="#c44e52", label="teacher feature, linear probe")
        twin.set_ylabel("linear-probe accuracy of the teacher feature", color="#c44e52", fontsize=8)
        twin.legend(fontsize=8, loc="upper right")
    left.set_xlabel("teacher timestep t")
    left.set_ylabel("probability (test images)")
    left.set_title("RepFusion's learned timestep distribution", fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    summary = results["summary"]
    x = torch.arange(len(summary)).tolist()
    for shift, metric, label, color in ((-0.2, "accuracy", "fine-tuned", "#4c72b0"),
                                        (0.2, "linear_probe", "linear probe (frozen)", "#dd8452")):  # fmt: skip
        right.bar([i + shift for i in x], [s[f"{metric}_mean"] for s in summary], width=0.4, capsize=3,
                  yerr=[s[f"{metric}_std"] for s in summary], color=color, label=label)  # fmt: skip
    right.set_xticks(x, [s["arm"].replace(" (", "\n(") for s in summary], fontsize=8)
    lows = [s[f"{m}_mean"] for s in summary for m in ("accuracy", "linear_probe")]
    right.set_ylim(max(0.0, min(lows) - 0.1), 1.0)
    right.legend(fontsize=8, loc="lower right")
    right.set_title("test accuracy (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    lines = [f"# RepFusion on {results['dataset']}", "", results["training_setup"], "", f"**{results['verdict']}**",
             "", "![report](report.png)", "", "| arm | test accuracy (fine-tuned) | linear probe (frozen) | seeds |",
             "|---|---|---|---|"]  # fmt: skip
    for s in results["summary"]:
        lines.append(f"| {s['arm']} | {s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f} | "
                     f"{s['linear_probe_mean']:.4f} ± {s['linear_probe_std']:.4f} | {s['seeds']} |")  # fmt: skip
    lines += ["", "| seed | arm | accuracy | linear probe | final loss_feat | final mean t |", "|---" * 6 + "|"]
    for r in results["runs"]:
        feat, t = r.get("loss_feat"), r.get("mean_t")
        lines.append(f"| {r['seed']} | {r['arm']} | {r['accuracy']:.4f} | {r['linear_probe']:.4f} | "
                     f"{'' if feat is None else f'{feat:.4f}'} | "
                     f"{'' if t is None else f'{t:.1f}'} |")  # fmt: skip
    probe = results["teacher_probe"]
    curve = ", ".join(f"t = {t}: {a:.3f}" for t, a in zip(probe["timesteps"], probe["accuracy"]))
    lines += ["", "Linear-probe test accuracy of the teacher's own pooled feature (clean images at t, the first seed's "
              f"labeled images): {curve}."]  # fmt: skip
    lines += ["", f"Mean timestep under the learned policy: {results['timestep_mean']:.1f} (uniform: "
              f"{sum(results['timestep_grid']) / len(results['timestep_grid']):.1f}).", "",
              "The fine-tuned RepFusion student of the first seed is in `student/` (with its card); the DDPM teacher "
              "is in `teacher/` (a diffusers DDPMPipeline with samples.png).", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(RepFusionRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_repfusion_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a RepFusion run: the fine-tuned student of the first seed (the teacher goes to
    `<repo_id>-teacher` first, by `hf_methods.hub.push_run`)."""
    from hf_methods.hub import push_saved_model

    model = VGGForImageClassification.from_pretrained(out_dir / "student", trust_remote_code=False)
    push_saved_model(out_dir / "student", repo_id, student_card(model, repo_id, results),
                     commit_message="Upload the RepFusion student", **hub_kwargs)  # fmt: skip
    return {"student": repo_id}


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.repfusion.pipeline"))
