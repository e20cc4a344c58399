"""The teacher of the diffusion-distillation recipes (RepFusion, Spectral Diffusion): a small DDPM (diffusers
`UNet2DModel` + `DDPMScheduler`) trained here on scikit-learn's digits, or any diffusers DDPM pipeline / UNet given
as `teacher` (a folder or a Hub id).

    @dataclass
    class MyRecipe(DiffusionTeacherRecipe):
        ...

    def run(recipe):
        run = Run(recipe, stages=...)
        unet, scheduler = diffusion_teacher(run, recipe)   # one resumable stage; run.out / "teacher" is a DDPMPipeline

The teacher trained here is saved as a `DDPMPipeline` folder (`run.out / "teacher"`, loadable by
`DDPMPipeline.from_pretrained`) with a diffusers-convention card and a sample grid (`teacher/samples.png`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from hf_methods.diffusion import image_grid, require_diffusers, sample_images
from hf_methods.recipe import RecipeArguments, RecipeError, check_model_reference, training_args

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


@dataclass
class DiffusionTeacherRecipe(RecipeArguments):
    """The teacher fields of the diffusion recipes (a method's recipe subclasses this). The default teacher trains in
    well under a minute on one thread: a 2-level UNet (32, 64 channels) on the digits at their native 8x8."""

    teacher: str | None = field(
        default=None,
        metadata={
            "help": "A diffusers DDPM pipeline folder / Hub id (model_index.json with a `unet` and a `scheduler`), or "
            "a UNet2DModel folder / Hub id (then a DDPMScheduler with `num_train_timesteps` and `beta_schedule`), "
            "used instead of training one. It must generate 1-channel images of `image_size`."
        },
    )
    image_size: int = field(
        default=8,
        metadata={"help": "8 (the digits' own resolution) or 16 (bilinearly upsampled: 4x the cost, no new detail)."},
    )
    teacher_block_out_channels: list[int] = field(
        default_factory=lambda: [32, 64],
        metadata={"help": "Channels of the teacher UNet's levels (each level after the first halves H and W)."},
    )
    teacher_layers_per_block: int = field(default=1, metadata={"help": "ResNet blocks per level of the teacher."})
    teacher_steps: int = field(default=1000, metadata={"help": "Optimizer steps of the teacher (batch `batch_size`)."})
    teacher_learning_rate: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the teacher."})
    num_train_timesteps: int = field(default=1000, metadata={"help": "Diffusion steps T of the DDPMScheduler."})
    beta_schedule: str = field(
        default="squaredcos_cap_v2",
        metadata={"help": f"Noise schedule of the DDPMScheduler, one of {BETA_SCHEDULES}."},
    )
    sample_steps: int = field(
        default=50,
        metadata={
            "help": "Sampling steps of the grids and quality figures: a DDIM schedule (eta 0) made from the "
            "training scheduler's config; num_train_timesteps samples the full DDPM chain."
        },
    )
    sample_grid_size: int = field(default=8, metadata={"help": "Sample grids are this many images per side."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of every training stage."})

    def __post_init__(self):
        super().__post_init__()
        if self.image_size not in (8, 16):
            raise ValueError(f"image_size must be 8 or 16, got {self.image_size}.")
        if not self.teacher_block_out_channels or min(self.teacher_block_out_channels) < 1:
            raise ValueError(
                f"teacher_block_out_channels must list positive channel counts, got {self.teacher_block_out_channels}."
            )
        levels = len(self.teacher_block_out_channels)
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"teacher_block_out_channels has {levels} levels, which halve image_size {self.image_size} "
                f"{levels - 1} times; use at most {self.image_size.bit_length()} levels."
            )
        if any(c % 8 for c in self.teacher_block_out_channels):
            raise ValueError(
                f"teacher_block_out_channels must be multiples of 8 (GroupNorm of 8 groups), got "
                f"{self.teacher_block_out_channels}."
            )
        for name in ("teacher_layers_per_block", "teacher_steps", "num_train_timesteps", "sample_steps",
                     "sample_grid_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.teacher_learning_rate <= 0:
            raise ValueError(f"teacher_learning_rate must be positive, got {self.teacher_learning_rate}.")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}.")
        check_model_reference("teacher", self.teacher)


def new_scheduler(recipe: DiffusionTeacherRecipe):
    """The DDPMScheduler of a teacher trained here (epsilon prediction, samples clipped to [-1, 1])."""
    diffusers = require_diffusers()
    return diffusers.DDPMScheduler(num_train_timesteps=recipe.num_train_timesteps, beta_schedule=recipe.beta_schedule)


def new_teacher_unet(recipe: DiffusionTeacherRecipe):
    """A freshly initialized teacher `UNet2DModel` (plain ResNet levels, self-attention in the middle block)."""
    diffusers = require_diffusers()
    levels = len(recipe.teacher_block_out_channels)
    return diffusers.UNet2DModel(
        sample_size=recipe.image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(recipe.teacher_block_out_channels),
        layers_per_block=recipe.teacher_layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=8,
        attention_head_dim=8,
    )


def load_teacher_pipeline(ref: str, recipe: DiffusionTeacherRecipe):
    """(unet, scheduler) of `ref`: a DDPM pipeline (model_index.json) or a UNet2DModel (then a new DDPMScheduler from
    the recipe), checked to generate 1-channel `image_size` images. A `RecipeError` names what does not fit."""
    diffusers = require_diffusers()
    is_pipeline = os.path.isfile(os.path.join(ref, "model_index.json")) if os.path.isdir(ref) else None
    if is_pipeline is None:  # a Hub id: ask for a pipeline first
        try:
            is_pipeline = bool(diffusers.DiffusionPipeline.load_config(ref))
        except Exception:  # noqa: BLE001 - no model_index.json: a bare UNet repo
            is_pipeline = False
    try:
        if is_pipeline:
            pipe = diffusers.DDPMPipeline.from_pretrained(ref, trust_remote_code=False)
            unet, scheduler = pipe.unet, pipe.scheduler
        else:
            unet, scheduler = diffusers.UNet2DModel.from_pretrained(ref), new_scheduler(recipe)
    except (OSError, ValueError, TypeError) as err:
        raise RecipeError(f"teacher {ref!r} is not a diffusers DDPM pipeline or UNet2DModel: {err}") from None
    size = unet.config.sample_size
    if unet.config.in_channels != 1 or unet.config.out_channels != 1:
        raise RecipeError(
            f"teacher {ref!r} takes {unet.config.in_channels} and gives {unet.config.out_channels} channels; the "
            "digits recipes need a 1-channel (grayscale) UNet."
        )
    if size != recipe.image_size and tuple(size if not isinstance(size, int) else (size, size)) != (
        recipe.image_size,
        recipe.image_size,
    ):
        raise RecipeError(f"teacher {ref!r} generates {size}x{size} images; set --image_size {size} to use it.")
    if getattr(scheduler.config, "prediction_type", "epsilon") != "epsilon":
        raise RecipeError(f"teacher {ref!r}'s scheduler predicts {scheduler.config.prediction_type!r}, not epsilon.")
    return unet, scheduler


def teacher_usage(repo_or_path: str) -> str:
    return (
        "from diffusers import DDPMPipeline\n\n"
        f'pipe = DDPMPipeline.from_pretrained("{repo_or_path}")\n'
        "images = pipe(batch_size=16, num_inference_steps=1000).images  # 1-channel digits (PIL)"
    )


def teacher_card(repo_or_path, results: dict, method: str | None = None):
    """Card of the teacher pipeline a diffusion recipe trained (diffusers conventions)."""
    from hf_methods.diffusion import diffusers_card
    from hf_methods.registry import citation

    return diffusers_card(
        repo_or_path,
        title="DDPM on scikit-learn digits (the diffusion recipes' teacher)",
        description=(
            f"A diffusers `UNet2DModel` ({results['parameters']:,} parameters) + `DDPMScheduler` trained with the "
            "epsilon-prediction DDPM loss on scikit-learn's 8x8 digits (values in [-1, 1]), by hf-methods"
            + (f" ({method} recipe)." if method else ".")
        ),
        usage=teacher_usage(str(repo_or_path)),
        tags=("ddpm", "teacher"),
        training_setup=results.get("training_setup"),
        metrics={k: v for k, v in results.items() if k in ("final_loss", "frechet_distance", "parameters")},
        citation=citation(method) if method else "",
    )


def diffusion_teacher(run, recipe: DiffusionTeacherRecipe, data=None):
    """(unet, scheduler) of the run's teacher, in eval mode: `recipe.teacher` loaded, or a DDPM trained here on
    `data["train"]` (default: `hf_methods.data.digits(recipe.image_size, seed=recipe.seed)`) as one resumable stage
    of `run`, then saved as a `DDPMPipeline` in `run.out / "teacher"` with its card and `samples.png`.

    `run.teacher_info` is set to a dict describing it (source, parameters, steps, final loss, training setup) for the
    method's report."""
    diffusers = require_diffusers()
    diffusers.utils.logging.disable_progress_bar()  # "Loading pipeline components..." of a resumed or given teacher
    from hf_methods.data import digits, in_memory_rows
    from hf_methods.diffusion import ddpm_trainer_class
    from hf_methods.recipe import train

    if recipe.teacher:
        run.stage(f"loading the teacher {recipe.teacher}")
        unet, scheduler = load_teacher_pipeline(recipe.teacher, recipe)
        run.teacher_info = {
            "source": recipe.teacher,
            "parameters": sum(p.numel() for p in unet.parameters()),
            "training_setup": f"given as {recipe.teacher}",
        }
        return unet.eval().requires_grad_(False), scheduler
    folder = run.out / "teacher"
    channels = ", ".join(map(str, recipe.teacher_block_out_channels))
    text = f"training the DDPM teacher (UNet2DModel ({channels}), {recipe.teacher_steps} steps)"
    done = run.resume_stage(text, "teacher")
    if done is not None and (folder / "model_index.json").is_file():
        pipe = diffusers.DDPMPipeline.from_pretrained(folder, trust_remote_code=False)
        run.teacher_info = done
        return pipe.unet.eval().requires_grad_(False), pipe.scheduler
    if data is None:
        data = digits(recipe.image_size, seed=recipe.seed)
    torch.manual_seed(recipe.seed)
    unet, scheduler = new_teacher_unet(recipe), new_scheduler(recipe)
    args = training_args(
        recipe,
        run.trainer_dir("teacher"),
        learning_rate=recipe.teacher_learning_rate,
        max_steps=recipe.teacher_steps,
        eval_strategy="no",
        weight_decay=0.0,
        warmup_steps=0.05,
        remove_unused_columns=False,
        logging_strategy="steps",
        logging_steps=max(1, recipe.teacher_steps // 10),
        disable_tqdm=True,
    )
    trainer = ddpm_trainer_class()(
        model=unet, args=args, train_dataset=in_memory_rows(data["train"]), scheduler=scheduler
    )
    import transformers

    trainer.remove_callback(transformers.PrinterCallback)
    train(trainer)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    unet.eval().requires_grad_(False)
    info = {
        "source": "a DDPM trained by this recipe",
        "parameters": sum(p.numel() for p in unet.parameters()),
        "steps": recipe.teacher_steps,
        "final_loss": losses[-1] if losses else None,
        "training_setup": (
            f"UNet2DModel, channels ({channels}), {recipe.teacher_layers_per_block} ResNet block(s) per level, "
            f"self-attention in the middle block; DDPMScheduler, T = {recipe.num_train_timesteps}, "
            f"{recipe.beta_schedule} betas, epsilon prediction; {recipe.teacher_steps} AdamW steps of "
            f"{recipe.batch_size} {recipe.image_size}x{recipe.image_size} digits, lr {recipe.teacher_learning_rate:g} "
            f"(cosine), seed {recipe.seed}."
        ),
    }
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    method = getattr(recipe, "method_name", None)
    run.save_model(pipe, "teacher", teacher_card(folder.resolve(), info, method))
    if run.is_main_process:
        grid = sample_images(unet, scheduler, recipe.sample_grid_size**2, num_inference_steps=recipe.sample_steps)
        image_grid(grid, recipe.sample_grid_size).save(folder / "samples.png")
    run.save_stage("teacher", info)
    run.teacher_info = info
    return unet, scheduler
