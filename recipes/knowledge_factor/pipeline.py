"""The KF main job: digits made two-task (the digit, and a second label: by default a random multiple of 90 degrees
each image is turned by), a multi-task VGG teacher trained on both, then per seed three students with the same
epochs, batch and schedule: Knowledge Factorization (a shared common-knowledge network + one small task-specific
network per task, the official loss), a plain VGG of about the same size distilled with KD only, and that VGG from
scratch -> test accuracy per task (mean ± std over the seeds), the accuracy of KF's factor networks taken out one task
at a time without fine-tuning (`assemble`), and a linear probe of each TSN's features on both tasks.

    hf-methods kf                                        # the embedded default: a few minutes on 2 CPUs
    hf-methods kf --second_task parity --epochs 40       # any recipe field can be overridden
    hf-methods kf --push_to_hub true --hub_model_id org/kf-digits   # the KF model, its factor networks, the teacher
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
from hf_methods.data import digits
from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.knowledge_factor import KnowledgeFactorConfig, KnowledgeFactorModel
from hf_methods.recipe import RecipeArguments, Run, num_parameters, parse_recipe, train, training_args
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against
from hf_methods.trainers.knowledge_factor_config import KnowledgeFactorTrainingConfig
from hf_methods.trainers.knowledge_factor_trainer import KnowledgeFactorTrainer, MultiTaskDistillationTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "knowledge_factor" / "digits.yaml"
METHOD = "KF"
ARMS = ("KF", "KD student", "student from scratch")
SECOND_TASKS = {
    "rotation": ["0°", "90°", "180°", "270°"],  # independent of the digit
    "parity": ["even", "odd"],  # a function of the digit
}


@dataclass
class KFRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/kf-digits", metadata={"help": "Where the models and the report go."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo of the KF model (org/name); factor networks go to <id>-<task>."}
    )
    image_size: int = field(default=8, metadata={"help": "Digits are resized from 8x8 to this size."})
    second_task: str = field(
        default="rotation",
        metadata={"help": "'rotation' (each image turned by a random multiple of 90 degrees) or 'parity'."},
    )
    teacher_hidden_sizes: list[int] = field(
        default_factory=lambda: [32, 64, 128], metadata={"help": "Teacher VGG channels per stage."}
    )
    teacher_depths: list[int] = field(
        default_factory=lambda: [2, 2, 2], metadata={"help": "Teacher VGG convolutions per stage."}
    )
    teacher_epochs: int = field(default=30, metadata={"help": "Epochs of the teacher."})
    ckn_hidden_sizes: list[int] = field(
        default_factory=lambda: [16, 32, 64], metadata={"help": "KF's common-knowledge VGG: channels per stage."}
    )
    tsn_hidden_sizes: list[int] = field(
        default_factory=lambda: [8, 16], metadata={"help": "KF's task-specific VGGs: channels per stage."}
    )
    student_hidden_sizes: list[int] = field(
        default_factory=lambda: [16, 36, 72],
        metadata={"help": "The plain student VGG (about KF's size): channels per stage."},
    )
    epochs: int = field(default=30, metadata={"help": "Epochs of every student."})
    learning_rate: float = field(default=0.01, metadata={"help": "AdamW learning rate, cosine schedule."})
    temperature: float = field(default=10.0, metadata={"help": "KD temperature (official CIFAR-10: 10)."})
    lambda_logits: float = field(default=0.1, metadata={"help": "KD weight (official lambda_kd 0.1)."})
    lambda_infomax: float = field(default=1.0, metadata={"help": "KF's InfoMax weight (official lambda_feat 1.0)."})
    lambda_infomin: float = field(default=1e-3, metadata={"help": "KF's InfoMin weight (official beta 1e-3)."})
    lambda_task: float = field(default=1.0, metadata={"help": "KF's TSN-head weight (official task_weight 1.0)."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Label smoothing of every CE (official 0.1)."})
    infomax_estimator: str = field(
        default="official", metadata={"help": "'official' (means over all batch^2 entries) or 'pairs'."}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One run of every arm per seed."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap the training split (quick runs)."})

    def __post_init__(self):
        super().__post_init__()
        if self.second_task not in SECOND_TASKS:
            raise ValueError(f"second_task must be one of {list(SECOND_TASKS)}, got {self.second_task!r}.")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {self.image_size}.")
        for name in ("epochs", "teacher_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("teacher_hidden_sizes", "teacher_depths", "ckn_hidden_sizes", "tsn_hidden_sizes",
                     "student_hidden_sizes"):  # fmt: skip
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty list of positive integers, got {values}.")
        if len(self.teacher_depths) != len(self.teacher_hidden_sizes):
            raise ValueError(
                f"teacher_depths has {len(self.teacher_depths)} entries but teacher_hidden_sizes "
                f"{len(self.teacher_hidden_sizes)}; give one depth per stage."
            )
        if len(self.teacher_hidden_sizes) < len(self.ckn_hidden_sizes):
            raise ValueError(
                f"the teacher has {len(self.teacher_hidden_sizes)} stages but the CKN {len(self.ckn_hidden_sizes)}; "
                "InfoMax pairs every CKN stage with one of the teacher's last stages, so give the teacher at least as "
                "many."
            )
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be a positive integer or empty, got {self.max_train_samples}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


# --- data -------------------------------------------------------------------------------------------------------------
def task_names(recipe: KFRecipe) -> list[str]:
    return ["digit", recipe.second_task]


def task_labels(recipe: KFRecipe) -> list[list[str]]:
    return [[str(d) for d in range(10)], SECOND_TASKS[recipe.second_task]]


def two_task_digits(recipe: KFRecipe) -> dict[str, dict[str, torch.Tensor]]:
    """{"train", "test"}: `pixel_values` (n, 1, s, s) and `labels` (n, 2) = (digit, second label). For "rotation"
    each image is turned by k x 90 degrees, k drawn uniformly once per image from `recipe.seed` (the label is k);
    for "parity" the images are unchanged and the label is digit % 2."""
    data = digits(image_size=recipe.image_size, seed=recipe.seed, max_train_samples=recipe.max_train_samples)
    g = torch.Generator().manual_seed(recipe.seed)
    out = {}
    for split in ("train", "test"):
        rows = data[split][:]
        x, digit = rows["pixel_values"], torch.as_tensor(rows["labels"])
        if recipe.second_task == "rotation":
            second = torch.randint(0, 4, (len(digit),), generator=g)
            x = torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(x, second)])
        else:
            second = digit % 2
        out[split] = {"pixel_values": x.contiguous(), "labels": torch.stack([digit, second], dim=1)}
    return out


def rows_of(split: dict[str, torch.Tensor]) -> list[dict]:
    """The split as in-memory rows (a Trainer reads them many times; see `hf_methods.data.in_memory_rows`)."""
    return [{"pixel_values": x, "labels": y} for x, y in zip(split["pixel_values"], split["labels"])]


# --- models -----------------------------------------------------------------------------------------------------------
def _vgg_config(hidden_sizes, depths=None, **kw) -> VGGConfig:
    return VGGConfig(num_channels=1, hidden_sizes=list(hidden_sizes), depths=list(depths or [1] * len(hidden_sizes)),
                     **kw)  # fmt: skip


def kf_config(recipe: KFRecipe) -> KnowledgeFactorConfig:
    return KnowledgeFactorConfig(
        ckn_config=_vgg_config(recipe.ckn_hidden_sizes).to_dict(),
        tsn_config=_vgg_config(recipe.tsn_hidden_sizes).to_dict(),
        task_names=task_names(recipe),
        task_labels=task_labels(recipe),
    )


def multitask_vgg(recipe: KFRecipe, hidden_sizes, depths=None) -> VGGForImageClassification:
    """A VGG whose logits are the two tasks' side by side (the labels are the KF model's, "digit:3", ...)."""
    labels = kf_config(recipe).id2label
    return VGGForImageClassification(_vgg_config(hidden_sizes, depths, id2label=labels))


def _args(recipe: KFRecipe, work: Path, seed: int, epochs: int) -> KnowledgeFactorTrainingConfig:
    return training_args(recipe, work, learning_rate=recipe.learning_rate, num_train_epochs=epochs, seed=seed,
                         cls=KnowledgeFactorTrainingConfig, eval_strategy="no", disable_tqdm=True,
                         temperature=recipe.temperature, lambda_logits=recipe.lambda_logits,
                         lambda_infomax=recipe.lambda_infomax, lambda_infomin=recipe.lambda_infomin,
                         lambda_task=recipe.lambda_task, label_smoothing_factor=recipe.label_smoothing,
                         infomax_estimator=recipe.infomax_estimator)  # fmt: skip


# --- evaluation -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def task_logits(model, pixel_values: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Per-task logits of a KF model (its `logits` tuple) or of a multi-task classifier (split), in eval mode."""
    was_training = model.training
    model.eval()
    parts = []
    for i in range(0, len(pixel_values), 256):
        logits = model(pixel_values=pixel_values[i : i + 256]).logits
        parts.append(logits if isinstance(logits, tuple) else torch.split(logits, sizes, dim=-1))
    model.train(was_training)
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def task_accuracies(model, split: dict, names: list[str], sizes: list[int], columns=None) -> dict[str, float]:
    """Test accuracy of every task the model predicts; `columns`: the label column of each (default 0, 1, ...)."""
    logits = task_logits(model, split["pixel_values"], sizes)
    columns = columns or range(len(names))
    return {
        f"{name}_accuracy": float((z.argmax(-1) == split["labels"][:, c]).float().mean())
        for name, z, c in zip(names, logits, columns)
    }


