"""The learngene main job (TLEG or SWS): teacher -> learngene (distilled auxiliary network) -> descendants of
several depths, each fine-tuned against a scratch model of the same size and budget -> report, cards, models.

    hf-methods tleg                                   # the embedded default: digits, no network, ~3 min on 2 CPUs
    hf-methods sws --depths 4 8                       # any recipe field can be overridden
    accelerate launch -m hf_methods.recipes.sws.pipeline --config my.yaml
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from accelerate import PartialState
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from hf_methods import SWSConfig, SWSModel, TLEGConfig, TLEGModel, __version__
from hf_methods.cards import descendant_card, hub_id, learngene_card
from hf_methods.data import accuracy, digits
from hf_methods.engine import count_flops
from hf_methods.hub import push_model, push_run, save_model_folder
from hf_methods.recipe import parse_recipe
from hf_methods.report import fmt_params, steps_to_reach, write_report
from hf_methods.trainers import DistillationConfig, DistillationTrainer

_CPU = not torch.cuda.is_available()
METHODS = {"tleg": ("TLEG", TLEGConfig, TLEGModel), "sws": ("SWS", SWSConfig, SWSModel)}


@dataclass
class TeacherRecipe:
    """The data, teacher and training fields every recipe that starts from a teacher shares."""

    teacher: str | None = field(default=None, metadata={"help": "Path or Hub id of a trained ViTForImageClassification teacher; empty trains one."})
    image_size: int = field(default=16, metadata={"help": "Digits are upsampled from 8x8 to this size."})
    patch_size: int = field(default=4, metadata={"help": "ViT patch size."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the teacher trained when `teacher` is empty (learngenes and descendants inherit it)."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of that teacher."})
    intermediate_size: int = field(default=128, metadata={"help": "MLP width of that teacher."})
    teacher_num_layers: int = field(default=12, metadata={"help": "Depth of the teacher trained when `teacher` is empty."})
    teacher_epochs: float = field(default=10, metadata={"help": "Epochs to train the teacher."})
    teacher_learning_rate: float = field(default=1e-3, metadata={"help": "Teacher learning rate (AdamW)."})
    batch_size: int = field(default=32, metadata={"help": "Per-device batch size of every stage."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap the training split (quick runs)."})
    seed: int = field(default=0, metadata={"help": "Seed of data split, initializations and training."})


@dataclass
class LearngeneRecipe(TeacherRecipe):
    """Every field can be set in the YAML recipe or overridden as `--field value`."""

    method: str = field(default="tleg", metadata={"help": "The learngene method: 'tleg' or 'sws'."})
    output_dir: str = field(default="outputs/tleg-digits", metadata={"help": "Where models, cards and the report go."})
    aux_num_layers: int | None = field(default=12, metadata={"help": "Depth L of the auxiliary network (TLEG; SWS derives it from stage_sizes)."})
    stage_sizes: list[int] = field(default_factory=lambda: [3, 3, 4, 3, 3], metadata={"help": "SWS: layers per stage of the auxiliary network (paper: 3 3 4 3 3)."})
    distill_epochs: float = field(default=10, metadata={"help": "Epochs to distill the auxiliary network."})
    distill_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the distillation."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the distillation part in [0, 1]: (1 - alpha) * CE + alpha * KD (TLEG's README: 1.0, KD only)."})
    temperature: float = field(default=1.0, metadata={"help": "KD temperature (TLEG: 1.0)."})
    kd_normalization: str = field(default="numel", metadata={"help": "'numel' (DeiT/TLEG) or 'batchmean'."})
    depths: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 12], metadata={"help": "Descendant depths."})
    finetune_epochs: float = field(default=3, metadata={"help": "Fine-tuning epochs, for learngene-initialized and scratch models alike."})
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning learning rate."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the learngene and every descendant at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo of the learngene (org/name); descendants go to <id>-depth-<D>, a trained teacher to <id>-teacher."})
    hub_private: bool | None = field(default=None, metadata={"help": "Create the repos private."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}.")
        if self.method == "sws":
            self.aux_num_layers = sum(self.stage_sizes)
        if not self.depths or any(d < 1 for d in self.depths):
            raise ValueError(f"depths must be positive integers, got {self.depths}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (org/name of the learngene repo).")
        if self.kd_normalization not in ("numel", "batchmean"):
            raise ValueError(f"kd_normalization must be 'numel' or 'batchmean', got {self.kd_normalization!r}.")


def _args(recipe, run_dir: Path, epochs: float, lr: float, cls=TrainingArguments, **overrides):
    """The recipes' training arguments; `overrides` replace any default."""
    kwargs = dict(
        output_dir=str(run_dir),
        num_train_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=256,
        weight_decay=0.05,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=recipe.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=_CPU,  # so that `accelerate launch --multi_gpu` on a CPU-only machine runs DDP over gloo
    )
    return cls(**{**kwargs, **overrides})


