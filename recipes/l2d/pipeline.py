"""The L2D main job: multi-digit images (2-4 scikit-learn digits pasted on one canvas, multi-hot labels) -> a
label-query ViT teacher -> a smaller label-query ViT student trained three ways (BCE alone, + softmax KD, + L2D)
-> mAP and micro-F1 of each, and the teacher's, in a report.

    hf-methods l2d                                   # the embedded default: ~2 min on 2 CPUs
    hf-methods l2d --student_epochs 20               # any recipe field can be overridden
    hf-methods l2d --push_to_hub true --hub_model_id org/l2d-digits   # the students and a trained teacher
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import transformers
from datasets import Array3D, Dataset, DatasetDict, Features, Sequence, Value
from transformers import ViTConfig

from hf_methods import __version__
from hf_methods.cards import hub_id, run_model_card
from hf_methods.cli import run_script
from hf_methods.data import DIGIT, digit_canvases
from hf_methods.models.label_query import LabelQueryConfig, LabelQueryForMultiLabelClassification
from hf_methods.pareto import fmt_params
from hf_methods.recipe import (
    RecipeArguments,
    Run,
    check_model_reference,
    num_parameters,
    parse_recipe,
    train,
    training_args,
)
from hf_methods.trainers.multilabel_kd_config import MultiLabelKDConfig
from hf_methods.trainers.multilabel_kd_trainer import MultiLabelKDTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "l2d" / "digits.yaml"
METHOD = "L2D"
NUM_CLASSES = 10
STUDENTS = (
    ("bce", "student, BCE only", {"distillation_type": "none"}),
    ("softmax_kd", "student + softmax KD", {"multilabel_kd_type": "softmax"}),
    ("l2d", "student + L2D", {"multilabel_kd_type": "l2d"}),
)


@dataclass
class L2DRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/l2d-digits", metadata={"help": "Where the models and the report go."})
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Repo of the L2D student (org/name); the other students go to <id>-bce and <id>-softmax-kd, a "
            "trained teacher to <id>-teacher."
        },
    )
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Path or Hub id of a trained LabelQueryForMultiLabelClassification teacher for this data; empty "
            "trains one."
        },
    )
    canvas_size: int = field(
        default=16,
        metadata={"help": "Side of the multi-digit images, a multiple of 8: (canvas_size/8)^2 slots of 8x8."},
    )
    min_digits: int = field(default=2, metadata={"help": "Fewest digits pasted on one image."})
    max_digits: int = field(
        default=4, metadata={"help": "Most digits pasted on one image (at most the number of slots)."}
    )
    num_train_images: int = field(default=2000, metadata={"help": "Multi-digit training images."})
    num_test_images: int = field(
        default=500, metadata={"help": "Multi-digit test images (made from held-out digit images only)."}
    )
    test_fraction: float = field(
        default=0.25, metadata={"help": "Share of the 1,797 source digit images kept for the test images."}
    )
    patch_size: int = field(default=4, metadata={"help": "ViT patch size of teacher and student."})
    teacher_hidden_size: int = field(default=64, metadata={"help": "Teacher ViT width."})
    teacher_num_layers: int = field(default=4, metadata={"help": "Teacher ViT depth."})
    teacher_num_attention_heads: int = field(default=4, metadata={"help": "Teacher ViT heads."})
    teacher_epochs: float = field(default=12, metadata={"help": "Epochs to train the teacher (BCE)."})
    teacher_learning_rate: float = field(default=2e-3, metadata={"help": "Teacher learning rate (AdamW)."})
    student_hidden_size: int = field(default=16, metadata={"help": "Student ViT width."})
    student_num_layers: int = field(default=2, metadata={"help": "Student ViT depth."})
    student_num_attention_heads: int = field(default=2, metadata={"help": "Student ViT heads."})
    student_epochs: float = field(
        default=16, metadata={"help": "Epochs of each student run (same budget for all three)."}
    )
    student_learning_rate: float = field(default=2e-3, metadata={"help": "Student learning rate (AdamW)."})
    decoder_dim: int = field(
        default=64,
        metadata={
            "help": "Width d_model of the label-query decoders (teacher and student alike, as the official 768-d "
            "ML-Decoders)."
        },
    )
    student_decoder_dim: int | None = field(
        default=None,
        metadata={
            "help": "Student decoder width if different (L2D then learns a projection, not in the official code)."
        },
    )
    decoder_heads: int = field(default=4, metadata={"help": "Cross-attention heads of the decoders."})
    decoder_ffn: int = field(default=128, metadata={"help": "Feed-forward width of the decoders."})
    decoder_dropout: float = field(default=0.1, metadata={"help": "Decoder dropout (ML-Decoder: 0.1)."})
    lambda_logits: float = field(
        default=10.0, metadata={"help": "Weight of the logit KD term, MLD or softmax KD (official L2D: 10)."}
    )
    lambda_le: float = field(
        default=0.1,
        metadata={
            "help": "Weight of the label-wise embedding terms (official: 1, tuned for COCO's 80 classes; see "
            "digits.yaml)."
        },
    )
    lambda_cd: float = field(default=100.0, metadata={"help": "Class-aware embedding term weight (official: 100)."})
    lambda_id: float = field(
        default=1000.0, metadata={"help": "Instance-aware embedding term weight (official: 1000)."}
    )
    bce_reduction: str = field(default="sum", metadata={"help": "'sum' (official) or 'mean' BCE, for every run."})
    temperature: float = field(
        default=1.0, metadata={"help": "Softmax temperature of the softmax-KD baseline (L2D's MLD has none)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_model_reference("teacher", self.teacher)
        if self.canvas_size < 2 * DIGIT or self.canvas_size % DIGIT:
            raise ValueError(
                f"canvas_size must be a multiple of {DIGIT} and at least {2 * DIGIT}, got {self.canvas_size}."
            )
        slots = (self.canvas_size // DIGIT) ** 2
        if not 1 <= self.min_digits <= self.max_digits <= slots:
            raise ValueError(
                f"need 1 <= min_digits <= max_digits <= {slots} (slots of a {self.canvas_size}x"
                f"{self.canvas_size} canvas), got min_digits={self.min_digits}, "
                f"max_digits={self.max_digits}."
            )
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}.")
        if self.num_train_images < 1 or self.num_test_images < 1:
            raise ValueError("num_train_images and num_test_images must be positive.")
        if self.bce_reduction not in ("sum", "mean"):
            raise ValueError(f"bce_reduction must be 'sum' or 'mean', got {self.bce_reduction!r}.")


def multi_digit_images(
    canvas_size: int = 16,
    num_train: int = 2000,
    num_test: int = 500,
    min_digits: int = 2,
    max_digits: int = 4,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> DatasetDict:
    """Train/test multi-label images: `min_digits`..`max_digits` scikit-learn digits pasted into distinct 8x8 slots
    of a blank canvas (`hf_methods.data.digit_canvases`, grid layout), `labels` multi-hot over the 10 digits (a digit
    drawn twice is one label), `digit_sources` the `load_digits` indices pasted (-1 padded; the Trainer drops this
    column). No test image contains a digit image seen in training. Deterministic from `seed`."""
    canvases = digit_canvases(
        num_train, num_test, canvas_size, min_digits, max_digits, layout="grid", test_fraction=test_fraction, seed=seed
    )
    features = Features(
        {
            "pixel_values": Array3D(shape=(1, canvas_size, canvas_size), dtype="float32"),
            "labels": Sequence(Value("float32"), length=NUM_CLASSES),
            "digit_sources": Sequence(Value("int32"), length=max_digits),
        }
    )
    splits = {}
    for name, split in canvases.items():
        labels = np.zeros((len(split["classes"]), NUM_CLASSES), dtype=np.float32)
        rows, slots = np.nonzero(split["classes"] >= 0)
        labels[rows, split["classes"][rows, slots]] = 1.0
        columns = {"pixel_values": split["pixel_values"], "labels": labels, "digit_sources": split["sources"]}
        splits[name] = Dataset.from_dict(columns, features=features).with_format("torch")
    return DatasetDict(splits)


def label_query_vit(recipe: L2DRecipe, hidden: int, layers: int, heads: int, decoder_dim: int):
    """A label-query classifier on a fresh ViT backbone, one fixed query per digit (official ML-Decoder)."""
    vit = ViTConfig(
        image_size=recipe.canvas_size,
        patch_size=recipe.patch_size,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
    )
    config = LabelQueryConfig(
        backbone_config=vit.to_dict(),
        num_labels=NUM_CLASSES,
        id2label={i: str(i) for i in range(NUM_CLASSES)},
        label2id={str(i): i for i in range(NUM_CLASSES)},
        d_model=decoder_dim,
        num_attention_heads=recipe.decoder_heads,
        dim_feedforward=recipe.decoder_ffn,
        decoder_dropout=recipe.decoder_dropout,
        learnable_queries=False,
    )
    return LabelQueryForMultiLabelClassification(config)


@torch.no_grad()
def predict(model, dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(sigmoid scores, multi-hot labels) of `dataset`, as numpy arrays."""
    model.eval()
    scores, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        logits = model(pixel_values=batch["pixel_values"].to(model.device)).logits
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(batch["labels"].numpy())
    return np.concatenate(scores), np.concatenate(labels)