@torch.no_grad()
def tsn_features(model: KnowledgeFactorModel, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    model.eval()
    return [torch.cat([tsn(pixel_values[i : i + 256]) for i in range(0, len(pixel_values), 256)]) for tsn in model.tsns]


def probe_tsns(model: KnowledgeFactorModel, data: dict, names: list[str]) -> dict[str, float]:
    """Test accuracy of a logistic regression on each TSN's features (standardized) for each task: how much of
    every task each task-specific network carries (KF's InfoMin should keep a TSN to its own task)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_f = tsn_features(model, data["train"]["pixel_values"])
    test_f = tsn_features(model, data["test"]["pixel_values"])
    out = {}
    for j, owner in enumerate(names):
        for k, task in enumerate(names):
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
            probe.fit(train_f[j].numpy(), data["train"]["labels"][:, k].numpy())
            score = probe.score(test_f[j].numpy(), data["test"]["labels"][:, k].numpy())
            out[f"probe_{owner}_tsn_on_{task}"] = float(score)
    return out


# --- the run ----------------------------------------------------------------------------------------------------------
def train_teacher(run: Run, recipe: KFRecipe, train_rows, data, names, sizes):
    done = run.resume_stage(
        f"training the multi-task teacher (VGG {recipe.teacher_hidden_sizes} x {recipe.teacher_depths}, "
        f"{recipe.teacher_epochs} epochs)",
        "teacher",
    )
    if done is not None:
        teacher = VGGForImageClassification.from_pretrained(run.stage_folder("teacher"), trust_remote_code=False)
        return teacher, done
    torch.manual_seed(recipe.seed)
    teacher = multitask_vgg(recipe, recipe.teacher_hidden_sizes, recipe.teacher_depths)
    args = _args(recipe, run.trainer_dir("teacher"), recipe.seed, recipe.teacher_epochs)
    args.distillation_type = "none"
    trainer = MultiTaskDistillationTrainer(model=teacher, args=args, train_dataset=train_rows, task_num_labels=sizes,
                                           task_names=names)  # fmt: skip
    trainer.remove_callback(transformers.PrinterCallback)
    train(trainer)
    done = {**task_accuracies(teacher, data["test"], names, sizes), "params": num_parameters(teacher)}
    run.save_stage("teacher", done, teacher)
    run.say("  " + ", ".join(f"{n} accuracy {done[f'{n}_accuracy']:.3f}" for n in names))
    return teacher, done


def train_arm(recipe: KFRecipe, arm: str, seed: int, teacher, train_rows, work: Path, names, sizes):
    """One arm of one seed (each arm starts from that seed's initialization and data order)."""
    torch.manual_seed(seed)
    args = _args(recipe, work, seed, recipe.epochs)
    if arm == "KF":
        model = KnowledgeFactorModel(kf_config(recipe))
        trainer = KnowledgeFactorTrainer(model=model, args=args, train_dataset=train_rows, teacher_model=teacher)
    else:
        if arm == "student from scratch":
            args.distillation_type = "none"
        model = multitask_vgg(recipe, recipe.student_hidden_sizes)
        trainer = MultiTaskDistillationTrainer(model=model, args=args, train_dataset=train_rows, task_num_labels=sizes,
                                               task_names=names,
                                               teacher_model=teacher if arm == "KD student" else None)  # fmt: skip
    trainer.remove_callback(transformers.PrinterCallback)  # the run prints one line per arm
    train(trainer)
    return trainer.model


def inference_parameters(model) -> int:
    """Parameters used to predict (a KF model's feature projectors serve training only)."""
    if isinstance(model, KnowledgeFactorModel):
        return num_parameters(model) - num_parameters(model.feature_projectors)
    return num_parameters(model)


def run(recipe: KFRecipe) -> dict:
    run = Run(recipe, stages=len(recipe.seeds) * len(ARMS) + 2)
    datasets.disable_progress_bars()
    names, labels = task_names(recipe), task_labels(recipe)
    sizes = [len(c) for c in labels]
    data = two_task_digits(recipe)
    train_rows = rows_of(data["train"])
    teacher, teacher_done = train_teacher(run, recipe, train_rows, data, names, sizes)
    rows, kept = [], None
    for seed in recipe.seeds:
        for arm in ARMS:
            key = f"seed{seed}-{arm.replace(' ', '_')}"
            done = run.resume_stage(f"seed {seed}: {arm}", key)
            keep = seed == recipe.seeds[0] and arm == "KF"
            if done is None:
                model = train_arm(recipe, arm, seed, teacher, train_rows, run.trainer_dir(key), names, sizes)
                done = {"arm": arm, "seed": seed, **task_accuracies(model, data["test"], names, sizes),
                        "params": inference_parameters(model)}  # fmt: skip
                if arm == "KF":
                    for k, name in enumerate(names):  # each factor network alone, no fine-tuning
                        single = model.assemble([k])
                        acc = task_accuracies(single, data["test"], [name], [sizes[k]], [k])[f"{name}_accuracy"]
                        done[f"assembled_{name}_accuracy"] = acc
                        done[f"assembled_{name}_params"] = num_parameters(single)
                    done.update(probe_tsns(model, data, names))
                run.save_stage(key, done, model if keep else None)
                run.say("  " + ", ".join(f"{n} accuracy {done[f'{n}_accuracy']:.3f}" for n in names))
            if keep:
                kept = run.stage_folder(key)
            rows.append(done)
    metrics = [f"{n}_accuracy" for n in names]
    summary = summarize_arms(rows, ARMS, [*metrics, "params"])
    kf_rows = [r for r in rows if r["arm"] == "KF"]
    extra = [k for k in kf_rows[0] if k.startswith(("assembled_", "probe_"))]
    kf_summary = summarize_arms(kf_rows, ["KF"], extra)[0]
    verdicts = [verdict_against(summary, "KF", m, f"{n} test accuracy") for n, m in zip(names, metrics)]
    results = {
        "method": METHOD,
        "dataset": f"scikit-learn digits, two tasks (digit, {recipe.second_task})",
        "dataset_id": "sklearn-digits",
        "tasks": [{"name": n, "labels": c} for n, c in zip(names, labels)],
        "training_setup": _training_setup(recipe, len(train_rows)),
        "recipe": dataclasses.asdict(recipe),
        "teacher": {"source": "trained by this recipe", **teacher_done},
        "runs": rows,
        "summary": summary,
        "kf_summary": kf_summary,
        "verdict": " ".join(verdicts) + " " + VERDICT_RULE,
        "hf_methods_version": __version__,
        "elapsed_s": run.elapsed(),
    }
    run.stage("saving the teacher, the KF model of the first seed and its factor networks with their cards, the report")
    model = KnowledgeFactorModel.from_pretrained(kept, trust_remote_code=False)
    run.save_model(teacher, "teacher", teacher_card(teacher, run.out / "teacher", results))
    full = model.assemble(list(range(len(names))))  # without the training-only feature projectors
    run.save_model(full, "kf", kf_card(full, run.out / "kf", results))
    for k, name in enumerate(names):
        single = model.assemble([k])
        folder = f"kf-{name}"
        run.save_model(single, folder, kf_card(single, run.out / folder, results))
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results))
    run.finish(
        f"KF done in {results['elapsed_s']:.0f}s: "
        + "; ".join(
            f"{n} accuracy " + ", ".join(f"{a['arm']} {a[f'{n}_accuracy_mean']:.3f}" for a in summary) for n in names
        )
        + f". Report in {run.out}/"
    )
    return results


