"""DeRy's training-free reassembly search: NASWOT scores candidate networks built from one block per position (at most
one per group of the zoo partition, CNN blocks before ViT blocks) whose parameter count lies in a budget, and a
randomized greedy walk over the shuffled blocks, restarted `trials` times, keeps the best; when the walk finds no
network in the budget (a tight budget few reassemblies fit), every fitting reassembly is scored instead if there are
few enough (an addition: the official search just fails then).

Follows the official `simlarity/zeroshot_reassembly.py` and `simlarity/zero_nas/naswot.py` (`Adamdad/DeRy@d8530b3`):
a block that fills a free position of a free group joins the selection; a block that collides (same position or same
group) replaces the colliding blocks when the resulting complete network fits the budget and scores higher. Two
differences, because the official loop does not keep what it scored: each trial returns the best complete, in-budget
network it scored (the official returns the selection it ends with, which may be unscored, incomplete or over the
budget), and a fill that completes the selection is scored too. The budget is on parameters only (the official also
bounds FLOPs at 224x224; `hf_methods.engine.counting.count_flops` measures them if needed).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .configuration_dery import DeRyConfig
from .modeling_dery import DeRyForImageClassification, load_source, reassembly_num_parameters
from .partition import Block, ZooPartition
from .similarity import source_nodes

# The modules whose outputs NASWOT codes (official list; the attention modules are found by class name, and the
# activations of transformers, e.g. ViT's GELUActivation, are not torch.nn activations).
NASWOT_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.PReLU, nn.Hardswish, nn.ELU, nn.SELU, nn.Mish, nn.Linear, nn.Dropout,
    nn.MultiheadAttention,
)  # fmt: skip


MAX_ENUMERATED = 20_000  # reassemblies the fallback and the no-fit message look at, at most
MAX_FALLBACK = 200  # fitting reassemblies the fallback scores, at most


def _naswot_module(module: nn.Module) -> bool:
    return (
        isinstance(module, NASWOT_MODULES)
        or type(module).__module__ == "transformers.activations"
        or type(module).__name__.endswith("Attention")
    )


def _batches(inputs, batch_size: int, num_batches: int | None):
    if torch.is_tensor(inputs):
        inputs = inputs.split(batch_size)
    for i, batch in enumerate(inputs):
        if num_batches is not None and i >= num_batches:
            break
        yield batch["pixel_values"] if isinstance(batch, Mapping) else batch


def naswot_score(model: nn.Module, inputs, *, batch_size: int = 32, num_batches: int | None = 5) -> float:
    """NASWOT (Mellor et al., 2021) as DeRy uses it: on each batch, the binary codes c = (output > 0) of every
    activation / Linear / Dropout / attention module, flattened per image, build K = Σ c cᵀ + (1-c)(1-c)ᵀ; the score
    is log|K| / batch size, averaged over the batches (official: 5 batches of 32 target-train images). -inf when K is
    singular (e.g. dead units: every image gets the same code).

    The model runs in train mode as in the official code (BatchNorm on batch statistics); its mode and its buffers
    (BatchNorm running statistics) are restored afterwards, so scoring leaves no trace. `inputs`: a tensor of images
    (split into `batch_size` batches) or an iterable of batches."""
    hooked = [m for m in model.modules() if _naswot_module(m)]
    if not hooked:
        raise ValueError(f"{type(model).__name__} has no activation, Linear, Dropout or attention module to score.")
    kernel = {}

    def hook(module, args, output):
        while isinstance(output, (tuple, list)):
            output = output[0]
        codes = (output.detach().reshape(output.shape[0], -1) > 0).to(torch.float64)
        kernel["K"] = kernel["K"] + codes @ codes.T + (1 - codes) @ (1 - codes).T

    handles = [m.register_forward_hook(hook) for m in hooked]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    scores = []
    try:
        model.train()
        device = next(model.parameters()).device
        with torch.no_grad():
            for batch in _batches(inputs, batch_size, num_batches):
                if len(batch) < 2:
                    raise ValueError("naswot_score needs batches of at least 2 images.")
                kernel["K"] = torch.zeros(len(batch), len(batch), dtype=torch.float64, device=device)
                model(pixel_values=batch.to(device))
                sign, logdet = torch.linalg.slogdet(kernel["K"])
                scores.append(float(logdet) / len(batch) if sign > 0 else -math.inf)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
    if not scores:
        raise ValueError("naswot_score got no images.")
    return float(np.mean(scores))


@dataclass
class Reassembly:
    """The network the search chose: its `config` (ready for `DeRyForImageClassification.from_sources`), the
    partition `blocks` it takes (position order), its NASWOT `score` and `num_parameters`, and how many distinct
    candidates were scored."""

    config: DeRyConfig
    blocks: list[Block]
    score: float
    num_parameters: int
    candidates_scored: int


def cnn_before_vit(selection, kinds: Mapping[Block, str]) -> bool:
    """The official `check_valid`: every CNN block sits before every ViT block."""
    cnn = [b.index for b in selection if b is not None and kinds[b] == "cnn"]
    vit = [b.index for b in selection if b is not None and kinds[b] == "vit"]
    return not cnn or not vit or max(cnn) < min(vit)


def search_reassembly(
    partition: ZooPartition,
    sources: Mapping[str, str],
    inputs,
    *,
    max_params: int,
    min_params: int = 0,
    trials: int = 10,
    batch_size: int = 32,
    num_batches: int = 5,
    seed: int = 0,
    source_models: Mapping | None = None,
    trust_remote_code: bool = False,
    score_fn: Callable[[nn.Module], float] | None = None,
    **config_kwargs,
) -> Reassembly:
    """The best-scoring reassembly with `min_params < parameters <= max_params` (the official bounds).

    Args:
        partition: `partition_zoo`'s result, made with node names.
        sources: {model name in the partition: its Hub id or local folder} (what the config records).
        inputs: target-train images for NASWOT (`naswot_score`: `num_batches` batches of `batch_size`).
        max_params / min_params: the parameter budget of the whole network (head included).
        trials: random restarts of the greedy walk (official 10).
        source_models: {model name: the loaded model} (else loaded with `load_source`: `AutoModel.from_pretrained(
            source, trust_remote_code=trust_remote_code)`).
        score_fn: replaces NASWOT (model -> score, higher is better).
        config_kwargs: the other `DeRyConfig` fields (num_channels, image_size, num_labels, id2label, stem, ...).
    A budget no reassembly of the partition fits is a ValueError that gives the sizes the valid reassemblies have."""
    if partition.nodes is None:
        raise ValueError("search_reassembly needs a partition made with node names (partition_zoo(..., nodes=names)).")
    if not isinstance(max_params, int) or not isinstance(min_params, int) or not 0 <= min_params < max_params:
        raise ValueError(f"the budget needs integers 0 <= min_params < max_params, got ({min_params}, {max_params}].")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}.")
    missing = sorted(set(partition.blocks) - set(sources))
    if missing:
        raise ValueError(f"sources has no Hub id or folder for model(s) {missing} of the partition.")
    loaded = {}
    for name in partition.blocks:
        model = (source_models or {}).get(name)
        loaded[name] = model if model is not None else load_source(sources[name], trust_remote_code=trust_remote_code)
    by_source = {sources[name]: model for name, model in loaded.items()}
    pool = [block for blocks in partition.blocks.values() for block in blocks]
    kinds = {b: source_nodes(loaded[b.model])[b.start].kind for b in pool}
    k = partition.num_blocks
    base = {"num_labels": config_kwargs.pop("num_labels", 2), **config_kwargs}

    def config_of(selection) -> DeRyConfig:
        blocks = []
        for b in selection:
            start, end = partition.node_names(b)
            blocks.append({"source": sources[b.model], "start": start, "end": end, "type": kinds[b]})
        return DeRyConfig.from_blocks(blocks, source_models=by_source, **base)

    sizes: dict[tuple, int] = {}
    scores: dict[tuple, float] = {}

    def size_of(selection) -> int:
        key = tuple(selection)
        if key not in sizes:
            sizes[key] = reassembly_num_parameters(config_of(selection), by_source)
        return sizes[key]

    def score_of(selection) -> float:
        key = tuple(selection)
        if key not in scores:
            with torch.random.fork_rng():
                torch.manual_seed(seed)  # the stem, adapters and head of the candidate
                model = DeRyForImageClassification.from_sources(config_of(selection), source_models=by_source)
            scores[key] = (
                score_fn(model)
                if score_fn
                else naswot_score(model, inputs, batch_size=batch_size, num_batches=num_batches)
            )
        return scores[key]

    def fits(selection) -> bool:
        return min_params < size_of(selection) <= max_params

    rng = random.Random(seed)
    best, best_score = None, -math.inf
    for _ in range(trials):
        order = list(pool)
        rng.shuffle(order)
        selection: list[Block | None] = [None] * k
        trial_best, trial_score = None, -math.inf
        for block in order:
            group = partition.group(block)
            collides = [
                i
                for i, b in enumerate(selection)
                if b is not None and (i == block.index or partition.group(b) == group)
            ]
            candidate = [None if i in collides else b for i, b in enumerate(selection)]
            candidate[block.index] = block
            if not cnn_before_vit(candidate, kinds):
                continue
            complete = all(b is not None for b in candidate)
            if not collides:  # a free position of a free group: it joins (scored once the network is complete)
                selection = candidate
                if complete and fits(candidate) and score_of(candidate) > trial_score:
                    trial_best, trial_score = list(candidate), score_of(candidate)
                continue
            if not complete or not fits(candidate):
                continue
            if score_of(candidate) > trial_score:
                selection, trial_best, trial_score = candidate, list(candidate), score_of(candidate)
        if trial_best is not None and trial_score > best_score:
            best, best_score = trial_best, trial_score
    fallback = False
    if best is None:  # the walk found nothing: when the space is small, look at every reassembly that fits
        valid = _valid_reassemblies(partition, pool, kinds)
        fitting = [list(s) for s in valid or () if fits(s)]
        if not fitting:
            raise ValueError(_no_fit_message(valid, size_of, min_params, max_params, trials))
        fallback = True
        for selection in fitting[:MAX_FALLBACK]:
            if score_of(selection) > best_score:
                best, best_score = selection, score_of(selection)
    config = config_of(best)
    config.reassembly = {
        "search": ("NASWOT" if score_fn is None else "custom score")
        + (", every fitting reassembly (the greedy walk found none)" if fallback else ", randomized greedy"),
        "score": best_score,
        "min_params": min_params,
        "max_params": max_params,
        "trials": trials,
        "groups": [partition.group(b) for b in best],
        "partition_objective": partition.objective,
        "num_parameters": size_of(best),
    }
    return Reassembly(config, best, best_score, size_of(best), len(scores))


def _valid_reassemblies(partition, pool, kinds) -> list[tuple[Block, ...]] | None:
    """Every valid reassembly (one block per position, distinct groups, CNN before ViT), or None when there are more
    than `MAX_ENUMERATED` combinations to look at."""
    per_position = [[b for b in pool if b.index == i] for i in range(partition.num_blocks)]
    if math.prod(len(p) for p in per_position) > MAX_ENUMERATED:
        return None
    return [
        s
        for s in itertools.product(*per_position)
        if len({partition.group(b) for b in s}) == len(s) and cnn_before_vit(s, kinds)
    ]


def _no_fit_message(valid, size_of, min_params, max_params, trials) -> str:
    budget = f"({min_params:,}, {max_params:,}]"
    if valid is None:
        return (
            f"no reassembly with parameters in {budget} was found in {trials} trials of the search; widen the budget "
            "(or raise trials)."
        )
    if not valid:
        return (
            "the partition admits no valid reassembly (one block per position, each from a different group, CNN "
            "blocks before ViT blocks); partition the zoo again (another seed, or compare_across_positions)."
        )
    found = sorted(size_of(s) for s in valid)
    return (
        f"no reassembly fits the parameter budget {budget}: the {len(valid)} valid reassemblies of this partition "
        f"have {found[0]:,} to {found[-1]:,} parameters; choose a budget that overlaps that range."
    )
