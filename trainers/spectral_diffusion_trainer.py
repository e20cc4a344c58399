"""`SpectralDiffusionTrainer`: Spectral Diffusion's distillation of a frozen diffusion teacher into a slim student
(Yang et al., "Diffusion Probabilistic Model Made Slim", CVPR 2023; no official code exists).

Per batch of clean images x0 (`pixel_values` in [-1, 1]): one timestep t per image and noise eps give x_t (the noise
scheduler's `add_noise`); the student and the teacher (frozen, under no_grad, the same x_t and t) run with forward hooks
on matched modules (default: `mid_block` and every `up_blocks.<i>`, which have the same resolutions in a diffusers
`UNet2DModel` teacher and a student of as many levels), and

    L = MSE(eps_S(x_t, t), eps) + lambda_spatial * L_spatial + lambda_frequency * L_freq

with `SpectrumAwareDistillationLoss` (spatial MSE and the spectrum-weighted DFT loss, weights |F(resize(x0))|^alpha).
The student's features are first mapped to the teacher's channels by trainable 1x1 convolutions (one per pair),
trained beside the student (`StudentSideModule`: in the optimizer and checkpoints, never in the student's files). The
teacher is a trainer attribute, frozen, never saved. With both weights 0 it trains with the DDPM loss alone and needs
no teacher (the "without distillation" baseline).

Inferred (the paper leaves them open): the pairs and their resolution matching, 1x1 projections initialized by
PyTorch's default, t uniform over the scheduler's training timesteps, the teacher in eval mode at every step.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import add_noise, require_diffusers, unet_output, unique_state_dict
from ..models.spectral_diffusion.losses import SpectrumAwareDistillationLoss
from .frozen_models import FrozenModelsTrainer, StudentSideModule
from .spectral_diffusion_config import SpectralDiffusionConfig

PROJECTIONS_FILE = "spectral_projections.safetensors"


def default_feature_modules(model: nn.Module) -> list[str]:
    """`mid_block` and every `up_blocks.<i>` of a diffusers-style UNet."""
    names = ["mid_block"] if hasattr(model, "mid_block") else []
    return names + [f"up_blocks.{i}" for i in range(len(getattr(model, "up_blocks", ())))]


def load_diffusers_unet(ref: str, **kwargs):
    """A UNet2DModel from a UNet folder / Hub id, or the `unet` of a diffusers pipeline folder."""
    diffusers = require_diffusers()
    subfolder = "unet" if os.path.isfile(os.path.join(ref, "model_index.json")) else None
    return diffusers.UNet2DModel.from_pretrained(ref, subfolder=subfolder, **kwargs)


def _first(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class SpectralDiffusionTrainer(StudentSideModule, FrozenModelsTrainer):
    """See the module docstring. `noise_scheduler` (a diffusers `DDPMScheduler`, the teacher's) is required;
    `teacher_model` is a diffusers UNet or a folder / Hub id (default `args.teacher_model_name_or_path`)."""

    config_class = SpectralDiffusionConfig
    loss_parts = ("ddpm_loss", "spatial_loss", "frequency_loss")
    side_module_name = "spectral_projections"

    def __init__(
        self,
        model: nn.Module | None = None,
        args: SpectralDiffusionConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        compute_loss_func=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        teacher_model: nn.Module | str | None = None,
        noise_scheduler=None,
    ):
        self._pairs = None  # read by `_new_side_module` while Trainer.__init__ runs
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_loss_func=compute_loss_func,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self.model_accepts_loss_kwargs = False  # the losses are per-batch means
        if noise_scheduler is None:
            raise ValueError(
                "SpectralDiffusionTrainer needs `noise_scheduler`: the teacher's diffusers DDPMScheduler (e.g. "
                "DDPMPipeline.from_pretrained(teacher).scheduler)."
            )
        self.noise_scheduler = noise_scheduler
        self.distillation_loss = SpectrumAwareDistillationLoss(
            self.args.spectrum_alpha, self.args.spectrum_eps, self.args.normalize_spectrum_weights
        )
        self.teacher_model = None
        self._captured = {"student": {}, "teacher": {}}
        self._hooks = []
        if not self.args.distills:
            return
        teacher = teacher_model if teacher_model is not None else self.args.teacher_model_name_or_path
        if teacher is None:
            raise ValueError(
                "lambda_spatial or lambda_frequency > 0 needs a teacher: pass `teacher_model` (a diffusers UNet) or "
                "set `teacher_model_name_or_path`; or set both weights to 0 to train with the DDPM loss alone."
            )
        if isinstance(teacher, str):
            from .frozen_models import frozen_init_kwargs

            kwargs = frozen_init_kwargs(self.args.teacher_model_init_kwargs, "auto")
            kwargs.pop("trust_remote_code", None)  # diffusers' ModelMixin.from_pretrained runs no remote code
            teacher = load_diffusers_unet(teacher, **kwargs)
        self._refuse_shared_parameters(teacher, "teacher_model")
        student = self.accelerator.unwrap_model(self.model)
        student_names = self.args.student_feature_modules or default_feature_modules(student)
        teacher_names = self.args.teacher_feature_modules or (
            student_names if self.args.student_feature_modules else default_feature_modules(teacher)
        )
        if len(student_names) != len(teacher_names):
            raise ValueError(
                f"the student has {len(student_names)} matched modules ({student_names}) but the teacher "
                f"{len(teacher_names)} ({teacher_names}): give both as many levels, or name the pairs with "
                "student_feature_modules / teacher_feature_modules."
            )
        for role, net, names in (("student", student, student_names), ("teacher", teacher, teacher_names)):
            for i, name in enumerate(names):
                try:
                    module = net.get_submodule(name)
                except AttributeError:
                    raise ValueError(f"the {role} has no module {name!r} to match features at.") from None
                self._hooks.append(module.register_forward_hook(self._capture(role, i)))
        self._pairs = self._pair_shapes(student, teacher, student_names, teacher_names)
        self._attach_side_module(self.model)
        self.teacher_model = self._prepare_frozen(teacher, self.args.teacher_dtype)

    # --- matched features ------------------------------------------------------------------------------------------
    def _capture(self, role: str, index: int):
        def hook(module, args, output):
            self._captured[role][index] = _first(output)

        return hook

    @torch.no_grad()
    def _pair_shapes(self, student, teacher, student_names, teacher_names) -> list[tuple[int, int]]:
        """(student channels, teacher channels) per pair, from one forward of each on a blank image; the pairs must
        have the same resolution."""
        size = student.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        ref = next(student.parameters())
        x = torch.zeros(1, student.config.in_channels, *size, device=ref.device, dtype=ref.dtype)
        t = torch.zeros(1, dtype=torch.long, device=ref.device)
        student(x, t)
        tref = next(teacher.parameters())
        teacher(x.to(device=tref.device, dtype=tref.dtype), t.to(tref.device))
        pairs = []
        for i, (s_name, t_name) in enumerate(zip(student_names, teacher_names)):
            s, te = self._captured["student"].pop(i), self._captured["teacher"].pop(i)
            if s.shape[-2:] != te.shape[-2:]:
                raise ValueError(
                    f"student {s_name!r} gives {tuple(s.shape[-2:])} features but teacher {t_name!r} gives "
                    f"{tuple(te.shape[-2:])}: matched features must have the same resolution."
                )
            pairs.append((s.shape[1], te.shape[1]))
        return pairs

    def _new_side_module(self) -> nn.Module | None:
        if not getattr(self, "_pairs", None):
            return None
        return nn.ModuleList(nn.Conv2d(s, t, kernel_size=1) for s, t in self._pairs)

    def _save_side_module(self, module: nn.Module, folder: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()},
                  os.path.join(folder, PROJECTIONS_FILE))  # fmt: skip

    def _load_side_module(self, module: nn.Module, folder: str) -> None:
        from safetensors.torch import load_file

        path = os.path.join(folder, PROJECTIONS_FILE)
        if os.path.isfile(path):
            module.load_state_dict(load_file(path))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints hold one name per tensor (diffusers' `Downsample2D` registers its convolution twice)."""
        if state_dict is None:
            state_dict = unique_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
        super()._save(output_dir, state_dict)

    def detach_student(self) -> nn.Module:
        """The trained student on its own: the feature hooks removed and the projections taken off (they stay in
        `self.projections`), ready to `save_pretrained`, count or sample."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        student = self.accelerator.unwrap_model(self.model)
        module = dict(student.named_children()).get(self.side_module_name)
        if module is not None:
            delattr(student, self.side_module_name)
            self.projections = module
        return student

    # --- the loss --------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        x0 = inputs["pixel_values"]
        noisy, t, noise = add_noise(self.noise_scheduler, x0)
        self._captured = {"student": {}, "teacher": {}}
        prediction = unet_output(model(noisy, t))
        ddpm = F.mse_loss(prediction.float(), noise.float())
        loss, parts = ddpm, {"ddpm_loss": ddpm.detach()}
        if self.teacher_model is not None:
            self.teacher_model.eval()
            dtype = next(self.teacher_model.parameters()).dtype
            with torch.no_grad():
                self.teacher_model(noisy.to(dtype), t)
            projections = self.side_module
            student = [proj(self._captured["student"][i]) for i, proj in enumerate(projections)]
            teacher = [self._captured["teacher"][i].detach() for i in range(len(projections))]
            spatial, frequency = self.distillation_loss(student, teacher, x0)
            loss = loss + self.args.lambda_spatial * spatial + self.args.lambda_frequency * frequency
            parts.update(spatial_loss=spatial.detach(), frequency_loss=frequency.detach())
        self._captured = {"student": {}, "teacher": {}}
        loss = self._scale_and_record(model, loss, parts, num_items_in_batch)
        return (loss, {"sample": prediction}) if return_outputs else loss
