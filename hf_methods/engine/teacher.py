"""The practitioner's baseline: a smaller stock model initialized from some of a pretrained teacher's layers.

DistilBERT initializes its student from every other layer of BERT; "keep the first k layers" is as common. A
learngene should beat this, so reports put it beside every learngene (`select_teacher_layers`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set

from transformers import PreTrainedModel

from ..compat import build_from_config
from .architectures import layer_list, spec_for
from .learngene import build_stock_config, fill_stock_model, resolve_stock_class
from .report import ExpansionReport

logger = logging.getLogger(__name__)

LAYER_STRATEGIES = ("first", "even")


def teacher_layer_indices(teacher_num_layers: int, num_layers: int, strategy="even") -> list[int]:
    """Which of a teacher's `teacher_num_layers` layers a `num_layers`-layer model keeps, in order.

    - `"first"`: layers 0 .. num_layers-1.
    - `"even"`: layer `floor(i * teacher_num_layers / num_layers)` for i = 0 .. num_layers-1, i.e. the first layer of
      each of `num_layers` equal blocks of the teacher. The first layer is always kept; the last only when
      num_layers = teacher_num_layers. 6 -> 3 keeps 0, 2, 4; 12 -> 6 keeps 0, 2, 4, 6, 8, 10 (DistilBERT's "one layer
      out of two"); 12 -> 4 keeps 0, 3, 6, 9. Why this rule: kept layer i sits at relative depth about i/num_layers
      in the teacher, the position TLEG's rule gives layer i of a depth-num_layers network (c = i/D, the last layer
      at (D-1)/D, never 1), so on a teacher whose layers are linear in depth, "even" selection and TLEG expansion
      give the same layers whenever num_layers divides the teacher's depth.
      (DistilBERT's released student kept 0, 2, 4, 7, 9, 11, first and last: pass that list to reproduce it.)
    - a list of teacher layer indices: strictly increasing, each in 0 .. teacher_num_layers-1, one per layer.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}.")
    if num_layers > teacher_num_layers:
        raise ValueError(
            f"num_layers={num_layers} but the teacher has only {teacher_num_layers} layers; selecting teacher layers "
            "builds a model at most as deep as the teacher (a learngene's expand() goes deeper)."
        )
    if isinstance(strategy, str):
        if strategy == "first":
            return list(range(num_layers))
        if strategy == "even":
            return [i * teacher_num_layers // num_layers for i in range(num_layers)]
        raise ValueError(
            f"strategy={strategy!r} is unknown; use 'first', 'even' or a list of teacher layer indices such as "
            "[0, 2, 4]."
        )
    if isinstance(strategy, (Mapping, Set)):
        raise ValueError(
            f"strategy must be 'first', 'even' or a list of teacher layer indices in order, such as [0, 2, 4], got a "
            f"{type(strategy).__name__} ({strategy!r})."
        )
    try:
        indices = list(strategy)
    except TypeError:
        raise ValueError(
            f"strategy must be 'first', 'even' or a list of teacher layer indices, got {strategy!r}."
        ) from None
    if any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
        raise ValueError(f"strategy must list integer teacher layer indices, got {indices!r}.")
    if len(indices) != num_layers:
        raise ValueError(
            f"strategy lists {len(indices)} teacher layers but num_layers={num_layers}; give one per layer."
        )
    bad = [i for i in indices if not 0 <= i < teacher_num_layers]
    if bad:
        raise ValueError(
            f"teacher layer indices {bad} are out of range: the teacher has layers 0..{teacher_num_layers - 1}."
        )
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise ValueError(
            f"teacher layer indices {indices} must be strictly increasing (each teacher layer once, in order)."
        )
    return indices


def select_teacher_layers(
    teacher: PreTrainedModel, num_layers: int, strategy="even", *, model_class=None, **config_overrides
) -> PreTrainedModel:
    """A stock model with `num_layers` layers initialized from a pretrained teacher's own layers: the baseline a
    learngene has to beat.

    The result has the teacher's class (or `model_class`, of the same architecture), config (with `num_layers`
    layers and `config_overrides` applied), and bit-exact copies of the teacher's embeddings, final norm, head and
    the layers chosen by `strategy` (see `teacher_layer_indices`: "first", "even", or a list of indices; layer i of
    the result is teacher layer `indices[i]`). A head whose label space changed, or that the teacher lacks, is new
    and says so. Works for every architecture the engine knows (`register_architecture`).

    `model.expansion_report` accounts for every tensor (source "teacher", with the teacher layer of each layer),
    and `model.config.layer_selection` records `{"teacher", "teacher_num_layers", "strategy", "layers"}` (saved in
    its config.json).
    """
    if not isinstance(teacher, PreTrainedModel):
        raise TypeError(f"teacher must be a transformers PreTrainedModel, got {type(teacher).__name__}.")
    model_type = teacher.config.model_type
    spec = spec_for(model_type)
    _, teacher_layers = layer_list(teacher, spec)
    indices = teacher_layer_indices(len(teacher_layers), num_layers, strategy)
    cls = resolve_stock_class(model_class, type(teacher).__name__, model_type, "teacher")
    target = build_from_config(cls, build_stock_config(cls, teacher.config.to_dict(), num_layers, **config_overrides))
    target.to(device=teacher.device, dtype=teacher.dtype)
    name = strategy if isinstance(strategy, str) else "list"
    report = ExpansionReport(f"teacher layers ({name})", num_layers, cls.__name__, origin="teacher")
    fill_stock_model(
        target,
        teacher,
        spec,
        report,
        lambda i: dict(teacher_layers[indices[i]].named_parameters()),
        lambda i: f"teacher layer {indices[i]}",
        layer_source="teacher",
        origin="teacher",
        origin_class=type(teacher).__name__,
    )
    target.name_or_path = target.config.name_or_path = ""  # a new model, not the teacher's checkpoint (recorded below)
    target.config.layer_selection = {
        "teacher": teacher.name_or_path or None,
        "teacher_num_layers": len(teacher_layers),
        "strategy": name,
        "layers": indices,
    }
    target.expansion_report = report
    logger.info(report.summary())
    return target
