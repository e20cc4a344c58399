"""Arguments shared by the trainers that hold frozen models (`FrozenModelsTrainer`, `FrozenTeacherTrainer`), and the
checks of the knobs their methods share (see "One vocabulary" in the README)."""

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from transformers import TrainingArguments

FROZEN_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_choices(config, choices: dict[str, tuple]) -> None:
    """Raise a ValueError naming the first field of `config` whose value is not among its allowed ones."""
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(config, name)!r}.")


def _is_real(value) -> bool:
    """A finite int or float, not a bool (True would silently count as 1)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_alpha(alpha: float) -> None:
    """`alpha`: the weight of the distillation part in `(1 - alpha) * CE + alpha * KD`, a finite number in [0, 1]."""
    if not (_is_real(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(
            f"`alpha` must be a number in [0, 1] (the weight of the distillation term in the convex mix), got "
            f"{alpha!r}; e.g. alpha=0.5."
        )


def check_temperature(temperature: float) -> None:
    """`temperature`: the softmax temperature of a soft distillation term, a finite number > 0."""
    if not (_is_real(temperature) and temperature > 0):
        raise ValueError(
            f"`temperature` must be a finite number > 0 (the softmax temperature of the soft KD term), got "
            f"{temperature!r}; e.g. temperature=1.0."
        )


def check_weight(value, name: str) -> None:
    """An unbounded loss weight (`lambda_<term>`, RDD's `aux_weight`): a finite number >= 0."""
    if not (_is_real(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0 (a loss weight), got {value!r}; 0 turns the term off.")


@dataclass
class FrozenModelsConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] of a trainer that holds frozen models beside the model it trains (see
    [`FrozenModelsTrainer`]).

    It adds no field: what every such trainer needs beyond `TrainingArguments` is that the fields describing its
    frozen models are valid. A frozen model `<name>` (`"teacher"`; CPT's `"large"` and `"small"`) is described by three
    fields that a subclass declares, listing `<name>` in `frozen_models`:

    - `<name>_model_name_or_path`: Hub id or folder, used when the trainer is not given the model itself;
    - `<name>_model_init_kwargs`: keyword arguments of its `from_pretrained`, a dict or a JSON object string on the
      command line (list the field in `_VALID_DICT_FIELDS` too);
    - `<name>_dtype`: one of `FROZEN_DTYPES`; `"auto"` keeps the dtype it was given or loaded with. Losses are computed
      in float32 whatever it is.

    `__post_init__` checks the last two.
    """

    frozen_models: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        super().__post_init__()
        for name in self.frozen_models:
            dtype = getattr(self, f"{name}_dtype")
            if dtype not in FROZEN_DTYPES:
                raise ValueError(f"`{name}_dtype` must be one of {FROZEN_DTYPES}, got {dtype!r}.")
            kwargs = getattr(self, f"{name}_model_init_kwargs")
            if kwargs is not None and not isinstance(kwargs, dict):
                raise ValueError(
                    f"`{name}_model_init_kwargs` must be a dict or a JSON object string such as "
                    f'\'{{"dtype": "bfloat16"}}\', got {kwargs!r}.'
                )


@dataclass
class FrozenTeacherConfig(FrozenModelsConfig):
    r"""
    [`FrozenModelsConfig`] of a trainer that distills a frozen teacher into the model it trains (see
    [`FrozenTeacherTrainer`]): the teacher's fields only. Each method's config adds the loss fields its trainer uses.

    Parameters:
        teacher_model_name_or_path (`str`, *optional*):
            Hub id or local folder of the teacher, used when the trainer gets no `teacher_model`.
        teacher_model_init_kwargs (`dict` or `str`, *optional*):
            Keyword arguments for the teacher's `from_pretrained` (a JSON string on the command line).
        teacher_dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the teacher runs in. `"auto"` keeps the dtype it was given or loaded with. Losses are always computed
            in float32.
    """

    frozen_models: ClassVar[tuple[str, ...]] = ("teacher",)
    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["teacher_model_init_kwargs"]

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of the teacher, used when the trainer gets no `teacher_model`."},
    )
    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for the teacher's `from_pretrained`, as a dict or a JSON string."},
    )
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={"help": "Dtype the teacher runs in; 'auto' keeps its own. Losses are computed in float32."},
    )
