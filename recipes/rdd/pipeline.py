"""The RDD main job: a segmentation teacher (UperNet with its auxiliary head) -> the same small student trained
alone, with plain pixel KD and with Relative Difficulty Distillation under one budget -> mIoU of all four on held-out
scenes, report, models.

    hf-methods rdd                                   # embedded default: digit scenes, ~2.5 min on 2 CPUs
    hf-methods rdd --student_arch segformer --min_kept 400
    hf-methods rdd --push_to_hub true --hub_model_id org/rdd-digits   # the three students and a trained teacher
    accelerate launch -m hf_methods.recipes.rdd.pipeline --config my.yaml

The data need no network: scikit-learn's 8x8 digits pasted onto a canvas (1 to `max_digits` per image, no overlap,
deterministic from the seed); a pixel's class is digit + 1 where the digit's intensity is above `pixel_threshold`,
else 0 (background), 11 classes. Train and test scenes use disjoint source digit images.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from datasets import Array2D, Array3D, Dataset, DatasetDict, Features
from transformers import (
    AutoModelForSemanticSegmentation,
    ConvNextConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from hf_methods import __version__
from hf_methods.cards import hub_id, run_model_card
from hf_methods.cli import run_script
from hf_methods.data import DIGIT, digit_canvases
from hf_methods.recipe import (
    RecipeArguments,
    Run,
    check_model_reference,
    load_teacher,
    num_parameters,
    parse_recipe,
    train,
    training_args,
)
from hf_methods.report import fmt_params
from hf_methods.trainers.rdd_config import RDDConfig
from hf_methods.trainers.rdd_trainer import RDDTrainer
from hf_methods.trainers.resumable import ResumableTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "rdd" / "digits.yaml"
CLASS_NAMES = ["background"] + [f"digit {d}" for d in range(10)]
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255
STUDENT_RUNS = (("alone", "student alone"), ("kd", "student + KD"), ("rdd", "student + RDD"))


@dataclass
class RDDRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/rdd-digits", metadata={"help": "Where models and the report go."})
    seed: int = field(default=0, metadata={"help": "Seed of the scenes, initializations and training."})
    batch_size: int = field(default=16, metadata={"help": "Per-device batch size of every run."})
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Repo of the RDD student (org/name); the KD and alone students go to <id>-kd and <id>-alone, a "
            "trained teacher to <id>-teacher."
        },
    )
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Path or Hub id of a trained 11-class UperNetForSemanticSegmentation with its auxiliary head; "
            "empty trains one."
        },
    )
    canvas_size: int = field(default=32, metadata={"help": "Side of the square scenes the 8x8 digits are pasted on."})
    max_digits: int = field(default=3, metadata={"help": "Each scene holds 1 to max_digits digits."})
    pixel_threshold: float = field(
        default=4.0,
        metadata={"help": "A digit pixel (intensity 0..16) above this is labelled digit + 1, else background."},
    )
    num_train_images: int = field(default=1200, metadata={"help": "Training scenes."})
    num_test_images: int = field(default=300, metadata={"help": "Test scenes (built from held-out digit images)."})
    test_fraction: float = field(
        default=0.25, metadata={"help": "Share of the source digit images kept for test scenes."}
    )
    teacher_widths: list[int] = field(
        default_factory=lambda: [16, 32, 64],
        metadata={"help": "ConvNeXt stage widths (2 to 4 stages) of the teacher trained when `teacher` is empty."},
    )
    teacher_depths: list[int] = field(
        default_factory=lambda: [2, 2, 2], metadata={"help": "ConvNeXt blocks per stage of that teacher."}
    )
    teacher_head_size: int = field(
        default=32, metadata={"help": "UperNet decoder width of that teacher (its auxiliary head uses half)."}
    )
    teacher_epochs: float = field(default=10, metadata={"help": "Epochs to train the teacher."})
    teacher_learning_rate: float = field(default=1e-2, metadata={"help": "Teacher learning rate (AdamW, cosine)."})
    student_arch: str = field(
        default="upernet",
        metadata={
            "help": "'upernet' (with an auxiliary head, like the paper's ResNet students) or 'segformer' (no auxiliary "
            "head, logits at 1/4 resolution)."
        },
    )
    student_widths: list[int] = field(
        default_factory=lambda: [8, 16, 32], metadata={"help": "Stage widths of the student (2 to 4 stages)."}
    )
    student_depths: list[int] = field(
        default_factory=lambda: [1, 1, 1], metadata={"help": "Blocks per stage of the student."}
    )
    student_head_size: int = field(default=16, metadata={"help": "Decoder width of the student."})
    student_epochs: float = field(
        default=8, metadata={"help": "Epochs of every student run (alone, + KD, + RDD: the same budget)."}
    )
    student_learning_rate: float = field(default=1e-2, metadata={"help": "Student learning rate (AdamW, cosine)."})
    rdd_warmup_ratio: float = field(
        default=0.1,
        metadata={"help": "Share of the student's steps in RDD stage 1 (official: 4000 of 40000 iterations)."},
    )
    ohem_thresh: float = field(default=0.7, metadata={"help": "OHEM threshold of RDD stage 2 (official 0.7)."})
    min_kept: int = field(
        default=800,
        metadata={
            "help": "OHEM min_kept per batch. Official 100000 is ~4.8%% of 4x512x1024 pixels; 800 is ~4.9%% of "
            "16x32x32."
        },
    )
    lambda_logits: float = field(
        default=1.0,
        metadata={"help": "Weight of the pixel KD term of both KD runs, the paper's lambda_kd (official 1.0)."},
    )
    temperature: float = field(default=1.0, metadata={"help": "KD temperature (official 1.0)."})
    aux_weight: float = field(
        default=0.4, metadata={"help": "Weight of the student's auxiliary-head CE (official 0.4)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_model_reference("teacher", self.teacher)
        if self.student_arch not in ("upernet", "segformer"):
            raise ValueError(f"student_arch must be 'upernet' or 'segformer', got {self.student_arch!r}.")
        if self.canvas_size < DIGIT:
            raise ValueError(
                f"canvas_size must be at least {DIGIT} (the digits are {DIGIT}x{DIGIT}), got {self.canvas_size}."
            )
        if self.max_digits < 1:
            raise ValueError(f"max_digits must be >= 1, got {self.max_digits}.")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}.")
        if not 0 <= self.rdd_warmup_ratio <= 1:
            raise ValueError(f"rdd_warmup_ratio must be in [0, 1], got {self.rdd_warmup_ratio}.")
        for name in ("teacher", "student"):
            widths, depths = getattr(self, f"{name}_widths"), getattr(self, f"{name}_depths")
            if len(widths) != len(depths) or not 2 <= len(widths) <= 4:
                raise ValueError(
                    f"{name}_widths and {name}_depths need one entry per stage (2 to 4 stages), got "
                    f"{widths} and {depths}."
                )


# ---------------------------------------------------------------- data
def digit_scenes(
    num_train: int,
    num_test: int,
    canvas_size: int = 32,
    max_digits: int = 3,
    pixel_threshold: float = 4.0,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> DatasetDict:
    """Train/test scenes of pasted scikit-learn digits with per-pixel labels (see the module docstring;
    `hf_methods.data.digit_canvases`, free layout).

    `pixel_values` (1, S, S) are intensities scaled to [-1, 1]; `labels` (S, S) are 0..10. Test scenes are made of
    source images no training scene uses (a stratified split of the 1797 digits), so the test measures generalization
    to unseen handwriting. Reproducible from `seed`.
    """
    canvases = digit_canvases(
        num_train,
        num_test,
        canvas_size,
        1,
        max_digits,
        layout="free",
        test_fraction=test_fraction,
        pixel_threshold=pixel_threshold,
        seed=seed,
    )
    features = Features(
        {
            "pixel_values": Array3D(shape=(1, canvas_size, canvas_size), dtype="float32"),
            "labels": Array2D(shape=(canvas_size, canvas_size), dtype="int64"),
        }
    )
    return DatasetDict(
        {
            name: Dataset.from_dict(
                {"pixel_values": split["pixel_values"], "labels": split["segmentation"]}, features=features
            ).with_format("torch")
            for name, split in canvases.items()
        }
    )


# ---------------------------------------------------------------- models and metric
def _torch_default_init(model):
    """PyTorch's default (Kaiming-uniform) init for every conv and linear layer. The transformers init (normal, std
    0.02) suits fine-tuning; trained from scratch at this size it leaves these networks stuck predicting background
    for the first ~100 steps."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    return model


