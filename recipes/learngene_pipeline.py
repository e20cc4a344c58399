"""The learngene main job (TLEG or SWS): teacher -> learngene (distilled auxiliary network) -> descendants of
several depths, each fine-tuned against a scratch model of the same size and budget -> report, cards, models.

    hf-methods tleg                                   # the embedded default: digits, no network, ~3 min on 2 CPUs
    hf-methods sws --depths 4 8                       # any recipe field can be overridden
    accelerate launch -m hf_methods.recipes.sws.pipeline --config my.yaml
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import ViTForImageClassification

from hf_methods import SWSConfig, SWSModel, TLEGConfig, TLEGModel, __version__
from hf_methods.cards import descendant_card, hub_id, learngene_card
from hf_methods.data import digits
from hf_methods.engine import count_flops, select_teacher_layers
from hf_methods.hub import push_model
from hf_methods.recipe import (
    Run,
    TeacherRecipe,
    accuracy_curve,
    get_teacher,
    num_parameters,
    parse_recipe,
    train_and_evaluate,
    training_args,
)
from hf_methods.report import BASELINE_LABELS, fmt_params, learngene_figure, learngene_markdown, steps_to_reach
from hf_methods.trainers import DistillationConfig, DistillationTrainer

METHODS = {"tleg": ("TLEG", TLEGConfig, TLEGModel), "sws": ("SWS", SWSConfig, SWSModel)}
# the practitioner's baselines: a stock model initialized from some of the teacher's layers (`select_teacher_layers`),
# fine-tuned ('first', 'even') or distilled from the teacher with labels ('kd': the 'even' student)
BASELINES = {
    "first": "first-k teacher layers",
    "even": "evenly spaced teacher layers",
    "kd": "evenly spaced teacher layers distilled from the teacher (KD)",
}


@dataclass
class LearngeneRecipe(TeacherRecipe):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `TeacherRecipe`)."""

    method: str = field(default="tleg", metadata={"help": "The learngene method: 'tleg' or 'sws'."})
    output_dir: str = field(default="outputs/tleg-digits", metadata={"help": "Where models, cards and the report go."})
    aux_num_layers: int | None = field(
        default=12, metadata={"help": "Depth L of the auxiliary network (TLEG; SWS derives it from stage_sizes)."}
    )
    stage_sizes: list[int] = field(
        default_factory=lambda: [3, 3, 4, 3, 3],
        metadata={"help": "SWS: layers per stage of the auxiliary network (paper: 3 3 4 3 3)."},
    )
    distill_epochs: float = field(default=10, metadata={"help": "Epochs to distill the auxiliary network."})
    distill_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the distillation."})
    alpha: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the distillation part in [0, 1]: (1 - alpha) * CE + alpha * KD (TLEG's README: 1.0, "
            "KD only)."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "KD temperature (TLEG: 1.0)."})
    kd_normalization: str = field(default="numel", metadata={"help": "'numel' (DeiT/TLEG) or 'batchmean'."})
    depths: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 12], metadata={"help": "Descendant depths."})
    finetune_epochs: float = field(
        default=3, metadata={"help": "Fine-tuning epochs, for learngene-initialized and scratch models alike."}
    )
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning learning rate."})
    baselines: list[str] = field(
        default_factory=lambda: ["first", "even", "kd"],
        metadata={
            "help": "Baselines trained with the same budget at every depth <= the teacher's: 'first' (the teacher's "
            "first D layers), 'even' (D evenly spaced teacher layers), 'kd' (the 'even' model trained with "
            "DistillationTrainer from the teacher, soft + hard labels); an empty list disables them."
        },
    )
    kd_baseline_alpha: float = field(
        default=0.5,
        metadata={"help": "The 'kd' baseline's alpha in (1 - alpha) * CE + alpha * KD (temperature: `temperature`)."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the learngene and every descendant at the end."})
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Repo of the learngene (org/name); descendants go to <id>-depth-<D>, a trained teacher to "
            "<id>-teacher."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}.")
        if self.method == "sws":
            self.aux_num_layers = sum(self.stage_sizes)
        if not self.depths or any(d < 1 for d in self.depths):
            raise ValueError(f"depths must be positive integers, got {self.depths}.")
        if self.kd_normalization not in ("numel", "batchmean"):
            raise ValueError(f"kd_normalization must be 'numel' or 'batchmean', got {self.kd_normalization!r}.")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown or len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines must list distinct names from {sorted(BASELINES)}, got {self.baselines}.")
        if not 0 <= self.kd_baseline_alpha <= 1:
            raise ValueError(f"kd_baseline_alpha must be in [0, 1], got {self.kd_baseline_alpha}.")


def run(recipe: LearngeneRecipe) -> dict:
    # under `accelerate launch`: every process trains
    run = Run(recipe, stages=_num_stages(recipe, recipe.teacher_num_layers))
    data = digits(recipe.image_size, seed=recipe.seed, max_train_samples=recipe.max_train_samples)

    # 1. the teacher
    teacher, teacher_source, teacher_acc = get_teacher(run, data)
    teacher_depth = teacher.config.num_hidden_layers
    run.stages = _num_stages(recipe, teacher_depth)  # a loaded teacher may have another depth than the recipe's

    # 2. the learngene: distill the auxiliary network
    method, config_cls, model_cls = METHODS[recipe.method]
    run.stage(f"distilling the {method} auxiliary network ({recipe.aux_num_layers} layers)")
    if recipe.method == "sws":
        gene_config = config_cls.from_base(teacher, stage_sizes=recipe.stage_sizes)
    else:
        gene_config = config_cls.from_base(teacher, aux_num_layers=recipe.aux_num_layers)
    learngene = model_cls(gene_config)
    distill_args = training_args(
        recipe,
        run.work,
        learning_rate=recipe.distill_learning_rate,
        num_train_epochs=recipe.distill_epochs,
        cls=DistillationConfig,
        distillation_type="soft",
        alpha=recipe.alpha,
        temperature=recipe.temperature,
        kd_normalization=recipe.kd_normalization,
    )
    trainer, _ = train_and_evaluate(
        learngene, distill_args, data, trainer_cls=DistillationTrainer, teacher_model=teacher
    )
    aux_acc = accuracy_curve(trainer, 0.0)[-1]["accuracy"]

    # 3-4. expand to each depth and fine-tune, against scratch with the same budget
    sample = {"pixel_values": torch.tensor(data["test"][:1]["pixel_values"])}
    kd_args = training_args(
        recipe,
        run.work,
        learning_rate=recipe.finetune_learning_rate,
        num_train_epochs=recipe.finetune_epochs,
        cls=DistillationConfig,
        distillation_type="soft",
        alpha=recipe.kd_baseline_alpha,
        temperature=recipe.temperature,
        kd_normalization=recipe.kd_normalization,
    )
    rows = []
    for depth in recipe.depths:
        run.stage(f"depth {depth}: fine-tuning the learngene-initialized model")
        transformers.set_seed(recipe.seed)
        model = learngene.expand(depth)
        expansion = model.expansion_report.summary()
        ft_args = training_args(
            recipe, run.work, learning_rate=recipe.finetune_learning_rate, num_train_epochs=recipe.finetune_epochs
        )
        trainer, initial = train_and_evaluate(model, ft_args, data)
        lg_curve = accuracy_curve(trainer, initial)
        run.stage(f"depth {depth}: training a scratch model with the same budget")
        transformers.set_seed(recipe.seed)
        scratch = ViTForImageClassification(learngene.config.stock_config(depth))
        trainer, initial = train_and_evaluate(scratch, ft_args, data)
        sc_curve = accuracy_curve(trainer, initial)
        baselines = {}
        for strategy in recipe.baselines if depth <= teacher_depth else []:
            # after learngene and scratch, re-seeded like them: their figures do not depend on the baselines
            run.stage(f"depth {depth}: training the {BASELINES[strategy]} baseline")
            transformers.set_seed(recipe.seed)
            if strategy == "kd":  # the 'even' student, distilled for as many steps as the others are fine-tuned
                selected = select_teacher_layers(teacher, depth, strategy="even")
                trainer, initial = train_and_evaluate(
                    selected, kd_args, data, trainer_cls=DistillationTrainer, teacher_model=teacher
                )
            else:
                selected = select_teacher_layers(teacher, depth, strategy=strategy)
                trainer, initial = train_and_evaluate(selected, ft_args, data)
            curve = accuracy_curve(trainer, initial)
            baselines[strategy] = {
                "curve": curve,
                "final_accuracy": curve[-1]["accuracy"],
                "teacher_layers": selected.config.layer_selection["layers"],
                "params": num_parameters(selected),
            }
        rows.append(
            {
                "depth": depth,
                "params": num_parameters(model),
                "flops": count_flops(model, {k: v.to(model.device) for k, v in sample.items()}),
                "expansion": expansion,
                "layers_source": model.config.learngene_ancestry.get("layers_source"),
                "learngene": {"curve": lg_curve, "final_accuracy": lg_curve[-1]["accuracy"]},
                "scratch": {"curve": sc_curve, "final_accuracy": sc_curve[-1]["accuracy"]},
                "steps_to_reach_scratch": steps_to_reach(lg_curve, sc_curve[-1]["accuracy"]),
                **baselines,
                "baselines": list(baselines),
                "_model": model,
            }
        )

    # 5. the report
    total = sum(r["params"] for r in rows)
    gene_params = learngene.learngene_num_parameters()
    choices = []
    for r in rows:
        common = {"name": f"depth {r['depth']}", "params": r["params"], "flops": r["flops"]}
        choices.append(
            {
                "method": method,
                **common,
                "accuracy": r["learngene"]["final_accuracy"],
                "stored_params": gene_params,
                "path": f"descendants/depth-{r['depth']}",
            }
        )
        choices.append(
            {"method": "scratch", **common, "accuracy": r["scratch"]["final_accuracy"], "stored_params": r["params"]}
        )
        for strategy in r["baselines"]:  # nothing smaller than the selected model itself is stored
            choices.append(
                {
                    "method": BASELINE_LABELS[strategy],
                    **common,
                    "params": r[strategy]["params"],
                    "accuracy": r[strategy]["final_accuracy"],
                    "stored_params": r[strategy]["params"],
                }
            )
    results = {
        "method": method,
        "dataset": f"scikit-learn digits ({recipe.image_size}x{recipe.image_size})",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe, teacher_source),
        "recipe": dataclasses.asdict(recipe),
        "teacher": {
            "source": teacher_source,
            "hub_id": hub_id(recipe.teacher),
            "params": num_parameters(teacher),
            "num_layers": teacher.config.num_hidden_layers,
            "accuracy": teacher_acc,
        },
        "learngene": {
            "params": learngene.learngene_num_parameters(),
            "layer_params": learngene.layer_num_parameters(),
            "aux_num_layers": recipe.aux_num_layers,
            "aux_accuracy": aux_acc,
        },
        "descendants_total_params": total,
        "stored_ratio": total / gene_params,
        "descendants": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "choices": choices,
        "hf_methods_version": __version__,
    }
    results["elapsed_s"] = run.elapsed()
    run.wait_for_everyone()
    if not run.is_main_process:
        return results
    run.write_report(results, markdown=learngene_markdown(results), figure=learngene_figure(results))

    # 6. save the learngene and the descendants with their cards
    run.save_model(learngene, "learngene", learngene_card(learngene, run.out / "learngene", results))
    for row in rows:
        folder = f"descendants/depth-{row['depth']}"
        run.save_model(row["_model"], folder, descendant_card(row["_model"], run.out / folder, results))
    best = max(rows, key=lambda r: r["learngene"]["final_accuracy"] - r["scratch"]["final_accuracy"])
    run.finish(
        f"{method} done in {results['elapsed_s']:.0f}s: learngene {fmt_params(results['learngene']['params'])} "
        f"({results['stored_ratio']:.1f}x fewer stored parameters than {len(rows)} descendants); "
        f"depth {best['depth']}: {best['learngene']['final_accuracy']:.3f} from the learngene vs "
        f"{best['scratch']['final_accuracy']:.3f} from scratch. Report, models and cards in {run.out}/"
    )
    return results