def multilabel_scores(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """mAP (macro average precision over the classes that occur) and micro-F1 at `threshold`."""
    from sklearn.metrics import average_precision_score, f1_score

    present = labels.sum(0) > 0
    mean_ap = average_precision_score(labels[:, present], scores[:, present], average="macro")
    micro_f1 = f1_score(labels.astype(int), (scores >= threshold).astype(int), average="micro", zero_division=0)
    return {"mAP": float(mean_ap), "micro_f1": float(micro_f1)}


def _train_args(recipe: L2DRecipe, work: Path, epochs: float, lr: float, **overrides) -> MultiLabelKDConfig:
    base = {
        "lambda_logits": recipe.lambda_logits,
        "lambda_le": recipe.lambda_le,
        "lambda_cd": recipe.lambda_cd,
        "lambda_id": recipe.lambda_id,
        "bce_reduction": recipe.bce_reduction,
        "eval_strategy": "no",
    }
    return training_args(
        recipe, work, learning_rate=lr, num_train_epochs=epochs, cls=MultiLabelKDConfig, **{**base, **overrides}
    )


def _train_teacher(recipe: L2DRecipe, run: Run, data):
    """The BCE-trained teacher (the official teacher is trained with BCE alone), saved to out/teacher."""
    transformers.set_seed(recipe.seed)
    teacher = label_query_vit(
        recipe,
        recipe.teacher_hidden_size,
        recipe.teacher_num_layers,
        recipe.teacher_num_attention_heads,
        recipe.decoder_dim,
    )
    args = _train_args(
        recipe,
        run.trainer_dir("teacher"),
        recipe.teacher_epochs,
        recipe.teacher_learning_rate,
        distillation_type="none",
    )
    trainer = MultiLabelKDTrainer(model=teacher, args=args, train_dataset=data["train"])
    train(trainer)
    trainer.save_model(str(run.out / "teacher"))
    run.save_stage("teacher", {})  # the model is out/teacher
    return teacher


def run(recipe: L2DRecipe) -> dict:
    run = Run(recipe, stages=2 + len(STUDENTS) + 1)

    # 1. the data
    run.stage(
        f"making {recipe.num_train_images} + {recipe.num_test_images} multi-digit images "
        f"({recipe.canvas_size}x{recipe.canvas_size}, {recipe.min_digits}-{recipe.max_digits} digits each)"
    )
    data = multi_digit_images(
        recipe.canvas_size,
        recipe.num_train_images,
        recipe.num_test_images,
        recipe.min_digits,
        recipe.max_digits,
        recipe.test_fraction,
        recipe.seed,
    )

    # 2. the teacher: loaded, or trained on BCE (the official teacher is trained with BCE alone)
    if recipe.teacher:
        run.stage(f"loading teacher {recipe.teacher}")
        teacher = LabelQueryForMultiLabelClassification.from_pretrained(recipe.teacher)
        teacher_source = recipe.teacher
    else:
        teacher_source = "a label-query ViT trained by this recipe"
        text = (
            f"training a {recipe.teacher_num_layers}-layer label-query ViT teacher (width {recipe.teacher_hidden_size})"
        )
        if run.resume_stage(text, "teacher") is None:
            teacher = _train_teacher(recipe, run, data)
        else:  # an earlier attempt of this run trained it
            teacher = LabelQueryForMultiLabelClassification.from_pretrained(
                run.out / "teacher", trust_remote_code=False
            )
    teacher_scores = multilabel_scores(*predict(teacher, data["test"]))

    # 3-5. the same student (same init, same data order and budget) trained three ways
    rows, students = [], {}
    for name, title, overrides in STUDENTS:
        folder = run.out / "students" / name
        done = run.resume_stage(
            f"training the {title} (student: ViT width {recipe.student_hidden_size}, "
            f"{recipe.student_num_layers} layers), {recipe.student_epochs:g} epochs",
            f"student-{name}",
        )
        if done is not None:  # an earlier attempt of this run trained and scored it
            students[name] = LabelQueryForMultiLabelClassification.from_pretrained(folder, trust_remote_code=False)
            rows.append(done)
            continue
        transformers.set_seed(recipe.seed)
        student = label_query_vit(
            recipe,
            recipe.student_hidden_size,
            recipe.student_num_layers,
            recipe.student_num_attention_heads,
            recipe.student_decoder_dim or recipe.decoder_dim,
        )
        if name == "softmax_kd":
            overrides = {**overrides, "temperature": recipe.temperature}
        work = run.trainer_dir(f"student-{name}")
        args = _train_args(recipe, work, recipe.student_epochs, recipe.student_learning_rate, **overrides)
        kd = {} if overrides.get("distillation_type") == "none" else {"teacher_model": teacher}
        trainer = MultiLabelKDTrainer(model=student, args=args, train_dataset=data["train"], **kd)
        train(trainer)
        trainer.save_model(str(folder))  # an L2D projection, if any, is saved beside the student
        students[name] = student
        rows.append(
            {
                "name": name,
                "title": title,
                "params": num_parameters(student),
                **multilabel_scores(*predict(student, data["test"])),
                "train_loss": trainer.state.log_history[-1].get("train_loss"),
            }
        )
        run.save_stage(f"student-{name}", rows[-1])
    run.wait_for_everyone()

    results = {
        "method": METHOD,
        "dataset": f"multi-digit images from scikit-learn digits ({recipe.canvas_size}x{recipe.canvas_size}, "
        f"{recipe.min_digits}-{recipe.max_digits} digits)",
        "training_setup": _training_setup(recipe, teacher_source),
        "recipe": dataclasses.asdict(recipe),
        "label_cardinality": {split: float(data[split][:]["labels"].sum(1).mean()) for split in ("train", "test")},
        "teacher": {
            "source": teacher_source,
            "hub_id": hub_id(recipe.teacher),
            "params": num_parameters(teacher),
            **teacher_scores,
        },
        "students": rows,
        "hf_methods_version": __version__,
    }
    results["elapsed_s"] = run.elapsed()
    if not run.is_main_process:
        return results

    # 6. the cards and the report
    run.stage("writing the report")
    if not recipe.teacher:
        run.save_card("teacher", teacher_card(teacher, run.out / "teacher", results))
    for row in rows:
        folder = run.out / "students" / row["name"]
        run.save_card(f"students/{row['name']}", student_card(students[row["name"]], folder, results, row["name"]))
    run.write_report(results, markdown=_markdown(results))
    by = {r["name"]: r for r in rows}
    run.finish(
        f"L2D done in {results['elapsed_s']:.0f}s: student mAP {by['bce']['mAP']:.3f} with BCE alone, "
        f"{by['softmax_kd']['mAP']:.3f} with softmax KD, {by['l2d']['mAP']:.3f} with L2D (micro-F1 "
        f"{by['bce']['micro_f1']:.3f} / {by['softmax_kd']['micro_f1']:.3f} / {by['l2d']['micro_f1']:.3f}); teacher "
        f"mAP {teacher_scores['mAP']:.3f}. Report and models in {run.out}/"
    )
    return results


def teacher_card(model, repo_or_path, results: dict):
    """Card of the label-query teacher the recipe trained (BCE alone)."""
    teacher = results["teacher"]
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"L2D teacher: label-query ViT ({results['dataset']})",
        description=f"A `{type(model).__name__}` ({fmt_params(teacher['params'])} parameters: a ViT backbone and one "
        "query per label) trained with BCE alone by the hf-methods L2D recipe, as the teacher its "
        "students are distilled from.",
        tags=["multi-label"],
        training_setup=results["training_setup"],
        pipeline_tag="image-classification",
        metrics={"test mAP": teacher["mAP"], "test micro-F1": teacher["micro_f1"]},
    )


