"""SWS: the auxiliary network and learngene of "Exploring Learngene via Stage-wise Weight Sharing for
Initializing Variable-sized Models" (Xia et al., IJCAI 2024, arXiv 2404.16897).

The auxiliary network of L = n_1 + ... + n_S layers is divided into S stages; every layer of a stage runs that
stage's single layer of weights (recursive weight sharing), so distillation packs what each stage does into S
layers. A descendant of depth D assigns each of its layers to a stage (`layers_source`) and copies its weights.

Deviations from the official code, on purpose:
- Auxiliary network and descendants run the same stock transformers architecture (e.g. ViT with CLS pooling),
  so `expand(L)` reproduces the auxiliary network exactly; the official aux net is a mean-pooled DeiT
  without CLS token whose final-norm placement differs from the descendants'.
- Head counts are kept: the official Aux-S has 12 heads and Des-S 6, regrouping the copied qkv rows. Here a
  descendant has the learngene's head count unless `num_attention_heads` is overridden (then a warning).
- Only the D=12 mapping is published; other depths use `default_layers_source` (documented below).

Starting from a pretrained teacher (not in the paper): `SWSModel.from_teacher(teacher)` sets each stage to the mean
of the teacher layers it covers (`SWSModel.teacher_stage_split`) and copies the embeddings, norm and head.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Set

import torch
from torch import nn

from ...engine.learngene import LearngeneModel, _check_depth
from .configuration_sws import SWSConfig

# The paper's released mappings, keyed by the auxiliary stage sizes, then by descendant depth (SWS README).
PUBLISHED_LAYERS_SOURCE = {(3, 3, 4, 3, 3): {12: [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]}}


def stage_of_layers(stage_sizes: list[int]) -> list[int]:
    """The stage of every auxiliary layer: (3, 3, 4) -> [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]."""
    return [s for s, n in enumerate(stage_sizes) for _ in range(n)]


def default_layers_source(stage_sizes: list[int], depth: int) -> list[int]:
    """The default stage of every layer of a depth-`depth` descendant (no mapping is published but D=12).

    Monotone (stages keep their order) and close to proportional: stage s gets about depth * n_s / L layers,
    by largest remainder (ties to the earlier stage), with at least one layer per stage when depth >= S, so every
    stage's knowledge is inherited. With fewer layers than stages, `depth` evenly spaced stages are used, the
    first and last included. At depth L the result is exactly the auxiliary network's own stage assignment.
    """
    _check_depth(depth)
    num_stages, total = len(stage_sizes), sum(stage_sizes)
    if depth < num_stages:
        if depth == 1:
            return [0]
        return [round(i * (num_stages - 1) / (depth - 1)) for i in range(depth)]
    quotas = [depth * n / total for n in stage_sizes]
    counts = [max(1, int(q)) for q in quotas]
    while sum(counts) < depth:  # give the next layer to the stage furthest below its quota
        s = max(range(num_stages), key=lambda i: (quotas[i] - counts[i], -i))
        counts[s] += 1
    while sum(counts) > depth:  # the minimum of one layer overshot: take from the stage furthest above its quota
        s = max((i for i in range(num_stages) if counts[i] > 1), key=lambda i: (counts[i] - quotas[i], i))
        counts[s] -= 1
    return stage_of_layers(counts)


def check_layers_source(layers_source, depth: int, num_stages: int, allow_any_order: bool = False) -> list[int]:
    """`layers_source` as a list of ints, or a ValueError that says what is wrong and how to fix it."""
    if isinstance(layers_source, (Mapping, Set)):
        raise ValueError(
            f"layers_source must be a list of stage indices, one per layer in order, such as [0, 0, 1, 2], got a "
            f"{type(layers_source).__name__} ({layers_source!r}); a mapping or set gives no per-layer order."
        )
    if isinstance(layers_source, str):
        layers_source = [s.strip() for s in layers_source.split(",")]
    try:
        mapping = [int(s) for s in layers_source]
    except (TypeError, ValueError):
        raise ValueError(
            f"layers_source must be a list of stage indices such as [0, 0, 1, 2] (or '0,0,1,2'), got {layers_source!r}."
        ) from None
    if any(isinstance(s, bool) or (isinstance(s, float) and not s.is_integer()) for s in layers_source):
        raise ValueError(f"layers_source must hold integer stage indices, got {list(layers_source)!r}.")
    if len(mapping) != depth:
        raise ValueError(
            f"layers_source has {len(mapping)} entries but the descendant has {depth} layers; "
            "give one stage index per layer."
        )
    bad = [s for s in mapping if not 0 <= s < num_stages]
    if bad:
        raise ValueError(
            f"layers_source has stage indices {bad} out of range: this learngene has stages 0..{num_stages - 1}."
        )
    if not allow_any_order and any(b < a for a, b in itertools.pairwise(mapping)):
        raise ValueError(
            f"layers_source {mapping} goes back to an earlier stage; stages must be non-decreasing so that early "
            "layers inherit early stages. Pass allow_any_order=True if you mean it."
        )
    return mapping


class SWSGene(nn.Module):
    """One stock layer of weights per stage (`stages[s]`), parameter names as in the stock layer."""

    def __init__(self, stages: list[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)


class SWSModel(LearngeneModel):
    """An SWS learngene. Its forward is the auxiliary network (`config.aux_num_layers` layers, stage-wise shared
    weights); train it by distillation (`DistillationTrainer`), then `expand(D, layers_source)` gives stock
    models of any depth D whose layer i copies stage `layers_source[i]`. `save_pretrained` stores only the S stage
    layers plus the embeddings, final norm and head."""

    config_class = SWSConfig
    method_name = "SWS"
    gene_description = "one layer of weights per stage; descendant layer i copies stage layers_source[i]"

    def build_gene(self, template):
        # Every stage starts as an independently initialized stock layer (timm TruncNormal(0.02) in the paper).
        stages = [template] + [self.fresh_layer(template) for _ in range(len(self.config.stage_sizes) - 1)]
        return SWSGene(stages)

    @property
    def num_stages(self) -> int:
        return len(self.config.stage_sizes)

    def stage_parameters(self, stage: int) -> dict[str, torch.Tensor]:
        return dict(self.gene.stages[stage].named_parameters())

    def default_layers_source(self, depth: int) -> list[int]:
        """The published mapping for `depth` when there is one (and `use_published_presets`), else the default
        rule of `default_layers_source`. At the auxiliary depth: the auxiliary network's own stages."""
        sizes = self.config.stage_sizes
        if depth == sum(sizes):
            return stage_of_layers(sizes)
        preset = PUBLISHED_LAYERS_SOURCE.get(tuple(sizes), {}).get(depth)
        if preset is not None and self.config.use_published_presets:
            return list(preset)
        return default_layers_source(sizes, depth)

    def layer_parameters(self, index, depth):
        return self.stage_parameters(self.default_layers_source(depth)[index])

    # --- starting from a pretrained teacher ---------------------------------------------------------------
    teacher_inits = ("stage_mean", "random")

    @classmethod
    def _teacher_config_defaults(cls, teacher):
        return {}  # the depth follows stage_sizes (default 3,3,4,3,3), not the teacher

    def teacher_stage_split(self, teacher_num_layers: int) -> list[int]:
        """The stage each of a teacher's layers is averaged into: the teacher's layers divided among the stages in
        proportion to the stage sizes, in order, by the default mapping rule (`default_layers_source(stage_sizes,
        teacher_num_layers)`: stage s gets about teacher_num_layers * n_s / L teacher layers, largest remainder, at
        least one each). A teacher as deep as the auxiliary network maps exactly onto the auxiliary network's own
        stages. The published D=12 preset is a descendant mapping and is not used here. A teacher with fewer layers
        than stages is an error: a stage would cover no teacher layer."""
        if teacher_num_layers < self.num_stages:
            raise ValueError(
                f"the teacher has {teacher_num_layers} layers but this SWS learngene has {self.num_stages} stages "
                f"({self.config.stage_sizes}); each stage is the mean of at least one teacher layer, so use at most "
                f"{teacher_num_layers} stages (stage_sizes) or init='random'."
            )
        return default_layers_source(self.config.stage_sizes, teacher_num_layers)

    def fit_gene(self, teacher_layers, init):
        """Stage s = the element-wise mean (computed in float64) of the teacher layers `teacher_stage_split` gives
        it; a stage covering a single teacher layer is an exact copy of it."""
        split = self.teacher_stage_split(len(teacher_layers))
        fitted = {}
        for stage in range(self.num_stages):
            covered = [index for index, s in enumerate(split) if s == stage]
            for name in self.layer_parameter_names:
                total = sum(teacher_layers[index][name].detach().to(torch.float64) for index in covered)
                fitted[f"stages.{stage}.{name}"] = (total / len(covered), f"mean of teacher layers {covered}")
        return fitted

    def teacher_provenance(self, teacher_num_layers):
        split = self.teacher_stage_split(teacher_num_layers)
        covered = [[i for i, s in enumerate(split) if s == stage] for stage in range(self.num_stages)]
        return {"stage_teacher_layers": covered}

    def describe_layer(self, index, depth):
        return f"stage {self.default_layers_source(depth)[index]}"

    def expand(
        self,
        num_layers: int,
        layers_source=None,
        *,
        allow_any_order: bool = False,
        model_class=None,
        **config_overrides,
    ):
        """A stock model of `num_layers` layers whose layer i copies stage `layers_source[i]`.

        `layers_source`: one stage index per layer (a list or "0,0,1,..."); non-decreasing unless
        `allow_any_order=True`. Left out: the published mapping for this depth if there is one, else the
        default rule (see `default_layers_source`). The mapping used is recorded in
        `model.config.learngene_ancestry["layers_source"]` and in the expansion report.
        """
        _check_depth(num_layers)
        if layers_source is None:
            mapping = self.default_layers_source(num_layers)
        else:
            mapping = check_layers_source(layers_source, num_layers, self.num_stages, allow_any_order)
        model = self._expand(
            num_layers,
            model_class,
            config_overrides,
            lambda i, depth: self.stage_parameters(mapping[i]),
            lambda i, depth: f"stage {mapping[i]}",
        )
        model.config.learngene_ancestry["layers_source"] = mapping
        return model