def upernet(widths, depths, head_size: int, auxiliary: bool = True) -> UperNetForSemanticSegmentation:
    """A small UperNet on a ConvNeXt backbone with a 2x2 stem, for 32x32 scenes.

    The decoder gets the stem's output too, so UperNet's auxiliary head (which reads feature map 2) sees stage 2 at
    1/4 of the input (8x8 here). With the usual stage1..stage4 it would read 4x4 maps, too coarse to outline 8x8
    digits: its predictions would disagree with the main head on nearly every digit pixel, and RDD stage 1 would
    just mute the foreground.
    """
    stages = [f"stage{i + 1}" for i in range(len(widths))]
    backbone = ConvNextConfig(
        num_channels=1,
        patch_size=2,
        num_stages=len(widths),
        hidden_sizes=list(widths),
        depths=list(depths),
        out_features=["stem", *stages],
    )
    return _torch_default_init(
        UperNetForSemanticSegmentation(
            UperNetConfig(
                backbone_config=backbone,
                hidden_size=head_size,
                auxiliary_channels=max(head_size // 2, 4),
                use_auxiliary_head=auxiliary,
                pool_scales=[1, 2],
                num_labels=NUM_CLASSES,
                id2label=dict(enumerate(CLASS_NAMES)),
                label2id={n: i for i, n in enumerate(CLASS_NAMES)},
                loss_ignore_index=IGNORE_INDEX,
            )
        )
    )


def student_model(recipe: RDDRecipe):
    if recipe.student_arch == "upernet":
        return upernet(recipe.student_widths, recipe.student_depths, recipe.student_head_size)
    widths = list(recipe.student_widths)
    return _torch_default_init(
        SegformerForSemanticSegmentation(
            SegformerConfig(
                num_channels=1,
                num_encoder_blocks=len(widths),
                hidden_sizes=widths,
                depths=list(recipe.student_depths),
                num_attention_heads=[max(1, w // 16) for w in widths],
                sr_ratios=[4, 2, 1, 1][: len(widths)],
                patch_sizes=[7, 3, 3, 3][: len(widths)],
                strides=[4, 2, 2, 2][: len(widths)],
                mlp_ratios=[4] * len(widths),
                decoder_hidden_size=recipe.student_head_size,
                num_labels=NUM_CLASSES,
                semantic_loss_ignore_index=IGNORE_INDEX,
                id2label=dict(enumerate(CLASS_NAMES)),
                label2id={n: i for i, n in enumerate(CLASS_NAMES)},
            )
        )
    )


@torch.no_grad()
def segmentation_iou(
    model, dataset, num_classes: int = NUM_CLASSES, batch_size: int = 256, ignore_index: int = IGNORE_INDEX
) -> dict:
    """Per-class IoU over the whole dataset (intersections and unions summed over all pixels, not per image) and
    mIoU, the mean over the classes present in the ground truth. Logits are upsampled to the labels' size (bilinear,
    `align_corners=False`, as transformers' `post_process_semantic_segmentation`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long)
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        logits = model(pixel_values=rows["pixel_values"].to(device)).logits
        labels = rows["labels"]
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        predictions = logits.argmax(1).cpu()
        valid = labels != ignore_index
        confusion += torch.bincount(labels[valid] * num_classes + predictions[valid], minlength=num_classes**2)
    model.train(was_training)
    confusion = confusion.view(num_classes, num_classes).double()  # rows: truth, columns: prediction
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = confusion.sum(1) > 0
    iou = intersection / union.clamp(min=1)
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(intersection.sum() / confusion.sum().clamp(min=1)),
        "per_class_iou": {
            CLASS_NAMES[c] if num_classes == NUM_CLASSES else str(c): (float(iou[c]) if present[c] else None)
            for c in range(num_classes)
        },
    }


# ---------------------------------------------------------------- the job
def run(recipe: RDDRecipe) -> dict:
    run = Run(recipe, stages=6)

    # 1. the scenes
    run.stage(
        f"building {recipe.num_train_images} training and {recipe.num_test_images} test scenes of pasted "
        f"digits ({recipe.canvas_size}x{recipe.canvas_size}, 1-{recipe.max_digits} digits, {NUM_CLASSES} "
        "classes)"
    )
    data = digit_scenes(
        recipe.num_train_images,
        recipe.num_test_images,
        recipe.canvas_size,
        recipe.max_digits,
        recipe.pixel_threshold,
        recipe.test_fraction,
        recipe.seed,
    )
    rows: dict[str, dict] = {}

    # 2. the teacher: UperNet with its auxiliary head (RDD stage 1 compares its two heads)
    if recipe.teacher:
        run.stage(f"loading teacher {recipe.teacher}")
        teacher = load_teacher(AutoModelForSemanticSegmentation, recipe.teacher, recipe.teacher)
        teacher_source = recipe.teacher
    else:
        teacher_source = "a UperNet trained by this recipe"
        done = run.resume_stage(
            f"training a UperNet teacher (ConvNeXt widths {recipe.teacher_widths}, auxiliary head on) for "
            f"{recipe.teacher_epochs:g} epochs",
            "teacher",
        )
        if done is None:
            transformers.set_seed(recipe.seed)
            teacher = upernet(recipe.teacher_widths, recipe.teacher_depths, recipe.teacher_head_size)
            began = time.time()
            args = training_args(
                recipe,
                run.trainer_dir("teacher"),
                learning_rate=recipe.teacher_learning_rate,
                num_train_epochs=recipe.teacher_epochs,
                eval_strategy="no",
            )
            train(ResumableTrainer(model=teacher, args=args, train_dataset=data["train"]))
            done = {"train_time_s": time.time() - began}
            run.save_stage("teacher", done, teacher)
        else:  # an earlier attempt of this run trained it
            folder = run.stage_folder("teacher")
            teacher = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=False)
        rows["teacher"] = done
    if getattr(teacher, "auxiliary_head", None) is None:
        raise ValueError(
            f"The teacher {teacher_source} has no auxiliary head, which RDD stage 1 needs; use a "
            "UperNet trained with use_auxiliary_head=True."
        )
    rows["teacher"] = {
        "name": "teacher",
        "params": num_parameters(teacher),
        **rows.get("teacher", {}),
        **segmentation_iou(teacher, data["test"]),
    }

    # 3-5. the same student, same init, same data order and budget: alone, + plain KD, + RDD
    steps_per_epoch = math.ceil(len(data["train"]) / (recipe.batch_size * run.num_processes))
    total_steps = math.ceil(steps_per_epoch * recipe.student_epochs)
    warmup = round(recipe.rdd_warmup_ratio * total_steps)
    distill = dict(
        cls=RDDConfig,
        lambda_logits=recipe.lambda_logits,
        temperature=recipe.temperature,
        aux_weight=recipe.aux_weight,
        ohem_thresh=recipe.ohem_thresh,
        min_kept=recipe.min_kept,
        rdd_warmup_steps=warmup,
        ignore_index=IGNORE_INDEX,
    )
    students = {}
    for key, name in STUDENT_RUNS:
        detail = {
            "alone": "its own loss, no teacher",
            "kd": "CE + pixel KD",
            "rdd": f"RDD: {warmup} stage-1 steps, then {total_steps - warmup} stage-2 steps",
        }[key]
        done = run.resume_stage(
            f"{name} ({recipe.student_arch}, {recipe.student_epochs:g} epochs = {total_steps} steps; {detail})",
            f"student-{key}",
        )
        if done is not None:  # an earlier attempt of this run trained and scored it
            folder = run.stage_folder(f"student-{key}")
            students[key] = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=False)
            rows[key] = done
            continue
        transformers.set_seed(recipe.seed)
        model = student_model(recipe)
        began = time.time()
        budget = dict(
            learning_rate=recipe.student_learning_rate, num_train_epochs=recipe.student_epochs, eval_strategy="no"
        )
        folder = run.trainer_dir(f"student-{key}")
        if key == "alone":
            args = training_args(recipe, folder, **budget)
            trainer = ResumableTrainer(model=model, args=args, train_dataset=data["train"])
        else:
            args = training_args(recipe, folder, rdd_method="rdd" if key == "rdd" else "kd_only", **budget, **distill)
            trainer = RDDTrainer(model=model, args=args, train_dataset=data["train"], teacher_model=teacher)
        train(trainer)
        students[key] = model
        rows[key] = {
            "name": name,
            "params": num_parameters(model),
            "train_time_s": time.time() - began,
            **segmentation_iou(model, data["test"]),
        }
        run.save_stage(f"student-{key}", rows[key], model)

    results = {
        "method": "RDD",
        "dataset": f"scikit-learn digits pasted on {recipe.canvas_size}x{recipe.canvas_size} scenes "
        f"({NUM_CLASSES}-class segmentation)",
        "dataset_id": "sklearn-digits-scenes",
        "training_setup": _training_setup(recipe, teacher_source, total_steps, warmup),
        "recipe": dataclasses.asdict(recipe),
        "teacher_source": teacher_source,
        "rdd_warmup_steps": warmup,
        "student_steps": total_steps,
        "results": rows,
        "hf_methods_version": __version__,
    }
    results["elapsed_s"] = run.elapsed()
    run.wait_for_everyone()
    if not run.is_main_process:
        return results

    # 6. models and the report
    run.stage("saving the models and the report")
    if not recipe.teacher:
        run.save_model(teacher, "teacher", model_card(teacher, run.out / "teacher", results, "teacher"))
    for key, _ in STUDENT_RUNS:
        run.save_model(
            students[key], f"student-{key}", model_card(students[key], run.out / f"student-{key}", results, key)
        )
    run.write_report(results, markdown=_markdown(results))
    run.finish(
        f"RDD done in {results['elapsed_s']:.0f}s: test mIoU teacher {rows['teacher']['miou']:.3f} "
        f"({fmt_params(rows['teacher']['params'])} params); {fmt_params(rows['rdd']['params'])}-param student alone "
        f"{rows['alone']['miou']:.3f}, + KD {rows['kd']['miou']:.3f}, + RDD {rows['rdd']['miou']:.3f}. "
        f"Report and models in {run.out}/"
    )
    return results


def model_card(model, repo_or_path, results: dict, key: str, teacher_ref: str | None = None):
    """Card of the teacher (`key` "teacher") or a student ("alone", "kd", "rdd") of an RDD run; a distilled
    student's `base_model` is its teacher (`teacher_ref`, or the run's teacher when that is a Hub id)."""
    row = results["results"][key]
    what = {
        "teacher": "the UperNet teacher (trained with its auxiliary head, which RDD stage 1 compares with the main "
        "head)",
        "alone": "the student trained alone (its own loss, no teacher: the baseline)",
        "kd": "the student trained with cross-entropy + pixel KD from the teacher",
        "rdd": "the student trained with Relative Difficulty Distillation from the teacher",
    }[key]
    teacher_ref = teacher_ref or hub_id(results["teacher_source"]) or results["teacher_source"]
    distilled = key in ("kd", "rdd")
    return run_model_card(
        model,
        repo_or_path,
        method="RDD",
        title=f"RDD {row['name']} ({results['dataset']})",
        description=f"A `{type(model).__name__}` ({fmt_params(row['params'])} parameters): {what}, made by the "
        "hf-methods RDD recipe.",
        tags=["semantic-segmentation", *(["distillation", "knowledge-distillation"] if distilled else [])],
        ancestor=teacher_ref if distilled else None,
        training_setup=results["training_setup"],
        auto_class="AutoModelForSemanticSegmentation",
        pipeline_tag="image-segmentation",
        metrics={"test mIoU": row["miou"], "test pixel accuracy": row["pixel_accuracy"]},
    )


def _training_setup(recipe: RDDRecipe, teacher_source: str, total_steps: int, warmup: int) -> str:
    return (
        f"Data: {recipe.num_train_images} training / {recipe.num_test_images} test scenes of 1-{recipe.max_digits} "
        f"scikit-learn digits on {recipe.canvas_size}x{recipe.canvas_size} canvases (pixel class = digit + 1 above "
        f"intensity {recipe.pixel_threshold:g}, else background); test scenes use held-out digit images "
        f"({recipe.test_fraction:g} of them, seed {recipe.seed}). Teacher: {teacher_source}. Students: "
        f"{recipe.student_arch} (widths {recipe.student_widths}), same init, data order and budget "
        f"({recipe.student_epochs:g} epochs = {total_steps} steps, AdamW lr {recipe.student_learning_rate}, cosine, "
        f"batch {recipe.batch_size}). KD: lambda_logits {recipe.lambda_logits}, T {recipe.temperature}. "
        f"RDD: {warmup} stage-1 "
        f"steps (teacher aux/main disagreement weights), then XOR of OHEM masks (tau {recipe.ohem_thresh}, "
        f"min_kept {recipe.min_kept}); student aux weight {recipe.aux_weight}."
    )


def _markdown(results: dict) -> str:
    """report.md: mIoU table and per-class IoU."""
    rows = results["results"]
    order = ["teacher", *(key for key, _ in STUDENT_RUNS)]
    lines = [
        f"# RDD on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        "| model | parameters | test mIoU | pixel accuracy | training time |",
        "|---|---|---|---|---|",
    ]
    for key in order:
        r = rows[key]
        took = f"{r['train_time_s']:.0f} s" if "train_time_s" in r else "-"
        lines.append(
            f"| {r['name']} | {fmt_params(r['params'])} | {r['miou']:.3f} | {r['pixel_accuracy']:.3f} | {took} |"
        )
    lines += [
        "",
        "Per-class IoU (over all test pixels; mIoU is the mean over classes present in the test labels):",
        "",
        "| class | " + " | ".join(rows[k]["name"] for k in order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for name in CLASS_NAMES:
        cells = [rows[k]["per_class_iou"].get(name) for k in order]
        lines.append(f"| {name} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    lines += [
        "",
        "Models: `teacher/` (when trained here), `student-alone/`, `student-kd/`, `student-rdd/`; each loads "
        "with `AutoModelForSemanticSegmentation.from_pretrained`.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(RDDRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_rdd_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of an RDD run: a teacher the run trained to `<repo_id>-teacher` first, then the RDD student to
    `repo_id` and the KD and alone students to `<repo_id>-kd` and `<repo_id>-alone`, with cards re-rendered so the
    distilled students' `base_model` is the teacher's Hub id."""
    from hf_methods.hub import push_saved_model

    pushed = {}
    teacher_ref = hub_id(results["teacher_source"])
    if (out_dir / "teacher").is_dir() and not teacher_ref:
        teacher_ref = pushed["teacher"] = f"{repo_id}-teacher"
        model = AutoModelForSemanticSegmentation.from_pretrained(out_dir / "teacher", trust_remote_code=False)
        push_saved_model(
            out_dir / "teacher",
            teacher_ref,
            model_card(model, teacher_ref, results, "teacher"),
            commit_message="Upload the teacher",
            **hub_kwargs,
        )
    for key, target in (("rdd", repo_id), ("kd", f"{repo_id}-kd"), ("alone", f"{repo_id}-alone")):
        folder = out_dir / f"student-{key}"
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=False)
        push_saved_model(
            folder,
            target,
            model_card(model, target, results, key, teacher_ref=teacher_ref),
            commit_message=f"Upload the {results['results'][key]['name']}",
            **hub_kwargs,
        )
        pushed[f"student-{key}"] = target
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.rdd.pipeline"))