def _num_stages(recipe: LearngeneRecipe, teacher_depth: int) -> int:
    """Teacher, learngene, then per depth: learngene, scratch and each baseline (at depths <= the teacher's)."""
    shallow = sum(d <= teacher_depth for d in recipe.depths)
    return 2 + 2 * len(recipe.depths) + len(recipe.baselines) * shallow


def _training_setup(recipe: LearngeneRecipe, teacher_source: str) -> str:
    return (
        f"Data: scikit-learn digits upsampled to {recipe.image_size}x{recipe.image_size}, stratified 80/20 split "
        f"(seed {recipe.seed}). Teacher: {teacher_source}. Learngene: {METHODS[recipe.method][0]} auxiliary "
        f"network of {recipe.aux_num_layers} layers{_stages(recipe)} distilled for {recipe.distill_epochs:g} epochs "
        "(soft KD, alpha "
        f"{recipe.alpha}, T {recipe.temperature}, {recipe.kd_normalization} normalization, AdamW lr "
        f"{recipe.distill_learning_rate}, cosine). Descendants and scratch baselines: {recipe.finetune_epochs:g} "
        f"epochs, AdamW lr {recipe.finetune_learning_rate}, batch {recipe.batch_size}, cosine with 10% warmup."
        + _baselines_setup(recipe)
    )