def _curve(trainer: Trainer, initial: float) -> list[dict]:
    points = [{"epoch": 0, "step": 0, "accuracy": initial}]
    for entry in trainer.state.log_history:
        if "eval_accuracy" in entry:
            points.append({"epoch": round(entry["epoch"]), "step": entry["step"], "accuracy": entry["eval_accuracy"]})
    return points


def _train(model, args, data, trainer_cls=Trainer, **kw) -> tuple[Trainer, float]:
    trainer = trainer_cls(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
                          compute_metrics=accuracy, **kw)
    initial = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    return trainer, initial


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def get_teacher(recipe, data, work: Path, out: Path, state: PartialState, say) -> tuple:
    """(teacher, where it came from, its test accuracy): `recipe.teacher` loaded, or a ViT trained here (and saved
    to `out/teacher`). Shared by every recipe that starts from a teacher."""
    if recipe.teacher:
        say(f"loading teacher {recipe.teacher}")
        teacher = ViTForImageClassification.from_pretrained(recipe.teacher)
        acc = Trainer(model=teacher, args=_args(recipe, work, 1, 1e-3), eval_dataset=data["test"],
                      compute_metrics=accuracy).evaluate()["eval_accuracy"]
        return teacher, recipe.teacher, acc
    say(f"training a {recipe.teacher_num_layers}-layer ViT teacher")
    config = ViTConfig(
        image_size=recipe.image_size, patch_size=recipe.patch_size, num_channels=1,
        hidden_size=recipe.hidden_size, num_hidden_layers=recipe.teacher_num_layers,
        num_attention_heads=recipe.num_attention_heads, intermediate_size=recipe.intermediate_size,
        num_labels=10, id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )
    teacher = ViTForImageClassification(config)
    trainer, _ = _train(teacher, _args(recipe, work, recipe.teacher_epochs, recipe.teacher_learning_rate), data)
    if state.is_main_process:
        save_model_folder(teacher, out / "teacher")
    return teacher, "a ViT trained by this recipe", _curve(trainer, 0.0)[-1]["accuracy"]