def _training_setup(recipe: KFRecipe, n: int) -> str:
    second = (
        "the rotation (each image turned by a random multiple of 90 degrees, drawn once per image)"
        if recipe.second_task == "rotation"
        else "the parity of the digit"
    )
    return (
        f"Digits at {recipe.image_size}x{recipe.image_size}, {n} training images, two tasks: the digit and {second}. "
        f"Teacher: VGG {recipe.teacher_hidden_sizes} x {recipe.teacher_depths} with both tasks' logits side by side, "
        f"{recipe.teacher_epochs} epochs. KF: a common-knowledge VGG {recipe.ckn_hidden_sizes} (features of its "
        f"{len(recipe.ckn_hidden_sizes)} stages matched by InfoMax to the teacher's last {len(recipe.ckn_hidden_sizes)}"
        f") + one task-specific VGG {recipe.tsn_hidden_sizes} per task; loss weights InfoMax {recipe.lambda_infomax:g} "
        f"({recipe.infomax_estimator} estimator), KD {recipe.lambda_logits:g} (T={recipe.temperature:g}), TSN head "
        f"{recipe.lambda_task:g}, InfoMin {recipe.lambda_infomin:g}, label smoothing {recipe.label_smoothing:g}. KD "
        f"student: a VGG {recipe.student_hidden_sizes} with the same label-smoothed CE and KD per task; the student "
        f"from scratch: the same VGG on the CE alone. Every student: {recipe.epochs} epochs of batch "
        f"{recipe.batch_size}, AdamW lr {recipe.learning_rate:g} with a cosine schedule. Seeds {recipe.seeds}."
    )


