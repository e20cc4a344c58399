"""Arguments of `SpectralDiffusionTrainer` (Spectral Diffusion's distillation of a diffusion teacher into a slim
student): the loss weights, the spectrum weighting and the matched features."""

import math
from dataclasses import dataclass, field

from .frozen_models_config import FrozenTeacherConfig, check_weight

DEFAULT_FEATURES = (
    "mid_block and every up block (`up_blocks.<i>`), the names diffusers' UNet2DModel and the student share"
)


@dataclass
class SpectralDiffusionConfig(FrozenTeacherConfig):
    r"""
    [`FrozenTeacherConfig`] of [`SpectralDiffusionTrainer`]: L = L_DDPM + lambda_spatial * L_spatial +
    lambda_frequency * L_freq (Yang et al., CVPR 2023; `hf_methods.models.spectral_diffusion.losses`).

    Parameters:
        lambda_spatial (`float`, defaults to 0.1): weight of the spatial feature loss (the paper's lambda_s).
        lambda_frequency (`float`, defaults to 0.1): weight of the spectrum-weighted frequency loss (lambda_f).
            With both weights 0 the trainer trains with the DDPM loss alone and needs no teacher.
        spectrum_alpha (`float`, defaults to -1): exponent of the weights |F(resize(x0))|^alpha.
        spectrum_eps (`float`, defaults to 1e-6): added to |F(x0)| before the power (inferred safeguard).
        normalize_spectrum_weights (`bool`, defaults to True): weights scaled to mean 1 per image (inferred).
        student_feature_modules, teacher_feature_modules (`list[str]`, *optional*): names of the modules whose outputs
            are matched, pair by pair (same resolution); default: `mid_block` and every `up_blocks.<i>`.
    """

    lambda_spatial: float = field(default=0.1, metadata={"help": "Weight of the spatial feature loss (lambda_s)."})
    lambda_frequency: float = field(
        default=0.1, metadata={"help": "Weight of the spectrum-weighted frequency loss (lambda_f)."}
    )
    spectrum_alpha: float = field(default=-1.0, metadata={"help": "Exponent alpha of w = |F(resize(x0))|^alpha."})
    spectrum_eps: float = field(default=1e-6, metadata={"help": "Added to |F(x0)| before the power."})
    normalize_spectrum_weights: bool = field(
        default=True, metadata={"help": "Scale the spectrum weights to mean 1 per image."}
    )
    student_feature_modules: list[str] | None = field(
        default=None, metadata={"help": f"Student modules whose outputs are matched; default: {DEFAULT_FEATURES}."}
    )
    teacher_feature_modules: list[str] | None = field(
        default=None, metadata={"help": "Teacher modules matched to them, in the same order; default: the same names."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep `pixel_values` (the UNet's forward does not name it)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_weight(self.lambda_spatial, "lambda_spatial")
        check_weight(self.lambda_frequency, "lambda_frequency")
        if isinstance(self.spectrum_alpha, bool) or not math.isfinite(self.spectrum_alpha):
            raise ValueError(f"`spectrum_alpha` must be a finite number (the paper's -1), got {self.spectrum_alpha!r}.")
        if not self.spectrum_eps > 0:
            raise ValueError(f"`spectrum_eps` must be > 0 (keeps |F(x0)|^alpha finite), got {self.spectrum_eps!r}.")
        student, teacher = self.student_feature_modules, self.teacher_feature_modules
        if teacher is not None and student is None:
            raise ValueError(
                "`teacher_feature_modules` needs `student_feature_modules` (the pairs are matched in order)."
            )
        if student is not None and teacher is not None and len(student) != len(teacher):
            raise ValueError(
                f"`student_feature_modules` ({len(student)}) and `teacher_feature_modules` ({len(teacher)}) must "
                "list the same number of modules: they are matched pair by pair."
            )
        if student is not None and not student:
            raise ValueError("`student_feature_modules` must name at least one module (or be empty for the default).")

    @property
    def distills(self) -> bool:
        return self.lambda_spatial > 0 or self.lambda_frequency > 0