def run(recipe: LearngeneRecipe) -> dict:
    start = time.time()
    transformers.set_seed(recipe.seed)
    transformers.logging.set_verbosity_warning()
    out = Path(recipe.output_dir)
    work = out / "_trainer"
    data = digits(recipe.image_size, seed=recipe.seed, max_train_samples=recipe.max_train_samples)
    stages = 2 + 2 * len(recipe.depths)
    stage = iter(range(1, stages + 1))

    state = PartialState(cpu=_CPU)  # under `accelerate launch`, every process trains; only the main one writes

    def say(text):
        number = next(stage)
        if state.is_main_process:
            print(f"[{number}/{stages}] {text}", flush=True)

    # 1. the teacher
    teacher, teacher_source, teacher_acc = get_teacher(recipe, data, work, out, state, say)

    # 2. the learngene: distill the auxiliary network
    method, config_cls, model_cls = METHODS[recipe.method]
    say(f"distilling the {method} auxiliary network ({recipe.aux_num_layers} layers)")
    if recipe.method == "sws":
        gene_config = config_cls.from_base(teacher, stage_sizes=recipe.stage_sizes)
    else:
        gene_config = config_cls.from_base(teacher, aux_num_layers=recipe.aux_num_layers)
    learngene = model_cls(gene_config)
    distill_args = _args(
        recipe, work, recipe.distill_epochs, recipe.distill_learning_rate, cls=DistillationConfig,
        distillation_type="soft", alpha=recipe.alpha, temperature=recipe.temperature,
        kd_normalization=recipe.kd_normalization,
    )
    trainer, _ = _train(learngene, distill_args, data, trainer_cls=DistillationTrainer, teacher_model=teacher)
    aux_acc = _curve(trainer, 0.0)[-1]["accuracy"]

    # 3-4. expand to each depth and fine-tune, against scratch with the same budget
    sample = {"pixel_values": torch.tensor(data["test"][:1]["pixel_values"])}
    rows = []
    for depth in recipe.depths:
        say(f"depth {depth}: fine-tuning the learngene-initialized model")
        transformers.set_seed(recipe.seed)
        model = learngene.expand(depth)
        expansion = model.expansion_report.summary()
        ft_args = _args(recipe, work, recipe.finetune_epochs, recipe.finetune_learning_rate)
        trainer, initial = _train(model, ft_args, data)
        lg_curve = _curve(trainer, initial)
        say(f"depth {depth}: training a scratch model with the same budget")
        transformers.set_seed(recipe.seed)
        scratch = ViTForImageClassification(learngene.config.stock_config(depth))
        trainer, initial = _train(scratch, ft_args, data)
        sc_curve = _curve(trainer, initial)
        rows.append({
            "depth": depth,
            "params": _num_params(model),
            "flops": count_flops(model, {k: v.to(model.device) for k, v in sample.items()}),
            "expansion": expansion,
            "layers_source": model.config.learngene_ancestry.get("layers_source"),
            "learngene": {"curve": lg_curve, "final_accuracy": lg_curve[-1]["accuracy"]},
            "scratch": {"curve": sc_curve, "final_accuracy": sc_curve[-1]["accuracy"]},
            "steps_to_reach_scratch": steps_to_reach(lg_curve, sc_curve[-1]["accuracy"]),
            "_model": model,
        })

    # 5. the report
    total = sum(r["params"] for r in rows)
    gene_params = learngene.learngene_num_parameters()
    choices = []
    for r in rows:
        common = {"name": f"depth {r['depth']}", "params": r["params"], "flops": r["flops"]}
        choices.append({"method": method, **common, "accuracy": r["learngene"]["final_accuracy"],
                        "stored_params": gene_params, "path": f"descendants/depth-{r['depth']}"})
        choices.append({"method": "scratch", **common, "accuracy": r["scratch"]["final_accuracy"],
                        "stored_params": r["params"]})
    results = {
        "method": method,
        "dataset": f"scikit-learn digits ({recipe.image_size}x{recipe.image_size})",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe, teacher_source),
        "recipe": dataclasses.asdict(recipe),
        "teacher": {"source": teacher_source, "hub_id": hub_id(recipe.teacher), "params": _num_params(teacher),
                    "num_layers": teacher.config.num_hidden_layers, "accuracy": teacher_acc},
        "learngene": {"params": learngene.learngene_num_parameters(), "layer_params": learngene.layer_num_parameters(),
                      "aux_num_layers": recipe.aux_num_layers, "aux_accuracy": aux_acc},
        "descendants_total_params": total,
        "stored_ratio": total / gene_params,
        "descendants": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "choices": choices,
        "hf_methods_version": __version__,
    }
    results["elapsed_s"] = time.time() - start
    state.wait_for_everyone()
    if not state.is_main_process:
        return results
    write_report(results, out)

    # 6. save the learngene and the descendants with their cards
    save_model_folder(learngene, out / "learngene", learngene_card(learngene, out / "learngene", results))
    for row in rows:
        path = out / "descendants" / f"depth-{row['depth']}"
        save_model_folder(row["_model"], path, descendant_card(row["_model"], path, results))
    shutil.rmtree(work, ignore_errors=True)
    if recipe.push_to_hub:
        push_run(out, recipe.hub_model_id, private=recipe.hub_private)
    best = max(rows, key=lambda r: r["learngene"]["final_accuracy"] - r["scratch"]["final_accuracy"])
    print(
        f"{method} done in {results['elapsed_s']:.0f}s: learngene {fmt_params(results['learngene']['params'])} "
        f"({results['stored_ratio']:.1f}x fewer stored parameters than {len(rows)} descendants); "
        f"depth {best['depth']}: {best['learngene']['final_accuracy']:.3f} from the learngene vs "
        f"{best['scratch']['final_accuracy']:.3f} from scratch. Report, models and cards in {out}/",
        flush=True,
    )
    return results


def _training_setup(recipe: LearngeneRecipe, teacher_source: str) -> str:
    return (
        f"Data: scikit-learn digits upsampled to {recipe.image_size}x{recipe.image_size}, stratified 80/20 split "
        f"(seed {recipe.seed}). Teacher: {teacher_source}. Learngene: {METHODS[recipe.method][0]} auxiliary "
        f"network of {recipe.aux_num_layers} layers{_stages(recipe)} distilled for {recipe.distill_epochs:g} epochs (soft KD, alpha "
        f"{recipe.alpha}, T {recipe.temperature}, {recipe.kd_normalization} normalization, AdamW lr "
        f"{recipe.distill_learning_rate}, cosine). Descendants and scratch baselines: {recipe.finetune_epochs:g} "
        f"epochs, AdamW lr {recipe.finetune_learning_rate}, batch {recipe.batch_size}, cosine with 10% warmup."
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
    push_model(learngene, repo_id, learngene_card(learngene, repo_id, results, links),
               commit_message="Upload the learngene", **hub_kwargs)
    pushed = {"learngene": repo_id}
    for depth, target in links.items():
        folder = out_dir / "descendants" / f"depth-{depth}"
        config = transformers.AutoConfig.from_pretrained(folder)
        model = getattr(transformers, config.architectures[0]).from_pretrained(folder)
        push_model(model, target, descendant_card(model, target, results, learngene_ref=repo_id),
                   commit_message=f"Upload the depth-{depth} descendant", **hub_kwargs)
        pushed[f"depth-{depth}"] = target
    return pushed