# --- cards, report, push ----------------------------------------------------------------------------------------------
def teacher_card(model, repo_or_path, results: dict):
    from hf_methods.cards import run_model_card

    names = [t["name"] for t in results["tasks"]]
    return run_model_card(
        model,
        repo_or_path,
        method="KF",
        title=f"Multi-task VGG teacher ({', '.join(names)})",
        description=(
            "The multi-task teacher of an hf-methods KF run: one VGG whose logits are the tasks' logits side by side "
            f"({', '.join(str(t['name']) + ': ' + str(len(t['labels'])) for t in results['tasks'])} classes, in that "
            "order)."
        ),
        tags=["multi-task", "teacher"],
        training_setup=results["training_setup"],
        metrics={f"{n} test accuracy": results["teacher"][f"{n}_accuracy"] for n in names},
        dataset=results["dataset"],
    )


def kf_card(model: KnowledgeFactorModel, repo_or_path, results: dict, teacher_ref: str | None = None):
    names = model.config.task_names
    all_names = [t["name"] for t in results["tasks"]]
    kf = next(a for a in results["summary"] if a["arm"] == "KF")
    metrics = {f"{n} test accuracy (mean over seeds)": kf[f"{n}_accuracy_mean"] for n in names}
    info = {
        "training_setup": results["training_setup"] + " This model: the first seed.",
        "metrics": metrics,
        "dataset": results["dataset"],
        "teacher_ref": teacher_ref or results["teacher"].get("hub_id"),
    }
    if names != all_names:
        info["assembled_from"] = f"the KF model of tasks {all_names} (the factor network of {', '.join(names)})"
    return model.model_card(repo_or_path, info)