def student_card(model, repo_or_path, results: dict, name: str):
    """Card of one of the students (`name`: bce, softmax_kd or l2d), its teacher as `base_model` when on the Hub."""
    row = next(r for r in results["students"] if r["name"] == name)
    teacher = results["teacher"]
    how = {
        "bce": "with BCE alone (the baseline: no teacher)",
        "softmax_kd": "with BCE + softmax KD from the teacher",
        "l2d": "with BCE + L2D (per-label Bernoulli KL and label-wise embedding distillation) from the teacher",
    }
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"L2D {row['title']} ({results['dataset']})",
        description=f"A `{type(model).__name__}` ({fmt_params(row['params'])} parameters) trained {how[name]} by the "
        "hf-methods L2D recipe; the three students share their initialization, data order and budget.",
        tags=["multi-label", *(["distillation", "knowledge-distillation"] if name != "bce" else [])],
        ancestor=None if name == "bce" else (teacher.get("hub_id") or teacher["source"]),
        training_setup=results["training_setup"],
        pipeline_tag="image-classification",
        metrics={"test mAP": row["mAP"], "test micro-F1": row["micro_f1"]},
    )


def _training_setup(recipe: L2DRecipe, teacher_source: str) -> str:
    student_d = recipe.student_decoder_dim or recipe.decoder_dim
    return (
        f"Data: {recipe.num_train_images} training and {recipe.num_test_images} test images of "
        f"{recipe.canvas_size}x{recipe.canvas_size}, each with {recipe.min_digits}-{recipe.max_digits} scikit-learn "
        f"digits in distinct 8x8 slots; the 1,797 source digit images are split {1 - recipe.test_fraction:.0%}/"
        f"{recipe.test_fraction:.0%} (stratified, seed {recipe.seed}) before composing, so test images only hold "
        f"unseen digit images. Teacher: {teacher_source} (ViT width {recipe.teacher_hidden_size}, "
        f"{recipe.teacher_num_layers} layers, label-query decoder d_model {recipe.decoder_dim}, BCE, "
        f"{recipe.teacher_epochs:g} epochs, AdamW lr {recipe.teacher_learning_rate}). Student: ViT width "
        f"{recipe.student_hidden_size}, {recipe.student_num_layers} layers, decoder d_model {student_d}; every run "
        f"starts from the same initialization, {recipe.student_epochs:g} epochs, AdamW lr "
        f"{recipe.student_learning_rate}, batch {recipe.batch_size}, cosine with 10% warmup. Losses (BCE "
        f"{recipe.bce_reduction} over images and classes): BCE alone; BCE + {recipe.lambda_logits:g} x softmax KD "
        f"(T {recipe.temperature:g}, KL summed over classes / N); L2D = BCE + {recipe.lambda_logits:g} x MLD + "
        f"{recipe.lambda_le:g} x ({recipe.lambda_cd:g} x CD + {recipe.lambda_id:g} x ID)."
    )


