"""Arguments for `DistillationTrainer`."""

from dataclasses import dataclass, field
from typing import Literal

from .frozen_models_config import FrozenTeacherConfig, check_alpha, check_choices, check_temperature


@dataclass
class DistillationConfig(FrozenTeacherConfig):
    r"""
    [`~transformers.TrainingArguments`] plus the knowledge-distillation settings of [`DistillationTrainer`] (the
    teacher's fields come from [`FrozenTeacherConfig`]).

    The training loss is `(1 - alpha) * CE(student, labels) + alpha * KD(student, teacher)`.

    Parameters:
        distillation_type (`str`, *optional*, defaults to `"soft"`):
            DeiT naming. `"soft"`: `T^2 * KL(softmax(teacher / T) || softmax(student / T))`. `"hard"`: cross-entropy of
            the student against the teacher's argmax. `"none"`: plain cross-entropy on the labels, no teacher.
        alpha (`float`, *optional*, defaults to `0.5`):
            Weight of the distillation term, in `[0, 1]`.
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the soft distillation term (> 0).
        kd_normalization (`str`, *optional*, defaults to `"numel"`):
            What the summed soft KL is divided by. `"numel"`: the number of logit elements (items x classes), the
            convention of DeiT and TLEG, equal to `"batchmean"` / num_classes. `"batchmean"`: the number of items
            (samples, or tokens for language models), i.e. the mathematically proper KL per item.
        teacher_model_name_or_path (`str`, *optional*):
            Hub id or local folder of the teacher, used when the trainer gets no `teacher_model`.
        teacher_model_init_kwargs (`dict` or `str`, *optional*):
            Keyword arguments for the teacher's `from_pretrained` (a JSON string on the command line).
        teacher_dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the teacher runs in. `"auto"` keeps the dtype it was given or loaded with. Losses are always computed
            in float32.
    """

    distillation_type: Literal["soft", "hard", "none"] = field(
        default="soft",
        metadata={
            "help": "'soft': T^2 * KL(teacher || student) on temperature-scaled softmaxes; 'hard': cross-entropy "
            "against the teacher's argmax (DeiT); 'none': plain cross-entropy, no teacher."
        },
    )
    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the distillation term in [0, 1]: loss = (1 - alpha) * CE + alpha * KD."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Temperature of the soft distillation term (> 0)."})
    kd_normalization: Literal["numel", "batchmean"] = field(
        default="numel",
        metadata={
            "help": "Divide the summed soft KL by the number of logit elements ('numel', DeiT/TLEG convention, "
            "= batchmean / num_classes) or by the number of items ('batchmean')."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_choices(self, {"distillation_type": ("soft", "hard", "none"), "kd_normalization": ("numel", "batchmean")})
        check_alpha(self.alpha)
        check_temperature(self.temperature)
