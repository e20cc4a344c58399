"""The Spectral Diffusion main job: a DDPM teacher on digits (`recipes/diffusion_teacher.py`), then per seed, at the
same training budget, three slim students (`WaveletGatedUNet2DModel`): wavelet-gated and distilled (Spectral Diffusion),
wavelet-gated with the DDPM loss only (no distillation), and distilled without wavelet gating (plain samplers) ->
parameters, MACs, the Fréchet distance of their samples to real digits (features of a classifier trained here), sample
grids side by side.

    hf-methods spectral-diffusion                                   # the embedded default: a few minutes on 2 CPUs
    hf-methods spectral-diffusion --student_steps 1000 --seeds 0    # any recipe field can be overridden
    hf-methods spectral-diffusion --teacher org/my-ddpm-digits      # a diffusers DDPM pipeline instead of training one
    hf-methods spectral-diffusion --push_to_hub true --hub_model_id org/spectral-diffusion-digits
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
from hf_methods.data import digits, in_memory_rows
from hf_methods.diffusion import (
    classifier_features,
    diffusers_card,
    frechet_distance,
    image_grid,
    require_diffusers,
    sample_images,
    train_digits_classifier,
)
from hf_methods.recipe import Run, parse_recipe, train, training_args
from hf_methods.recipes.diffusion_teacher import DiffusionTeacherRecipe, diffusion_teacher
from hf_methods.registry import citation
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "spectral_diffusion" / "digits.yaml"
METHOD = "Spectral Diffusion"
DISTILLED, DDPM_ONLY, PLAIN = "WG student, distilled", "WG student, DDPM loss only", "plain student, distilled"
ARMS = (DISTILLED, DDPM_ONLY, PLAIN)
FOLDERS = {DISTILLED: "student", DDPM_ONLY: "student-ddpm-only", PLAIN: "student-no-wavelet-gating"}
SETTINGS = {DISTILLED: (True, True), DDPM_ONLY: (True, False), PLAIN: (False, True)}  # (gating, distillation)


@dataclass
class SpectralDiffusionRecipe(DiffusionTeacherRecipe):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`,
    teacher fields: `DiffusionTeacherRecipe`)."""

    method_name = METHOD  # the teacher's card cites it (a class attribute, not a field)

    output_dir: str = field(
        default="outputs/spectral-diffusion-digits", metadata={"help": "Where models and report go."}
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo of the distilled WG student (org/name); the others go to <id>-<arm>."}
    )
    student_block_out_channels: list[int] = field(
        default_factory=lambda: [16, 32],
        metadata={"help": "Student channels per level: as many levels as the teacher (features are matched by level)."},
    )
    student_layers_per_block: int = field(default=1, metadata={"help": "ResNet blocks per student level."})
    gate_hidden_ratio: float = field(default=1.0, metadata={"help": "Hidden width of the gates' FFN / its input."})
    student_steps: int = field(default=600, metadata={"help": "Optimizer steps of every student (the equal budget)."})
    student_learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the students."})
    lambda_spatial: float = field(default=0.1, metadata={"help": "Weight of the spatial feature loss (lambda_s)."})
    lambda_frequency: float = field(default=0.1, metadata={"help": "Weight of the frequency loss (lambda_f)."})
    spectrum_alpha: float = field(default=-1.0, metadata={"help": "Exponent of the spectrum weights |F(x0)|^alpha."})
    classifier_steps: int = field(default=400, metadata={"help": "Steps of the digits classifier of the FD figure."})
    num_eval_samples: int = field(
        default=360, metadata={"help": "Samples per model for the Fréchet distance (the test split has 360 digits)."}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Students trained per seed."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.student_block_out_channels) != len(self.teacher_block_out_channels) and not self.teacher:
            raise ValueError(
                f"student_block_out_channels has {len(self.student_block_out_channels)} levels but the teacher "
                f"{len(self.teacher_block_out_channels)}: give both as many levels (features are matched by level)."
            )
        if not self.student_block_out_channels or any(c < 4 or c % 4 for c in self.student_block_out_channels):
            raise ValueError(
                "student_block_out_channels must be multiples of 4 (GroupNorm of 4 groups), got "
                f"{self.student_block_out_channels}."
            )
        for name in ("student_layers_per_block", "student_steps", "classifier_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.num_eval_samples < 10:
            raise ValueError(
                f"num_eval_samples must be at least 10 (a covariance estimate), got {self.num_eval_samples}."
            )
        if self.student_learning_rate <= 0 or self.gate_hidden_ratio <= 0:
            raise ValueError("student_learning_rate and gate_hidden_ratio must be positive.")
        if self.lambda_spatial < 0 or self.lambda_frequency < 0:
            raise ValueError("lambda_spatial and lambda_frequency must be >= 0 (0 turns the term off).")
        if self.lambda_spatial == 0 and self.lambda_frequency == 0:
            raise ValueError("lambda_spatial and lambda_frequency are both 0: the distilled arms would not distill.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")


def new_student(recipe: SpectralDiffusionRecipe, gating: bool):
    from hf_methods.models.spectral_diffusion import WaveletGatedUNet2DModel

    return WaveletGatedUNet2DModel(
        sample_size=recipe.image_size,
        block_out_channels=tuple(recipe.student_block_out_channels),
        layers_per_block=recipe.student_layers_per_block,
        norm_num_groups=4,
        use_wavelet_gating=gating,
        gate_hidden_ratio=recipe.gate_hidden_ratio,
    )


class UNetWithScheduler:
    """What a student folder holds: the UNet (`save_pretrained`) and the teacher's noise scheduler in `scheduler/`, so
    that `DDPMPipeline(unet=..., scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler"))` samples it."""

    def __init__(self, unet, scheduler):
        self.unet, self.scheduler = unet, scheduler

    def save_pretrained(self, folder):
        self.unet.save_pretrained(folder)
        self.scheduler.save_pretrained(Path(folder) / "scheduler")


def costs(model, image_size: int) -> dict:
    """Parameters and multiply-accumulates of one denoising step of one image (`count_flops` / 2: convolutions and
    matmuls, as FLOP counters count; the wavelet transform's additions and the gates' products are not MACs)."""
    from hf_methods.engine import count_flops, count_parameters

    device = next(model.parameters()).device
    x = torch.zeros(1, model.config.in_channels, image_size, image_size, device=device)
    flops = count_flops(model, {"sample": x}, timestep=torch.tensor([10], device=device))
    return {"parameters": count_parameters(model), "macs": flops // 2}


def run(recipe: SpectralDiffusionRecipe) -> dict:
    require_diffusers()
    from hf_methods.trainers.spectral_diffusion_config import SpectralDiffusionConfig
    from hf_methods.trainers.spectral_diffusion_trainer import SpectralDiffusionTrainer

    run = Run(recipe, stages=3 + len(recipe.seeds) * len(ARMS))
    datasets.disable_progress_bars()
    data = digits(recipe.image_size, seed=recipe.seed)
    teacher, scheduler = diffusion_teacher(run, recipe, data)
    train_rows, test_rows = data["train"][:], data["test"][:]

    run.stage(f"the digits classifier of the Fréchet distance ({recipe.classifier_steps} steps), the teacher's samples")
    classifier = train_digits_classifier(train_rows["pixel_values"], train_rows["labels"],
                                         steps=recipe.classifier_steps, seed=recipe.seed)  # fmt: skip
    with torch.no_grad():
        accuracy = float((classifier(test_rows["pixel_values"]).argmax(-1) == test_rows["labels"]).float().mean())
    reference = classifier_features(classifier, train_rows["pixel_values"])
    n = recipe.num_eval_samples
    real = test_rows["pixel_values"][:n]
    real_fd = frechet_distance(classifier_features(classifier, real), reference)

    def fd_of(model, seed: int) -> tuple[float, torch.Tensor]:
        images = sample_images(model, scheduler, n, num_inference_steps=recipe.sample_steps, seed=10_000 + seed)
        return frechet_distance(classifier_features(classifier, images), reference), images

    rows = [{"arm": "teacher", "seed": s, "fd": fd_of(teacher, s)[0], **costs(teacher, recipe.image_size)}
            for s in recipe.seeds]  # fmt: skip
    run.say(f"  classifier test accuracy {accuracy:.3f}; FD real test digits {real_fd:.3f}, teacher "
            + ", ".join(f"{r['fd']:.3f}" for r in rows))  # fmt: skip

    kept = {}
    for seed in recipe.seeds:
        for arm in ARMS:
            gating, distill = SETTINGS[arm]
            key = f"{FOLDERS[arm]}-seed{seed}"
            done = run.resume_stage(f"seed {seed}: {arm}, {recipe.student_steps} steps", key)
            if done is None:
                transformers.set_seed(seed)
                student = new_student(recipe, gating)
                args = training_args(
                    recipe, run.trainer_dir(key), learning_rate=recipe.student_learning_rate,
                    max_steps=recipe.student_steps, cls=SpectralDiffusionConfig, eval_strategy="no", weight_decay=0.0,
                    warmup_steps=0.05, seed=seed, disable_tqdm=True, logging_strategy="steps",
                    logging_steps=max(1, recipe.student_steps // 10),
                    lambda_spatial=recipe.lambda_spatial if distill else 0.0,
                    lambda_frequency=recipe.lambda_frequency if distill else 0.0,
                    spectrum_alpha=recipe.spectrum_alpha,
                )  # fmt: skip
                trainer = SpectralDiffusionTrainer(
                    model=student, args=args, train_dataset=in_memory_rows(data["train"]),
                    teacher_model=teacher if distill else None, noise_scheduler=scheduler,
                )  # fmt: skip
                trainer.remove_callback(transformers.PrinterCallback)
                train(trainer)
                student = trainer.detach_student()
                logs = [e for e in trainer.state.log_history if "loss" in e]
                fd, _ = fd_of(student, seed)
                done = {"arm": arm, "seed": seed, "fd": fd, **costs(student, recipe.image_size),
                        "final_ddpm_loss": logs[-1]["ddpm_loss"] if logs else None}  # fmt: skip
                run.save_stage(key, done, UNetWithScheduler(student, scheduler))
                run.say(f"  FD {fd:.3f}")
            if seed == recipe.seeds[0]:
                kept[arm] = key
            rows.append(done)

    summary = summarize_arms(rows, ("teacher", *ARMS), ("fd", "parameters", "macs"))
    students = [s for s in summary if s["arm"] in ARMS]
    what = "Fréchet distance to real digits (lower is better)"
    by_arm = {s["arm"]: s for s in students}
    verdict = (
        "Distillation: "
        + verdict_against([by_arm[DISTILLED], by_arm[DDPM_ONLY]], DISTILLED, "fd", what, higher_is_better=False)
        + " Wavelet gating: "
        + verdict_against([by_arm[DISTILLED], by_arm[PLAIN]], DISTILLED, "fd", what, higher_is_better=False)
    )
    teacher_fd = summary[0]["fd_mean"]
    mine = next(s for s in students if s["arm"] == DISTILLED)
    verdict += (
        f" The teacher reaches {teacher_fd:.3f} with {summary[0]['parameters_mean'] / mine['parameters_mean']:.1f}x "
        f"the parameters and {summary[0]['macs_mean'] / mine['macs_mean']:.1f}x the MACs; real test digits "
        f"{real_fd:.3f}."
    )
    results = {
        "method": METHOD,
        "dataset": f"scikit-learn digits ({recipe.image_size}x{recipe.image_size}, values in [-1, 1])",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "teacher": {k: v for k, v in run.teacher_info.items()},
        "classifier_accuracy": accuracy,
        "real_fd": real_fd,
        "runs": rows,
        "summary": summary,
        "verdict": verdict + " " + VERDICT_RULE,
        "models": {arm: FOLDERS[arm] for arm in ARMS},
        "hf_methods_version": __version__,
    }
    run.stage("saving the first seed's students with their cards, the sample grids and the report")
    grids = {"real digits": real[: recipe.sample_grid_size**2],
             "teacher": fd_of(teacher, recipe.seeds[0])[1][: recipe.sample_grid_size**2]}  # fmt: skip
    from hf_methods.models.spectral_diffusion import WaveletGatedUNet2DModel

    for arm in ARMS:
        student = WaveletGatedUNet2DModel.from_pretrained(run.stage_folder(kept[arm]))
        path = run.out / FOLDERS[arm]
        run.save_model(UNetWithScheduler(student, scheduler), FOLDERS[arm], student_card(path.resolve(), arm, results))
        grids[arm] = fd_of(student, recipe.seeds[0])[1][: recipe.sample_grid_size**2]
    if run.is_main_process:
        for name, images in grids.items():
            image_grid(images, recipe.sample_grid_size).save(
                run.out / f"samples_{name.replace(' ', '_').replace(',', '')}.png"
            )
    results["elapsed_s"] = run.elapsed()
    run.wait_for_everyone()
    if not run.is_main_process:
        return results
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results, grids))
    fds = ", ".join(f"{s['arm']} {s['fd_mean']:.3f}" for s in summary)
    run.finish(f"Spectral Diffusion done in {results['elapsed_s']:.0f}s: FD {fds}. Report in {run.out}/")
    return results


def _training_setup(recipe: SpectralDiffusionRecipe) -> str:
    channels = ", ".join(map(str, recipe.student_block_out_channels))
    return (
        f"Students: WaveletGatedUNet2DModel, channels ({channels}), {recipe.student_layers_per_block} ResNet block(s) "
        f"per level, no attention; {recipe.student_steps} AdamW steps of {recipe.batch_size} digits each, lr "
        f"{recipe.student_learning_rate:g} (cosine), the teacher's DDPMScheduler. Distilled: L = L_DDPM + "
        f"{recipe.lambda_spatial:g} L_spatial + {recipe.lambda_frequency:g} L_freq (alpha {recipe.spectrum_alpha:g}), "
        "features of mid_block and each up block matched through 1x1 convolutions. Quality: Fréchet distance of "
        f"{recipe.num_eval_samples} samples (DDIM, {recipe.sample_steps} steps) to the training digits, on the "
        f"32 penultimate features of a small CNN classifier trained {recipe.classifier_steps} steps. Seeds "
        f"{recipe.seeds}."
    )


def student_usage(repo_or_path: str) -> str:
    return (
        "from diffusers import DDPMPipeline, DDPMScheduler\n"
        "# pip install 'hf-methods[diffusion]'\n"
        "from hf_methods.models.spectral_diffusion import WaveletGatedUNet2DModel\n\n"
        f'unet = WaveletGatedUNet2DModel.from_pretrained("{repo_or_path}")\n'
        f'scheduler = DDPMScheduler.from_pretrained("{repo_or_path}", subfolder="scheduler")\n'
        "images = DDPMPipeline(unet=unet, scheduler=scheduler)(batch_size=16).images  # 1-channel digits (PIL)"
    )


def student_card(repo_or_path, arm: str, results: dict, teacher_ref: str | None = None):
    mine = next(s for s in results["summary"] if s["arm"] == arm)
    gating, distill = SETTINGS[arm]
    what = (
        f"A slim {'wavelet-gated' if gating else 'plain (no wavelet gating)'} UNet "
        f"({int(mine['parameters_mean']):,} parameters, {int(mine['macs_mean']):,} MACs per denoising step), "
        + ("distilled from a DDPM teacher with Spectral Diffusion's spatial and spectrum-weighted frequency losses"
           if distill else "trained with the DDPM loss alone (the no-distillation baseline of Spectral Diffusion)")
        + f"; the `{arm}` arm of the `hf-methods spectral-diffusion` recipe (first seed)."
    )  # fmt: skip
    return diffusers_card(
        repo_or_path,
        title=f"Spectral Diffusion student on digits: {arm}",
        description=what,
        usage=student_usage(str(repo_or_path)),
        tags=("spectral-diffusion", "distillation", "wavelet-gating" if gating else "baseline"),
        base_model=teacher_ref or results["teacher"].get("hub_id"),
        training_setup=results["training_setup"],
        metrics={
            "Fréchet distance (mean over seeds)": round(mine["fd_mean"], 4),
            "Fréchet distance, real test digits": round(results["real_fd"], 4),
        },  # fmt: skip
        citation=citation(METHOD),
    )


def report_figure(results: dict, grids: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3 * len(grids), 6.4))
    for i, (name, images) in enumerate(grids.items()):
        ax = fig.add_subplot(2, len(grids), i + 1)
        ax.imshow(image_grid(images, scale=1), cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(2, 1, 2)
    summary = results["summary"]
    means, stds = [s["fd_mean"] for s in summary], [s["fd_std"] for s in summary]
    ax.bar(range(len(summary)), means, yerr=stds, capsize=3, color=["#999999", "#4c72b0", "#dd8452", "#55a868"])
    ax.axhline(results["real_fd"], color="black", linestyle="--", linewidth=1, label="real test digits")
    labels = [
        f"{s['arm']}\n{s['parameters_mean'] / 1e3:.0f}K params, {s['macs_mean'] / 1e6:.2f}M MACs" for s in summary
    ]
    ax.set_xticks(range(len(summary)), labels, fontsize=8)
    ax.set_ylabel("Fréchet distance to real digits (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    lines = [f"# Spectral Diffusion on {results['dataset']}", "", results["training_setup"], "",
             f"Teacher: {results['teacher']['source']} ({results['teacher'].get('training_setup', '')})", "",
             f"**{results['verdict']}**", "", "![report](report.png)", "",
             "| model | parameters | MACs / step | Fréchet distance ↓ (mean ± std over seeds) |",
             "|---|---|---|---|"]  # fmt: skip
    for s in results["summary"]:
        lines.append(f"| {s['arm']} | {int(s['parameters_mean']):,} | {int(s['macs_mean']):,} | "
                     f"{s['fd_mean']:.3f} ± {s['fd_std']:.3f} |")  # fmt: skip
    lines += [f"| real test digits (the floor) | | | {results['real_fd']:.3f} |", "",
              f"The Fréchet-distance classifier reaches {results['classifier_accuracy']:.3f} test accuracy.", "",
              "| seed | model | Fréchet distance |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['seed']} | {r['arm']} | {r['fd']:.3f} |" for r in results["runs"]]
    lines += ["", "Models (first seed, diffusers folders with the scheduler in `scheduler/`): "
              + ", ".join(f"`{folder}/` ({arm})" for arm, folder in results["models"].items())
              + "; the teacher pipeline in `teacher/` when trained here.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(SpectralDiffusionRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_spectral_diffusion_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a Spectral Diffusion run: the distilled WG student to `repo_id`, the two baselines to
    `<repo_id>-ddpm-only` and `<repo_id>-no-wavelet-gating` (the teacher goes to `<repo_id>-teacher` first, by
    `push_run`)."""
    from hf_methods.hub import push_saved_model

    teacher_ref = results.get("teacher", {}).get("hub_id")
    pushed = {}
    for arm in ARMS:
        folder = results["models"][arm]
        target = repo_id if arm == DISTILLED else f"{repo_id}-{folder.removeprefix('student-')}"
        push_saved_model(out_dir / folder, target, student_card(target, arm, results, teacher_ref),
                         commit_message=f"Upload the Spectral Diffusion student ({arm})", **hub_kwargs)  # fmt: skip
        pushed[folder] = target
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.spectral_diffusion.pipeline"))