def _markdown(results: dict) -> str:
    teacher = results["teacher"]
    lines = [
        f"# L2D multi-label distillation on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"Average labels per image: {results['label_cardinality']['train']:.2f} (train), "
        f"{results['label_cardinality']['test']:.2f} (test).",
        "",
        "| model | parameters | mAP | micro-F1 (threshold 0.5) |",
        "|---|---|---|---|",
        f"| teacher | {fmt_params(teacher['params'])} | {teacher['mAP']:.3f} | {teacher['micro_f1']:.3f} |",
    ]
    for r in results["students"]:
        lines.append(f"| {r['title']} | {fmt_params(r['params'])} | {r['mAP']:.3f} | {r['micro_f1']:.3f} |")
    recipe = results["recipe"]
    if recipe["lambda_le"] != 1.0:
        lines += [
            "",
            f"L2D's embedding terms are weighted lambda_le = {recipe['lambda_le']:g} instead of the official "
            "1.0, which is tuned for COCO's 80 classes: on 10 classes it would weigh them several times more, "
            "relative to the summed BCE, than in the paper (see digits.yaml).",
        ]
    lines += [
        "",
        "mAP: average precision per class on the test images, averaged over the classes. One seed: differences of "
        "a point or so are within run-to-run noise; rerun with other `--seed` values before concluding.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(L2DRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_l2d_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of an L2D run: the L2D student to `repo_id`, the BCE and softmax-KD students to `<repo_id>-bce`
    and `<repo_id>-softmax-kd`, each folder as saved (an L2D projection beside a student goes with it) with its card
    re-rendered for the Hub; a teacher the run trained went to `<repo_id>-teacher` first (`push_run`)."""
    from hf_methods.hub import push_saved_model

    targets = {"l2d": repo_id, "bce": f"{repo_id}-bce", "softmax_kd": f"{repo_id}-softmax-kd"}
    pushed = {}
    for name, target in targets.items():
        folder = out_dir / "students" / name
        model = LabelQueryForMultiLabelClassification.from_pretrained(folder)
        push_saved_model(
            folder,
            target,
            student_card(model, target, results, name),
            commit_message=f"Upload the L2D {name} student",
            **hub_kwargs,
        )
        pushed[f"students/{name}"] = target
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.l2d.pipeline"))