def report_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t["name"] for t in results["tasks"]]
    summary = results["summary"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(summary)
    colors = ["#dd8452", "#4c72b0", "#999999"]
    for i, entry in enumerate(summary):
        xs = [j + (i - (len(summary) - 1) / 2) * width for j in range(len(names))]
        means = [entry[f"{n}_accuracy_mean"] for n in names]
        stds = [entry[f"{n}_accuracy_std"] for n in names]
        label = f"{entry['arm']} ({entry['params_mean'] / 1000:.1f}k params)"
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label, color=colors[i % len(colors)])
    teacher = results["teacher"]
    for j, n in enumerate(names):
        ax.hlines(teacher[f"{n}_accuracy"], j - 0.45, j + 0.45, colors="black", linestyles="dashed",
                  label="teacher" if j == 0 else None)  # fmt: skip
    lowest = min(e[f"{n}_accuracy_mean"] - e[f"{n}_accuracy_std"] for e in summary for n in names)
    ax.set(xticks=range(len(names)), xticklabels=names, ylim=(max(0.0, lowest - 0.05), 1.0),
           ylabel="test accuracy (mean ± std over seeds)", title=results["dataset"])  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    names = [t["name"] for t in results["tasks"]]
    kf = results["kf_summary"]
    teacher = results["teacher"]
    lines = [f"# KF on {results['dataset']}", "", results["training_setup"], "", f"**{results['verdict']}**", "",
             "![report](report.png)", "",
             "| arm | parameters (inference) | " + " | ".join(f"{n} accuracy" for n in names) + " |",
             "|---" * (len(names) + 2) + "|",
             f"| teacher | {teacher['params']:,} | " + " | ".join(f"{teacher[f'{n}_accuracy']:.3f}" for n in names)
             + " |"]  # fmt: skip
    for a in results["summary"]:
        cells = " | ".join(f"{a[f'{n}_accuracy_mean']:.3f} ± {a[f'{n}_accuracy_std']:.3f}" for n in names)
        lines.append(f"| {a['arm']} | {a['params_mean']:,.0f} | {cells} |")
    lines += ["", "KF's factor networks taken out one task at a time (`model.assemble([k])`, no fine-tuning): the "
              "shared CKN with that task's TSN and heads. A task's prediction reads only the CKN and its own TSN, so "
              "its accuracy is the full model's.", "", "| factor network | parameters | accuracy on its task |",
              "|---|---|---|"]  # fmt: skip
    for n in names:
        lines.append(
            f"| {n} | {kf[f'assembled_{n}_params_mean']:,.0f} | {kf[f'assembled_{n}_accuracy_mean']:.3f} ± "
            f"{kf[f'assembled_{n}_accuracy_std']:.3f} |"
        )
    lines += ["", "Linear probes (logistic regression, test accuracy) of each TSN's features, for each task: how much "
              "of every task a task-specific network carries.", "",
              "| TSN of | " + " | ".join(f"probe on {n}" for n in names) + " |",
              "|---" * (len(names) + 1) + "|"]  # fmt: skip
    for owner in names:
        cells = " | ".join(
            f"{kf[f'probe_{owner}_tsn_on_{n}_mean']:.3f} ± {kf[f'probe_{owner}_tsn_on_{n}_std']:.3f}" for n in names
        )
        lines.append(f"| {owner} | {cells} |")
    lines += ["", "Every run:", "", "| seed | arm | " + " | ".join(f"{n} accuracy" for n in names) + " |",
              "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for r in results["runs"]:
        lines.append(f"| {r['seed']} | {r['arm']} | " + " | ".join(f"{r[f'{n}_accuracy']:.3f}" for n in names) + " |")
    lines += ["", "Saved: `kf/` (the KF model of the first seed, both tasks, without the training-only feature "
              "projectors), `kf-<task>/` (each factor network alone), `teacher/`, each with its card.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(KFRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_kf_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a KF run: the KF model to `repo_id`, each factor network to `<repo_id>-<task>` (the
    teacher, when the run trained it, was pushed to `<repo_id>-teacher` first by `push_run`)."""
    from hf_methods.hub import push_saved_model

    teacher_ref = results.get("teacher", {}).get("hub_id")
    pushed = {}
    folders = [("kf", repo_id)] + [(f"kf-{t['name']}", f"{repo_id}-{t['name']}") for t in results["tasks"]]
    for folder, repo in folders:
        model = KnowledgeFactorModel.from_pretrained(out_dir / folder, trust_remote_code=False)
        push_saved_model(out_dir / folder, repo, kf_card(model, repo, results, teacher_ref),
                         commit_message=f"Upload the KF model ({', '.join(model.config.task_names)})",
                         **hub_kwargs)  # fmt: skip
        pushed[folder] = repo
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.knowledge_factor.pipeline"))
