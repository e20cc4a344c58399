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
from functools import partial
from pathlib import Path

import transformers
from transformers import BaseImageProcessor

from hf_methods import SWSConfig, SWSModel, TLEGConfig, TLEGModel, __version__
from hf_methods.cards import adapter_card, descendant_card, hub_id, learngene_card, teacher_card
from hf_methods.data import for_pipeline, input_format
from hf_methods.engine import count_flops, select_teacher_layers
from hf_methods.engine.architectures import resolve_model_class
from hf_methods.hub import push_saved_model
from hf_methods.lora import save_adapter
from hf_methods.recipe import (
    TASKS,
    PeftArguments,
    Run,
    TeacherRecipe,
    accuracy_curve,
    epochs_text,
    get_teacher,
    load_task,
    num_parameters,
    parse_recipe,
    step_time,
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
# how the auxiliary network starts before it is distilled (`learngene_init`); besides these, the method's fit to the
# teacher's layers (`teacher_inits[0]`: TLEG 'least_squares', SWS 'stage_mean'), which also copies the non-layer
# tensors
LEARNGENE_INITS = {
    "random": "random (the method's own initialization, nothing from the teacher)",
    "non_layer": "the teacher's embeddings, final norm and head copied; layers random",
}
FIT_INITS = {"least_squares": "TLEG", "stage_mean": "SWS"}


@dataclass
class LearngeneRecipe(TeacherRecipe, PeftArguments):
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
    learngene_init: list[str] = field(
        default_factory=lambda: ["random"],
        metadata={
            "help": "How the auxiliary network starts, one or more of: 'random' (nothing from the teacher), "
            "'non_layer' (the teacher's embeddings, final norm and head copied), the method's fit to the teacher's "
            "layers ('least_squares' for TLEG: theta_A + (l/L) theta_B fitted per tensor; 'stage_mean' for SWS: each "
            "stage the mean of the teacher layers it covers; both also copy the non-layer tensors). The first is "
            "the run's learngene (saved, pushed); each other one is distilled and fine-tuned the same way and "
            "reported beside it."
        },
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
        inits = [*LEARNGENE_INITS, METHODS[self.method][2].teacher_inits[0]]
        if not self.learngene_init or any(i not in inits for i in self.learngene_init):
            raise ValueError(
                f"learngene_init must list one or more of {inits} for {self.method}, got {self.learngene_init}."
            )
        self.validate_peft()
        if len(set(self.learngene_init)) != len(self.learngene_init):
            raise ValueError(f"learngene_init lists an init twice: {self.learngene_init}.")


def run(recipe: LearngeneRecipe) -> dict:
    # under `accelerate launch`: every process trains
    run = Run(recipe, stages=_num_stages(recipe, recipe.teacher_num_layers))
    data, processor, dataset_name = load_task(recipe)
    sample = {k: v for k, v in data["test"][:1].items() if k != "labels"}
    num_train = len(data["train"])

    # 1. the teacher
    teacher, teacher_source, teacher_acc = get_teacher(run, data)
    teacher_depth = teacher.config.num_hidden_layers
    run.stages = _num_stages(recipe, teacher_depth)  # a loaded teacher may have another depth than the recipe's
    teacher_flops = count_flops(teacher, sample)

    # 2. the learngene(s): initialize and distill the auxiliary network
    method, _, _ = METHODS[recipe.method]
    distill_args = partial(  # each training's own output_dir: Run.trainer_dir
        training_args,
        recipe,
        learning_rate=recipe.distill_learning_rate,
        num_train_epochs=recipe.distill_epochs,
        cls=DistillationConfig,
        distillation_type="soft",
        alpha=recipe.alpha,
        temperature=recipe.temperature,
        kd_normalization=recipe.kd_normalization,
    )
    genes = {}
    for init in recipe.learngene_init:
        key = f"learngene-{init}"
        text = f"distilling the {method} auxiliary network ({recipe.aux_num_layers} layers, {init} init)"
        done = run.resume_stage(text, key)
        if done is not None:
            genes[init] = {**done, "model": METHODS[recipe.method][2].from_pretrained(run.stage_folder(key))}
            continue
        transformers.set_seed(recipe.seed)
        learngene = _initial_learngene(recipe, teacher, init)
        trainer, initial = train_and_evaluate(
            learngene, distill_args(run.trainer_dir(key)), data, trainer_cls=DistillationTrainer, teacher_model=teacher
        )
        seen = num_train * recipe.distill_epochs
        genes[init] = {
            "aux_initial_accuracy": initial,
            "aux_accuracy": accuracy_curve(trainer, initial)[-1]["accuracy"],
            # the compute spent after the teacher exists to produce this initialization: the teacher's forward
            # passes, and the auxiliary network's training (forward + backward ~ 3 forwards)
            "teacher_flops": teacher_flops * seen,
            "training_flops": 3 * count_flops(learngene, sample) * seen,
        }
        run.save_stage(key, genes[init], learngene)
        genes[init]["model"] = learngene
    main_init = recipe.learngene_init[0]
    learngene = genes[main_init]["model"]

    # 3-4. expand to each depth and fine-tune, against scratch and the teacher-layer baselines with the same budget
    kd_args = partial(
        training_args,
        recipe,
        learning_rate=recipe.finetune_learning_rate,
        num_train_epochs=recipe.finetune_epochs,
        cls=DistillationConfig,
        distillation_type="soft",
        alpha=recipe.kd_baseline_alpha,
        temperature=recipe.temperature,
        kd_normalization=recipe.kd_normalization,
    )
    ft_args = partial(
        training_args, recipe, learning_rate=recipe.finetune_learning_rate, num_train_epochs=recipe.finetune_epochs
    )
    stock_class = resolve_model_class(learngene.config.base_model_class)
    rows = []
    for depth in recipe.depths:
        inits = {}
        for init in recipe.learngene_init:
            key = f"depth-{depth}-{init}"
            text = f"depth {depth}: fine-tuning the learngene-initialized model ({init} init)"
            done = run.resume_stage(text, key)
            if done is not None:
                model = stock_class.from_pretrained(run.stage_folder(key)) if init == main_init else None
                inits[init] = {**done, "_model": model}
                continue
            transformers.set_seed(recipe.seed)
            model = genes[init]["model"].expand(depth)
            trainer, initial = train_and_evaluate(model, ft_args(run.trainer_dir(key)), data)
            curve = accuracy_curve(trainer, initial)
            inits[init] = {
                "curve": curve,
                "final_accuracy": curve[-1]["accuracy"],
                "trainable_params": num_parameters(model),
                "step_time_s": step_time(trainer),
                "expansion": model.expansion_report.summary(),
            }
            run.save_stage(key, inits[init], model if init == main_init else None)
            inits[init]["_model"] = model
        model = inits[main_init].pop("_model")
        lora = None
        if recipe.peft:
            text = f"depth {depth}: LoRA fine-tuning of the learngene-initialized model ({main_init} init)"
            key = f"depth-{depth}-lora"
            lora_result = run.resume_stage(text, key)
            if lora_result is not None:
                from peft import PeftModel

                lora = PeftModel.from_pretrained(learngene.expand(depth), run.stage_folder(key))
            else:
                transformers.set_seed(recipe.seed)
                lora, lora_result = _lora_finetune(recipe, learngene.expand(depth), data, run.trainer_dir(key))
                if run.is_main_process:
                    save_adapter(lora, run.stage_folder(key), "(resume state)")
                run.save_stage(key, lora_result)
        text = f"depth {depth}: training a scratch model with the same budget"
        sc_curve = run.resume_stage(text, f"depth-{depth}-scratch")
        if sc_curve is None:
            transformers.set_seed(recipe.seed)
            scratch = stock_class(learngene.config.stock_config(depth))
            trainer, initial = train_and_evaluate(scratch, ft_args(run.trainer_dir(f"depth-{depth}-scratch")), data)
            sc_curve = accuracy_curve(trainer, initial)
            run.save_stage(f"depth-{depth}-scratch", sc_curve)
        baselines = {}
        for strategy in recipe.baselines if depth <= teacher_depth else []:
            # after learngene and scratch, re-seeded like them: their figures do not depend on the baselines
            key = f"depth-{depth}-{strategy}"
            done = run.resume_stage(f"depth {depth}: training the {BASELINES[strategy]} baseline", key)
            if done is not None:
                baselines[strategy] = done
                continue
            transformers.set_seed(recipe.seed)
            if strategy == "kd":  # the 'even' student, distilled for as many steps as the others are fine-tuned
                selected = select_teacher_layers(teacher, depth, strategy="even")
                trainer, initial = train_and_evaluate(
                    selected,
                    kd_args(run.trainer_dir(key)),
                    data,
                    trainer_cls=DistillationTrainer,
                    teacher_model=teacher,
                )
            else:
                selected = select_teacher_layers(teacher, depth, strategy=strategy)
                trainer, initial = train_and_evaluate(selected, ft_args(run.trainer_dir(key)), data)
            curve = accuracy_curve(trainer, initial)
            baselines[strategy] = {
                "curve": curve,
                "final_accuracy": curve[-1]["accuracy"],
                "teacher_layers": selected.config.layer_selection["layers"],
                "params": num_parameters(selected),
                # 'first'/'even' copy the teacher's weights; 'kd' also runs the teacher on every training example
                "teacher_flops": teacher_flops * num_train * recipe.finetune_epochs if strategy == "kd" else 0,
            }
            run.save_stage(key, baselines[strategy])
        lg = inits.pop(main_init)
        rows.append(
            {
                "depth": depth,
                "params": num_parameters(model),
                "flops": count_flops(model, sample),
                "expansion": lg.pop("expansion"),
                "layers_source": model.config.learngene_ancestry.get("layers_source"),
                "learngene": {**lg, "init": main_init},
                **({"lora": lora_result} if lora is not None else {}),
                "learngene_inits": {
                    init: {k: v for k, v in other.items() if k not in ("_model", "expansion")}
                    for init, other in inits.items()
                },
                "scratch": {"curve": sc_curve, "final_accuracy": sc_curve[-1]["accuracy"]},
                "steps_to_reach_scratch": steps_to_reach(lg["curve"], sc_curve[-1]["accuracy"]),
                **baselines,
                "baselines": list(baselines),
                "_model": model,
                "_lora": lora,
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
    saved_teacher = run.resumed("teacher") is not None  # trained or fine-tuned here: saved with the run's models
    results = {
        "method": method,
        "dataset": dataset_name,
        "input_format": input_format(processor, recipe.max_length),
        "dataset_id": TASKS[recipe.dataset]["dataset_id"],
        "training_setup": _training_setup(recipe, teacher_source, dataset_name, num_train),
        "recipe": dataclasses.asdict(recipe),
        "teacher": {
            "source": teacher_source,
            # a teacher saved in the run folder (trained or fine-tuned here) is that folder until pushed
            "hub_id": None if saved_teacher else hub_id(recipe.teacher),
            "params": num_parameters(teacher),
            "num_layers": teacher_depth,
            "accuracy": teacher_acc,
            "flops": teacher_flops,
        },
        "learngene": {
            "params": gene_params,
            "layer_params": learngene.layer_num_parameters(),
            "aux_num_layers": recipe.aux_num_layers,
            "init": main_init,
            **{k: v for k, v in genes[main_init].items() if k != "model"},
        },
        "learngene_inits": {
            init: {k: v for k, v in gene.items() if k != "model"} for init, gene in genes.items() if init != main_init
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

    # 6. save the teacher, the learngene and the descendants with their cards and the processor, so that pipeline()
    # loads them (digits descendants read RGB: `for_pipeline`); the cards name the run's folders by absolute path
    # (their snippets must run from anywhere)
    here = run.out.resolve()
    tokenizer = None if isinstance(processor, BaseImageProcessor) else processor  # the learngene takes no images
    if saved_teacher:
        saved = for_pipeline(teacher, processor)
        run.save_model(saved, "teacher", teacher_card(saved, here / "teacher", results), processor)
    for_cards = {**results, "teacher": {**results["teacher"], "path": str(here / "teacher") if saved_teacher else None}}
    run.save_model(learngene, "learngene", learngene_card(learngene, here / "learngene", for_cards), tokenizer)
    for row in rows:
        folder = f"descendants/depth-{row['depth']}"
        if row["_lora"] is None:
            model = for_pipeline(row["_model"], processor)
            card = descendant_card(model, here / folder, for_cards, learngene_ref=str(here / "learngene"))
            run.save_model(model, folder, card, processor)
            continue
        # with LoRA, the descendant saved is the adapter's base (the learngene's expansion, which LoRA leaves
        # frozen) and the adapter goes beside it
        base = for_pipeline(learngene.expand(row["depth"]), processor)
        card = descendant_card(base, here / folder, for_cards, learngene_ref=str(here / "learngene"), lora=True)
        path = run.save_model(base, folder, card, processor)
        adapter = f"{folder}-lora"
        card = adapter_card(row["_lora"], str(path.resolve()), run.out / adapter, _lora_metrics(row["lora"]))
        save_adapter(row["_lora"], run.out / adapter, str(path.resolve()), card)
    best = max(rows, key=lambda r: r["learngene"]["final_accuracy"] - r["scratch"]["final_accuracy"])
    run.finish(
        f"{method} done in {results['elapsed_s']:.0f}s: learngene {fmt_params(results['learngene']['params'])} "
        f"({results['stored_ratio']:.1f}x fewer stored parameters than {len(rows)} descendants); "
        f"depth {best['depth']}: {best['learngene']['final_accuracy']:.3f} from the learngene vs "
        f"{best['scratch']['final_accuracy']:.3f} from scratch. Report, models and cards in {run.out}/"
    )
    return results


def _lora_finetune(recipe: LearngeneRecipe, base, data, output_dir):
    """(the adapted model, its report entry): `base` (a fresh expansion) fine-tuned through a LoRA adapter with the
    same epochs as full fine-tuning; only the adapter and the task head train."""
    from hf_methods.lora import lora_model, trainable_parameters

    adapted = lora_model(
        base,
        r=recipe.lora_r,
        alpha=recipe.lora_alpha,
        dropout=recipe.lora_dropout,
        target_modules=recipe.lora_target_modules,
    )
    args = training_args(
        recipe, output_dir, learning_rate=recipe.lora_learning_rate, num_train_epochs=recipe.finetune_epochs
    )
    trainer, initial = train_and_evaluate(adapted, args, data)
    curve = accuracy_curve(trainer, initial)
    trainable, total = trainable_parameters(adapted)
    config = adapted.peft_config["default"]
    return adapted, {
        "curve": curve,
        "final_accuracy": curve[-1]["accuracy"],
        "trainable_params": trainable,
        "params": total,
        "step_time_s": step_time(trainer),
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": sorted(config.target_modules),
        "modules_to_save": sorted(config.modules_to_save or []),
    }


def _lora_metrics(entry: dict) -> dict:
    return {
        "accuracy": entry["final_accuracy"],
        "trainable parameters": entry["trainable_params"],
        "seconds per step": round(entry["step_time_s"], 4),
    }


def _initial_learngene(recipe: LearngeneRecipe, teacher, init: str):
    """The auxiliary network before distillation, started as `init` says (`learngene_init`)."""
    _, config_cls, model_cls = METHODS[recipe.method]
    shape = {"stage_sizes": recipe.stage_sizes} if recipe.method == "sws" else {"aux_num_layers": recipe.aux_num_layers}
    if init == "random":
        return model_cls(config_cls.from_base(teacher, **shape))
    return model_cls.from_teacher(teacher, init="random" if init == "non_layer" else init, copy_non_layer=True, **shape)


def _num_stages(recipe: LearngeneRecipe, teacher_depth: int) -> int:
    """Teacher, each learngene, then per depth: each learngene, LoRA (`peft`), scratch and each baseline (at depths
    <= the teacher's)."""
    shallow = sum(d <= teacher_depth for d in recipe.depths)
    per_depth = len(recipe.learngene_init) + 1 + (recipe.peft is not None)
    return 1 + len(recipe.learngene_init) + per_depth * len(recipe.depths) + len(recipe.baselines) * shallow


def _training_setup(recipe: LearngeneRecipe, teacher_source: str, dataset_name: str, num_train: int) -> str:
    split = (
        f"upsampled to {recipe.image_size}x{recipe.image_size}"
        if recipe.dataset == "digits"
        else f"the first {recipe.max_length} tokens of each article (title first)"
    )
    inits = "; ".join(f"'{i}': {_init_label(i)}" for i in recipe.learngene_init)
    return (
        f"Data: {dataset_name}, {split}, stratified 80/20 split (seed {recipe.seed}), {num_train} training "
        f"examples. Teacher: {teacher_source}. Learngene: {METHODS[recipe.method][0]} auxiliary "
        f"network of {recipe.aux_num_layers} layers{_stages(recipe)} started as {inits}, distilled for "
        f"{epochs_text(recipe.distill_epochs)} (soft KD, alpha "
        f"{recipe.alpha}, T {recipe.temperature}, {recipe.kd_normalization} normalization, AdamW lr "
        f"{recipe.distill_learning_rate}, cosine). Descendants and scratch baselines: "
        f"{epochs_text(recipe.finetune_epochs)}, AdamW lr {recipe.finetune_learning_rate}, batch {recipe.batch_size}, "
        "cosine with 10% warmup." + _lora_setup(recipe) + _baselines_setup(recipe)
    )


def _lora_setup(recipe: LearngeneRecipe) -> str:
    if not recipe.peft:
        return ""
    targets = recipe.lora_target_modules or "peft's default for the architecture"
    return (
        f" LoRA (peft) of the learngene-initialized models, beside full fine-tuning: r {recipe.lora_r}, alpha "
        f"{recipe.lora_alpha:g}, dropout {recipe.lora_dropout}, target modules {targets}, the task head trained in "
        f"full, AdamW lr {recipe.lora_learning_rate}, the same epochs."
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
        f" Baselines at every depth up to the teacher's, a stock model initialized from the teacher's layers "
        f"(`select_teacher_layers`) and trained with the same budget: {names}{kd}."
    )


def _init_label(init: str) -> str:
    if init in LEARNGENE_INITS:
        return LEARNGENE_INITS[init]
    return (
        "the least-squares fit of the teacher's layers to theta_A + (l/L) theta_B, non-layer tensors copied"
        if init == "least_squares"
        else "each stage the mean of the teacher layers it covers, non-layer tensors copied"
    )


def _stages(recipe: LearngeneRecipe) -> str:
    return f" in stages {'-'.join(map(str, recipe.stage_sizes))}" if recipe.method == "sws" else ""


def main(argv=None, default_config=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(LearngeneRecipe, argv, default_config=default_config)
    return run(recipe)


def push_learngene_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a TLEG / SWS run: the learngene to `repo_id`, each descendant to `<repo_id>-depth-<D>`,
    and its LoRA adapter, when the run trained one, to `<repo_id>-depth-<D>-lora`, with cards whose ancestry links
    point at those repos."""
    links = {row["depth"]: f"{repo_id}-depth-{row['depth']}" for row in results["descendants"]}
    # the saved folders go as they are (a tokenizer saved beside a model goes along), with cards re-rendered
    learngene = transformers.AutoModel.from_pretrained(out_dir / "learngene", trust_remote_code=False)
    push_saved_model(
        out_dir / "learngene",
        repo_id,
        learngene_card(learngene, repo_id, results, links),
        commit_message="Upload the learngene",
        **hub_kwargs,
    )
    pushed = {"learngene": repo_id}
    for depth, target in links.items():
        folder = out_dir / "descendants" / f"depth-{depth}"
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        model = getattr(transformers, config.architectures[0]).from_pretrained(folder)
        adapter = folder.with_name(f"depth-{depth}-lora")
        lora = adapter.is_dir()
        push_saved_model(
            folder,
            target,
            descendant_card(model, target, results, learngene_ref=repo_id, lora=lora),
            commit_message=f"Upload the depth-{depth} descendant",
            **hub_kwargs,
        )
        pushed[f"depth-{depth}"] = target
        if lora:  # the adapter, whose base is the descendant's repo
            from peft import PeftModel

            from hf_methods.lora import push_adapter

            row = next(r for r in results["descendants"] if r["depth"] == depth)
            peft_model = PeftModel.from_pretrained(model, adapter)
            card = adapter_card(peft_model, target, f"{target}-lora", _lora_metrics(row["lora"]))
            push_adapter(adapter, f"{target}-lora", target, card, **hub_kwargs)
            pushed[f"depth-{depth}-lora"] = f"{target}-lora"
    return pushed