def _baselines_setup(recipe: LearngeneRecipe) -> str:
    if not recipe.baselines:
        return ""
    names = "; ".join(f"'{b}': {BASELINES[b]}" for b in recipe.baselines)
    kd = (
        f" (soft + hard labels, alpha {recipe.kd_baseline_alpha}, T {recipe.temperature})"
        if "kd" in recipe.baselines
        else ""
    )
    return (
        f" Baselines at every depth up to the teacher's, a ViT initialized from the teacher's layers "
        f"(`select_teacher_layers`) and trained with the same budget: {names}{kd}."
    )


def _stages(recipe: LearngeneRecipe) -> str:
    return f" in stages {'-'.join(map(str, recipe.stage_sizes))}" if recipe.method == "sws" else ""


def main(argv=None, default_config=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(LearngeneRecipe, argv, default_config=default_config)
    return run(recipe)


def push_learngene_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a TLEG / SWS run: the learngene to `repo_id`, each descendant to `<repo_id>-depth-<D>`,
    with cards whose ancestry links point at those repos."""
    links = {row["depth"]: f"{repo_id}-depth-{row['depth']}" for row in results["descendants"]}
    learngene = transformers.AutoModel.from_pretrained(out_dir / "learngene")
    push_model(
        learngene,
        repo_id,
        learngene_card(learngene, repo_id, results, links),
        commit_message="Upload the learngene",
        **hub_kwargs,
    )
    pushed = {"learngene": repo_id}
    for depth, target in links.items():
        folder = out_dir / "descendants" / f"depth-{depth}"
        config = transformers.AutoConfig.from_pretrained(folder)
        model = getattr(transformers, config.architectures[0]).from_pretrained(folder)
        push_model(
            model,
            target,
            descendant_card(model, target, results, learngene_ref=repo_id),
            commit_message=f"Upload the depth-{depth} descendant",
            **hub_kwargs,
        )
        pushed[f"depth-{depth}"] = target
    return pushed
