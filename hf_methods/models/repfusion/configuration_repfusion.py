"""Config of the RepFusion distiller: the student, its projection, the timestep policy and the reward head."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..convnets.configuration_convnets import _is_int, _is_number, _positive_int

DEFAULT_HOOK = "mid_block.resnets.1.conv2"
REWARD_BASELINES = ("none", "batch_mean")
FEATURE_LOSSES = ("pooled", "spatial")


def _positive_int_tuple(value, name: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) and v > 0 for v in value):
        raise ValueError(f"`{name}` must be a list of positive integers, got {value!r}.")
    return list(value)


class RepFusionConfig(PreTrainedConfig):
    r"""RepFusion (Yang & Wang, ICCV 2023): distill a diffusion model's features, at timesteps a policy picks per image,
    into a recognition backbone (`RepFusionDistiller`).

    Args:
        student: config dict (with `model_type`) of the student classifier whose backbone is distilled: the project's
            CNNs (`hf_methods_vgg`, `hf_methods_resnet12`) or transformers' `vit`. Its head is not trained here;
            `export_student_backbone` gives it a fresh head for the downstream labels.
        num_channels / image_size: the images the student, the policy and the teacher read.
        teacher_hidden_size: channels of the teacher feature at `teacher_hook` (256 in the official cifar10 DDPM).
        teacher_hook: name of the teacher UNet module whose output is the feature (the official
            `mid_block.resnets.1.conv2` of diffusers' `UNet2DModel`).
        num_train_timesteps: the teacher scheduler's timesteps; the teacher is fed the clean image at t in
            [0, num_train_timesteps) (no noise: the official "clean" variants).
        policy_num_timesteps: size of the policy's action space, K <= num_train_timesteps. K = num_train_timesteps
            (default) is the official per-timestep softmax; a smaller K is a coarser grid t_k = k * T // K.
        fixed_timestep: when set, every image uses this t and there is no policy (the fixed-timestep baseline; the
            official CelebA "maxtime1" setting is t = 0).
        policy_channels / policy_hidden_sizes: the policy CNN (official `PolicyNet_Cov`: conv 6, conv 16 with 5x5
            kernels and 2x2 pools, then fc 120, 84). Here the convs are padded and followed by an adaptive average pool
            to at most 5x5 so that 8x8 and 16x16 images work.
        reward_hidden_sizes: hidden widths of the reward head MLP on the pooled teacher feature (official 256, 256).
        kd_weight: weight of the feature regression (official 1.0).
        feature_loss: "pooled" (the official classification variant: MSE(GAP(P(h_S)), GAP(h_T))) or "spatial" (the
            official dense "CleanDense" variant: MSE over the maps, the student's bilinearly resized to the teacher's;
            CNN students only).
        entropy_reg: initial weight of the policy's entropy bonus (official 0.1; `EntropyDecayCallback` decays it).
        reward_baseline: "none" (official: reward -CE as it is) or "batch_mean" (the batch's mean reward is subtracted,
            a variance-reduction baseline the official code does not use).
        teacher_stop_at_hook: end the teacher's forward once the hooked module has run (the rest of the UNet is not
            needed; same features, about half the teacher cost).
    """

    model_type = "hf_methods_repfusion"
    student: dict | None = None
    num_channels: int = 3
    image_size: int = 32
    teacher_hidden_size: int = 256
    teacher_hook: str = DEFAULT_HOOK
    num_train_timesteps: int = 1000
    policy_num_timesteps: int | None = None
    fixed_timestep: int | None = None
    policy_channels: list[int] | tuple[int, ...] = (6, 16)
    policy_hidden_sizes: list[int] | tuple[int, ...] = (120, 84)
    reward_hidden_sizes: list[int] | tuple[int, ...] = (256, 256)
    kd_weight: float = 1.0
    feature_loss: str = "pooled"
    entropy_reg: float = 0.1
    reward_baseline: str = "none"
    teacher_stop_at_hook: bool = True

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        self.check_repfusion()

    def student_config(self) -> PreTrainedConfig:
        """The student's config object (built from the `student` dict)."""
        values = dict(self.student)
        return AutoConfig.for_model(values.pop("model_type"), **values)

    def check_repfusion(self):
        """Raise a ValueError naming the first bad field and how to fix it."""
        if isinstance(self.student, PreTrainedConfig):
            self.student = self.student.to_dict()
        if not isinstance(self.student, dict) or "model_type" not in self.student:
            raise ValueError(
                "`student` must be the config dict of the student classifier with its `model_type`, e.g. "
                "VGGConfig(num_channels=1, ...).to_dict(); got " + repr(self.student)[:80] + "."
            )
        for name in ("num_channels", "image_size", "teacher_hidden_size", "num_train_timesteps"):
            _positive_int(getattr(self, name), name)
        if not isinstance(self.teacher_hook, str) or not self.teacher_hook:
            raise ValueError(f"`teacher_hook` must name a module of the teacher UNet, got {self.teacher_hook!r}.")
        if self.policy_num_timesteps is None:
            self.policy_num_timesteps = self.num_train_timesteps
        k = self.policy_num_timesteps
        if not _is_int(k) or not 2 <= k <= self.num_train_timesteps:
            raise ValueError(
                f"`policy_num_timesteps` must be an integer in [2, num_train_timesteps={self.num_train_timesteps}] "
                f"(the policy cannot choose among more timesteps than the teacher's scheduler has), got {k!r}."
            )
        t = self.fixed_timestep
        if t is not None and (not _is_int(t) or not 0 <= t < self.num_train_timesteps):
            raise ValueError(
                f"`fixed_timestep` must be an integer in [0, num_train_timesteps={self.num_train_timesteps}) or empty "
                f"(the policy picks t), got {t!r}."
            )
        self.policy_channels = _positive_int_tuple(self.policy_channels, "policy_channels")
        self.policy_hidden_sizes = _positive_int_tuple(self.policy_hidden_sizes, "policy_hidden_sizes")
        self.reward_hidden_sizes = _positive_int_tuple(self.reward_hidden_sizes, "reward_hidden_sizes")
        for name in ("kd_weight", "entropy_reg"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0, got {getattr(self, name)!r}.")
        if self.feature_loss not in FEATURE_LOSSES:
            raise ValueError(f"`feature_loss` must be one of {FEATURE_LOSSES}, got {self.feature_loss!r}.")
        if self.reward_baseline not in REWARD_BASELINES:
            raise ValueError(f"`reward_baseline` must be one of {REWARD_BASELINES}, got {self.reward_baseline!r}.")
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` (the reward head's classes) must be at least 2, got {self.num_labels}.")
        student = self.student_config()
        if self.feature_loss == "spatial" and not getattr(student, "hidden_sizes", None):
            raise ValueError(
                f"`feature_loss` 'spatial' needs a CNN student (feature maps); a {student.model_type} student gives "
                "tokens: use feature_loss='pooled'."
            )
        if getattr(student, "num_channels", self.num_channels) != self.num_channels:
            raise ValueError(
                f"the student reads {student.num_channels}-channel images but `num_channels` is {self.num_channels}; "
                "make them equal."
            )

    def timesteps(self):
        """The teacher timestep of each of the policy's K actions: t_k = k * T // K (t_k = k when K = T)."""
        import torch

        k = torch.arange(self.policy_num_timesteps)
        return k * self.num_train_timesteps // self.policy_num_timesteps
