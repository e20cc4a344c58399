"""The Learngene Pool main job: teacher -> small instances distilled with feature terms (stage 1) -> a pool of
stitched networks trained together (stage 2) -> every configuration scored for parameters, FLOPs and accuracy,
exported as a standalone model, and reported on a Pareto plot users choose from.

    hf-methods pool                                   # the embedded default: digits, no network, ~3 min on 2 CPUs
    hf-methods pool --stitch_init least_squares       # any recipe field can be overridden
    hf-methods choose outputs/pool-digits/report.json --budget-params 100K
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import transformers
from transformers import ViTConfig, ViTForImageClassification

from hf_methods import __version__
from hf_methods.cards import hub_id, pool_card, stitched_card, teacher_card
from hf_methods.cli import run_script
from hf_methods.data import digits, digits_image_processor, for_pipeline, input_format
from hf_methods.models.learngene_pool import LearngenePoolModel
from hf_methods.pareto import fmt_flops, fmt_params, write_pareto_report
from hf_methods.recipe import (
    Run,
    TeacherRecipe,
    accuracy_curve,
    get_teacher,
    num_parameters,
    parse_recipe,
    train,
    train_and_evaluate,
    training_args,
)
from hf_methods.trainers import LearngenePoolDistillationTrainer, PoolDistillationConfig, ResumableTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "learngene_pool" / "digits.yaml"
METHOD = "Learngene Pool"


@dataclass
class PoolRecipe(TeacherRecipe):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `TeacherRecipe`)."""

    output_dir: str = field(
        default="outputs/pool-digits", metadata={"help": "Where models, the pool and the report go."}
    )
    instance_num_layers: int = field(
        default=6, metadata={"help": "Depth n of every learngene instance (paper: 6 or 9)."}
    )
    instance_hidden_sizes: list[int] = field(
        default_factory=lambda: [32, 64],
        metadata={"help": "Widths of the instances, small -> large (paper: 192 tiny, 768 base)."},
    )
    instance_num_attention_heads: list[int] = field(
        default_factory=lambda: [2, 4],
        metadata={"help": "Heads per instance, kept in the pool (the official code switches to 12)."},
    )
    instance_feature_positions: list[str] = field(
        default_factory=lambda: ["[front,end]", "[end]"],
        metadata={"help": "Matched layers per instance (paper: tiny [front,end], others [end])."},
    )
    distill_epochs: float = field(default=10, metadata={"help": "Stage 1: epochs to distill each instance."})
    distill_learning_rate: float = field(default=1e-3, metadata={"help": "Stage 1 learning rate."})
    alpha: float = field(
        default=0.9,
        metadata={
            "help": "Weight of the distillation terms in [0, 1]: (1 - alpha) * CE + alpha * (soft CE + feature MSE) "
            "(official: 0.1 on CE)."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Stage 1 soft-CE temperature."})
    stitch_init: str = field(
        default="least_squares",
        metadata={
            "help": "'least_squares' (SN-Net), 'projector' (paper: stage-1 projections transposed) or 'random'; the "
            "report compares all three."
        },
    )
    stitch_directions: str = field(
        default="small_to_large",
        metadata={"help": "Which instance pairs stitch: small_to_large (paper), adjacent_small_to_large, all."},
    )
    calibration_samples: int = field(
        default=256, metadata={"help": "Training images used by least-squares stitch init."}
    )
    pool_epochs: float = field(
        default=4, metadata={"help": "Stage 2: epochs of pool training (one sampled configuration per step)."}
    )
    pool_learning_rate: float = field(
        default=2e-4, metadata={"help": "Stage 2 learning rate (constant, as the official code)."}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Push the pool and its Pareto-front networks at the end."}
    )
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Repo of the pool (org/name); front networks go to <id>-config-<n>, a trained teacher to "
            "<id>-teacher."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        sizes = (
            len(self.instance_hidden_sizes),
            len(self.instance_num_attention_heads),
            len(self.instance_feature_positions),
        )
        if len(set(sizes)) != 1 or sizes[0] < 2:
            raise ValueError(
                "instance_hidden_sizes, instance_num_attention_heads and instance_feature_positions must have one "
                f"entry per instance (at least two), got lengths {sizes}."
            )
        if self.stitch_init not in ("projector", "least_squares", "random"):
            raise ValueError(f"stitch_init must be 'projector', 'least_squares' or 'random', got {self.stitch_init!r}.")


def _instance(recipe: PoolRecipe, index: int) -> ViTForImageClassification:
    width, heads = recipe.instance_hidden_sizes[index], recipe.instance_num_attention_heads[index]
    return ViTForImageClassification(
        ViTConfig(
            image_size=recipe.image_size,
            patch_size=recipe.patch_size,
            num_channels=1,
            hidden_size=width,
            num_hidden_layers=recipe.instance_num_layers,
            num_attention_heads=heads,
            intermediate_size=2 * width,
            num_labels=10,
            id2label={i: str(i) for i in range(10)},
            label2id={str(i): i for i in range(10)},
        )
    )


def _describe(row: dict, widths: list[int]) -> str:
    if row["j"] is None:
        return f"instance {row['front']} (width {widths[row['front']]}, {row['depth']} layers)"
    return f"{row['front']}->{row['end']} blocks 0..{row['j']} + {row['k']}.. ({row['depth']} layers)"


def _train_pool(recipe: PoolRecipe, run: Run, data, instances, test_x, test_y):
    """Stage 2: the pool built from the instances with stitches initialized, scored before training (each stitch init
    on the stitched configurations, then every configuration with the chosen one), then all configurations trained
    together. Saved as stage "pool" (the model and what was scored before training)."""
    transformers.set_seed(recipe.seed)
    calibration = data["train"][: recipe.calibration_samples]["pixel_values"]  # for least-squares stitch init
    pool = LearngenePoolModel.from_instances(
        instances,
        stitch_init=recipe.stitch_init,
        calibration_inputs=calibration,
        stitch_directions=recipe.stitch_directions,
    )
    folders = [str(run.out / "instances" / f"instance-{i}") for i in range(len(instances))]
    stitched_ids = [c["id"] for c in pool.stitch_configs if c["j"] is not None]
    init_comparison = {}
    for method in ("projector", "least_squares", "random"):
        transformers.set_seed(recipe.seed)
        pool.initialize_stitches(method, calibration_inputs=calibration, projector_folders=folders)
        accs = [r["accuracy"] for r in pool.evaluate_configs(test_x, test_y, config_ids=stitched_ids)]
        init_comparison[method] = sum(accs) / len(accs)
    transformers.set_seed(recipe.seed)
    pool.initialize_stitches(recipe.stitch_init, calibration_inputs=calibration, projector_folders=folders)
    before = {r["id"]: r["accuracy"] for r in pool.evaluate_configs(test_x, test_y)}
    pool_args = training_args(
        recipe,
        run.trainer_dir("pool"),
        learning_rate=recipe.pool_learning_rate,
        num_train_epochs=recipe.pool_epochs,
        lr_scheduler_type="constant",
        warmup_steps=0,
        eval_strategy="no",
        ddp_find_unused_parameters=True,
    )
    train(ResumableTrainer(model=pool, args=pool_args, train_dataset=data["train"]))
    done = {"init_comparison": init_comparison, "accuracy_before_pool_training": before}
    run.save_stage("pool", done, pool)
    return pool, done


def run(recipe: PoolRecipe) -> dict:
    num_instances = len(recipe.instance_hidden_sizes)
    run = Run(recipe, stages=4 + num_instances)
    data = digits(recipe.image_size, seed=recipe.seed, max_train_samples=recipe.max_train_samples)

    # 1. the teacher (shared with the TLEG/SWS main job: same recipe fields, same seed, same teacher)
    teacher, teacher_source, teacher_acc = get_teacher(run, data)

    # 2. stage 1: distill each instance with the feature terms; the projectors are saved beside it
    instances, instance_rows = [], []
    for i in range(num_instances):
        folder = run.out / "instances" / f"instance-{i}"
        done = run.resume_stage(
            f"stage 1: distilling instance {i} (width {recipe.instance_hidden_sizes[i]}, "
            f"{recipe.instance_num_layers} layers, features at {recipe.instance_feature_positions[i]})",
            f"instance-{i}",
        )
        if done is not None:  # an earlier attempt of this run saved it (`Run.resumed`)
            instances.append(ViTForImageClassification.from_pretrained(folder, trust_remote_code=False))
            instance_rows.append(done)
            continue
        transformers.set_seed(recipe.seed + i)
        args = training_args(
            recipe,
            run.trainer_dir(f"instance-{i}"),
            learning_rate=recipe.distill_learning_rate,
            num_train_epochs=recipe.distill_epochs,
            cls=PoolDistillationConfig,
            alpha=recipe.alpha,
            temperature=recipe.temperature,
            feature_positions=recipe.instance_feature_positions[i],
            ddp_find_unused_parameters=False,
        )
        trainer, _ = train_and_evaluate(
            _instance(recipe, i), args, data, trainer_cls=LearngenePoolDistillationTrainer, teacher_model=teacher
        )
        trainer.save_model(str(folder))  # model.safetensors + feature_projectors.safetensors
        run.wait_for_everyone()
        instances.append(ViTForImageClassification.from_pretrained(folder, trust_remote_code=False))
        instance_rows.append(
            {
                "width": recipe.instance_hidden_sizes[i],
                "params": num_parameters(instances[-1]),
                "accuracy": accuracy_curve(trainer, 0.0)[-1]["accuracy"],
            }
        )
        run.save_stage(f"instance-{i}", instance_rows[-1])  # the model is out/instances/instance-<i>

    # 3. stage 2: the pool, stitches initialized, all configurations trained together
    done = run.resume_stage(
        f"stage 2: building the pool (stitch init: {recipe.stitch_init}) and training it for "
        f"{recipe.pool_epochs:g} epochs",
        "pool",
    )
    test = data["test"][:]  # a dict of tensors
    test_x, test_y = test["pixel_values"], test["labels"]
    if done is None:
        pool, done = _train_pool(recipe, run, data, instances, test_x, test_y)
    else:  # an earlier attempt of this run trained it
        pool = LearngenePoolModel.from_pretrained(run.stage_folder("pool"), trust_remote_code=False)
    init_comparison = done["init_comparison"]
    before = {int(k): v for k, v in done["accuracy_before_pool_training"].items()}

    # 4. every configuration: parameters, FLOPs, accuracy; exported as a standalone model
    run.stage(f"scoring and exporting all {len(pool.stitch_configs)} configurations")
    rows = pool.evaluate_configs(test_x, test_y)
    stored = num_parameters(pool)
    choices = []
    for row in rows:
        row["name"] = _describe(row, recipe.instance_hidden_sizes)
        row["accuracy_before_pool_training"] = before[row["id"]]
        choices.append(
            {
                "method": METHOD,
                "name": row["name"],
                "params": row["params"],
                "flops": row["flops"],
                "accuracy": row["accuracy"],
                "stored_params": stored,
                "path": f"stitched/config-{row['id']}",
            }
        )

    saved_teacher = run.resumed("teacher") is not None  # trained here: saved with the run's models
    processor = digits_image_processor(recipe.image_size)  # saved beside every exported network, for pipeline()
    results = {
        "method": METHOD,
        "dataset": f"scikit-learn digits ({recipe.image_size}x{recipe.image_size})",
        "dataset_id": "sklearn-digits",
        "input_format": input_format(processor),
        "training_setup": _training_setup(recipe, teacher_source),
        "recipe": dataclasses.asdict(recipe),
        "teacher": {
            "source": teacher_source,
            "hub_id": None if saved_teacher else hub_id(recipe.teacher),  # trained here: the run's own, until pushed
            "params": num_parameters(teacher),
            "num_layers": teacher.config.num_hidden_layers,
            "accuracy": teacher_acc,
        },
        "instances": instance_rows,
        "pool": {"params": stored, "num_configs": len(rows), "stitch_init": recipe.stitch_init},
        "stitch_init_comparison": init_comparison,
        "configs": rows,
        "choices": choices,
        "hf_methods_version": __version__,
    }
    results["elapsed_s"] = run.elapsed()
    run.wait_for_everyone()
    if not run.is_main_process:
        return results

    # 5. save the pool and every exported configuration; the report
    run.stage("saving the pool, the exported models and the report")
    if saved_teacher:
        saved = for_pipeline(teacher, processor)
        run.save_model(saved, "teacher", teacher_card(saved, run.out.resolve() / "teacher", results), processor)
    run.save_model(pool, "pool", pool_card(pool, run.out.resolve() / "pool", results))
    for row in rows:
        path = run.out / "stitched" / f"config-{row['id']}"
        model = for_pipeline(pool.export(row["id"]), processor)
        run.save_model(
            model,
            f"stitched/config-{row['id']}",
            stitched_card(model, path.resolve(), results, pool_ref=str(run.out.resolve() / "pool")),
            processor,
        )
    run.write_report(results, markdown=_markdown(results))
    write_pareto_report(results["choices"], run.out, title=f"Learngene Pool on {results['dataset']}")
    best = max(rows, key=lambda r: r["accuracy"])
    smallest = min(rows, key=lambda r: r["params"])
    run.finish(
        f"Learngene Pool done in {results['elapsed_s']:.0f}s: {len(rows)} models from one pool of "
        f"{fmt_params(stored)} stored parameters, {fmt_params(smallest['params'])} to "
        f"{fmt_params(max(r['params'] for r in rows))}; best {best['name']}: {best['accuracy']:.3f}. "
        f"Report, models and Pareto plot in {run.out}/"
    )
    return results


def _training_setup(recipe: PoolRecipe, teacher_source: str) -> str:
    instances = "; ".join(
        f"width {w}, {h} heads, features at {p}"
        for w, h, p in zip(
            recipe.instance_hidden_sizes, recipe.instance_num_attention_heads, recipe.instance_feature_positions
        )
    )
    return (
        f"Data: scikit-learn digits upsampled to {recipe.image_size}x{recipe.image_size}, stratified 80/20 split "
        f"(seed {recipe.seed}). Teacher: {teacher_source}. Stage 1: {len(recipe.instance_hidden_sizes)} instances of "
        f"{recipe.instance_num_layers} layers ({instances}) distilled for {recipe.distill_epochs:g} epochs with "
        f"`LearngenePoolDistillationTrainer` (alpha {recipe.alpha} on soft CE + hidden/attention MSE, "
        f"T {recipe.temperature}, AdamW lr {recipe.distill_learning_rate}, cosine). Stage 2: stitches "
        f"({recipe.stitch_directions}) initialized by {recipe.stitch_init}, the pool trained {recipe.pool_epochs:g} "
        f"epochs sampling one network per step (AdamW, constant lr {recipe.pool_learning_rate}), batch "
        f"{recipe.batch_size}."
    )


def _markdown(results: dict) -> str:
    """report.md (report.json holds `choices` for `hf-methods choose/pareto`; pareto.{md,png,json} beside it)."""
    teacher, pool = results["teacher"], results["pool"]
    lines = [
        f"# Learngene Pool on {results['dataset']}",
        "",
        f"Teacher: {teacher['source']} ({teacher['num_layers']} layers, {fmt_params(teacher['params'])} parameters, "
        f"accuracy {teacher['accuracy']:.3f}). Instances after stage-1 distillation: "
        + ", ".join(f"width {r['width']} {fmt_params(r['params'])} {r['accuracy']:.3f}" for r in results["instances"])
        + f". Pool: {fmt_params(pool['params'])} stored parameters, {pool['num_configs']} networks "
        f"(stitch init: {pool['stitch_init']}).",
        "",
        "Mean accuracy of the stitched networks right after stitch initialization, before pool training: "
        + ", ".join(f"{k} {v:.3f}" for k, v in results["stitch_init_comparison"].items())
        + ".",
        "",
        "| id | network | layers | parameters | FLOPs / sample | accuracy after stitch init | after pool training |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results["configs"], key=lambda r: r["params"]):
        lines.append(
            f"| {r['id']} | {r['name']} | {r['depth']} | {fmt_params(r['params'])} | "
            f"{fmt_flops(r['flops'])} | "
            f"{r['accuracy_before_pool_training']:.3f} | {r['accuracy']:.3f} |"
        )
    lines += [
        "",
        "Each network is saved as a standalone model under `stitched/config-<id>/`; pick one under a budget "
        "with `hf-methods choose report.json --budget-params N`.",
        "",
        "![pareto](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(PoolRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.learngene_pool.pipeline"))


def push_pool_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a Learngene Pool run: the pool to `repo_id` (its card lists every network), and the
    networks on the accuracy-vs-parameters Pareto front, the ones worth deploying, to `<repo_id>-config-<id>`."""
    from hf_methods.hub import push_model, push_saved_model
    from hf_methods.pareto import pareto_front

    front = {int(e["path"].rsplit("-", 1)[1]) for e in pareto_front(results["choices"], "params")}
    links = {cid: f"{repo_id}-config-{cid}" for cid in sorted(front)}
    pool = transformers.AutoModel.from_pretrained(out_dir / "pool", trust_remote_code=False)
    push_model(
        pool,
        repo_id,
        pool_card(pool, repo_id, results, links),
        commit_message="Upload the Learngene Pool",
        **hub_kwargs,
    )
    pushed = {"pool": repo_id}
    for cid, target in links.items():
        folder = out_dir / "stitched" / f"config-{cid}"
        model = transformers.AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=False)
        push_saved_model(  # the folder as saved: its image processor goes along
            folder,
            target,
            stitched_card(model, target, results, pool_ref=repo_id),
            commit_message=f"Upload network {cid} of the Learngene Pool",
            **hub_kwargs,
        )
        pushed[f"config-{cid}"] = target
    return pushed
