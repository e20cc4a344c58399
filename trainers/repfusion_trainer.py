"""`RepFusionTrainer`: RepFusion pre-training of a `RepFusionDistiller` against a frozen diffusion UNet, and
`EntropyDecayCallback`, the official linear decay of the policy's entropy bonus.

The distiller computes its own loss (student feature regression + reward head CE + REINFORCE + entropy bonus); the
trainer holds the teacher as a frozen model (on this process's device, eval mode, never saved: it is not a submodule
of the distiller), logs the loss parts (`loss_feat`, `loss_reward`, `loss_policy`, `loss_entropy`, `mean_t`) and decays
the entropy weight.
"""

from __future__ import annotations

from torch import nn
from transformers import TrainerCallback

from ..models.repfusion import RepFusionDistiller, entropy_schedule
from .frozen_models import FrozenModelsTrainer, unwrap_parallel
from .repfusion_config import RepFusionTrainingConfig


class EntropyDecayCallback(TrainerCallback):
    """Sets `model.entropy_reg = init * max(0, 1 - epoch / end_epoch)` at the start of every epoch (the official
    `EntropyDecayHook`: 0.1, 0.05, 0, 0 at epochs 0, 50, 100, 150 for end_epoch 100)."""

    def __init__(self, init: float = 0.1, end_epoch: float = 100.0):
        if not init >= 0 or not end_epoch > 0:
            raise ValueError(f"EntropyDecayCallback needs init >= 0 and end_epoch > 0, got {init!r}, {end_epoch!r}.")
        self.init = float(init)
        self.end_epoch = float(end_epoch)

    def value(self, epoch: float) -> float:
        return entropy_schedule(epoch, self.init, self.end_epoch)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            model = unwrap_parallel(model)
            model.entropy_reg = self.value(state.epoch or 0.0)


class RepFusionTrainer(FrozenModelsTrainer):
    """Trains a `RepFusionDistiller` (`model`) against `teacher_model`, a diffusers `UNet2DModel` (or any module called
    as `teacher(sample, timestep)`), given here or already attached to the model; `teacher_scheduler` (its
    `DDPMScheduler`) lets the distiller check the timestep range. Adds `EntropyDecayCallback(model.config.entropy_reg,
    args.entropy_end_epoch)` unless `entropy_end_epoch` is empty. Batches are dicts with `pixel_values` and `labels`
    (-100: unlabeled, distilled only)."""

    config_class = RepFusionTrainingConfig
    loss_parts = ("loss_feat", "loss_reward", "loss_policy", "loss_entropy", "mean_t")

    def __init__(
        self,
        model: RepFusionDistiller | None = None,
        args: RepFusionTrainingConfig | None = None,
        *pargs,
        teacher_model: nn.Module | None = None,
        teacher_scheduler=None,
        **kwargs,
    ):
        if not isinstance(model, RepFusionDistiller):
            raise TypeError(f"RepFusionTrainer trains a RepFusionDistiller, got {type(model).__name__}.")
        if teacher_model is not None:
            model.attach_teacher(teacher_model, teacher_scheduler)
        if model.teacher is None:
            raise ValueError("RepFusionTrainer needs the diffusion teacher: pass teacher_model=unet.")
        super().__init__(model, args, *pargs, **kwargs)
        self.model_accepts_loss_kwargs = False  # the distiller's loss is a per-batch mean
        self._refuse_shared_parameters(model.teacher, "teacher_model", trained="distiller")
        model.attach_teacher(self._prepare_frozen(model.teacher, "auto"), teacher_scheduler)
        if self.args.entropy_end_epoch is not None:
            self.add_callback(EntropyDecayCallback(model.config.entropy_reg, self.args.entropy_end_epoch))

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; with `args.policy_learning_rate`, the policy's parameters in groups of their own
        at that learning rate (the scheduler, created next, scales every group alike)."""
        had = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        lr = self.args.policy_learning_rate
        distiller = unwrap_parallel(self.model if model is None else model)
        if had or lr is None or getattr(distiller, "policy", None) is None:
            return optimizer
        policy = {id(p) for p in distiller.policy.parameters()}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in policy]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in policy]
                settings = {k: v for k, v in group.items() if k != "params"}
                optimizer.add_param_group({**settings, "params": moved, "lr": lr})
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        parts = {name: outputs[name] for name in self.loss_parts}
        loss = self._scale_and_record(model, outputs.loss, parts, None)
        return (loss, outputs) if return_outputs else loss
