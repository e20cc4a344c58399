"""DeRy's functional similarity: node features of any model (forward hooks) and the similarity of two sets of
features (linear CKA, the official default; RBF-CKA and LR, the official alternatives).

Where the nodes are: `block_nodes(model)` reads them from the live model (never from hard-coded names): the layers of
a stock transformers architecture the engine knows (ViT in transformers 5.x: `layers.<i>` of the base model, i.e.
`vit.layers.<i>` of a `ViTForImageClassification`), or the blocks `stages.<s>.<b>` of the project's VGG and ResNet-12.
Node names are relative to `model.base_model`, so the same name works on a ViT with or without its head.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

SIMILARITY_MEASURES = ("cka", "rbf_cka", "lr")


# --- where the nodes are ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One node of a source model: a module at a block boundary. `kind` is "cnn" (maps in, maps out) or "vit" (token
    sequences in and out); `in_width` / `out_width` are the channels or hidden size it reads and writes; `pool_after`
    says that the source model max-pools its output before the next node (the project convnets' stage ends), which a
    block ending there must do too."""

    name: str
    module: nn.Module
    kind: str
    in_width: int
    out_width: int
    pool_after: bool = False


def source_nodes(model: nn.Module) -> list[Node]:
    """The block-boundary nodes of `model`, in forward order. Known: the project's `VGGForImageClassification` and
    `ResNet12ForImageClassification` (one node per block, `stages.<s>.<b>`), and the stock transformers architectures
    of `hf_methods.engine.architectures` with a layer stack of token sequences (ViT: `layers.<i>`). Anything else is a
    ValueError that says what is supported."""
    from ...engine.architectures import ARCHITECTURES
    from ..convnets.modeling_convnets import ConvNetPreTrainedModel

    body = getattr(model, "base_model", model)
    config = getattr(model, "config", None)
    if isinstance(body, ConvNetPreTrainedModel):
        nodes, width = [], config.num_channels
        for s, stage in enumerate(body.stages):
            for b, block in enumerate(stage):
                out = config.hidden_sizes[s]
                nodes.append(Node(f"stages.{s}.{b}", block, "cnn", width, out, pool_after=b == len(stage) - 1))
                width = out
        return nodes
    model_type = getattr(config, "model_type", None)
    if model_type in ARCHITECTURES and model_type not in ("bert", "gpt2", "llama"):
        spec = ARCHITECTURES[model_type]
        layers = body.get_submodule(spec.layers)
        width = config.hidden_size
        return [Node(f"{spec.layers}.{i}", layer, "vit", width, width) for i, layer in enumerate(layers)]
    raise ValueError(
        f"DeRy cannot cut a {type(model).__name__} (model_type {model_type!r}) into blocks: it knows the project's "
        "VGG / ResNet-12 (hf_methods.models.convnets) and the transformers vision transformers of "
        "hf_methods.engine.architectures (ViT). Give a model of one of those families."
    )


def block_nodes(model: nn.Module) -> list[str]:
    """Names of `model`'s block-boundary nodes (`source_nodes`), relative to `model.base_model`."""
    return [node.name for node in source_nodes(model)]


def _resolve(model: nn.Module, name: str) -> nn.Module:
    """The module called `name` in `model`, or else in `model.base_model` (node names are relative to it)."""
    for root in (model, getattr(model, "base_model", model)):
        try:
            return root.get_submodule(name)
        except AttributeError:
            continue
    raise ValueError(
        f"{type(model).__name__} has no module {name!r}; its block nodes are {block_nodes_or_none(model)} (names "
        "relative to model.base_model; any module name of the model works too)."
    )


def block_nodes_or_none(model: nn.Module):
    try:
        return block_nodes(model)
    except ValueError:
        return "unknown (not a DeRy-known family)"


def _first_tensor(output):
    while isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    return output


def _batches(inputs, batch_size: int) -> Iterable[torch.Tensor]:
    if torch.is_tensor(inputs):
        yield from inputs.split(batch_size)
        return
    for batch in inputs:
        if isinstance(batch, Mapping):
            batch = batch["pixel_values"]
        yield batch


@torch.no_grad()
def collect_node_features(
    model: nn.Module,
    inputs,
    nodes: list[str] | None = None,
    *,
    batch_size: int = 64,
    max_samples: int | None = None,
) -> dict[str, torch.Tensor]:
    """{node name: its outputs on the probe images, one flattened row per image (float32, on the CPU)}.

    `inputs`: a tensor of pixel values (split into `batch_size` batches) or an iterable of batches (tensors or dicts
    with "pixel_values"). `nodes`: module names (default `block_nodes(model)`); forward hooks record the first tensor
    each one returns. The model runs in eval mode (restored after) with `model(pixel_values=...)`."""
    nodes = block_nodes(model) if nodes is None else list(nodes)
    if not nodes:
        raise ValueError("collect_node_features needs at least one node name.")
    modules = {name: _resolve(model, name) for name in nodes}
    found: dict[str, list[torch.Tensor]] = {name: [] for name in nodes}

    def recorder(name):
        def hook(module, args, output):
            out = _first_tensor(output)
            found[name].append(out.detach().reshape(out.shape[0], -1).float().cpu())

        return hook

    hooks = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        seen = 0
        for batch in _batches(inputs, batch_size):
            if max_samples is not None and seen >= max_samples:
                break
            if max_samples is not None:
                batch = batch[: max_samples - seen]
            model(pixel_values=batch.to(device))
            seen += len(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("collect_node_features got no probe images.")
    missing = [name for name, outs in found.items() if not outs]
    if missing:
        raise ValueError(f"nodes {missing} never ran in {type(model).__name__}'s forward; give nodes on its path.")
    return {name: torch.cat(outs) for name, outs in found.items()}


# --- similarity measures ----------------------------------------------------------------------------------------------
def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _center(gram: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11ᵀ/n (what the official `center_gram` computes, in closed form)."""
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def _cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    gx, gy = _center(gram_x), _center(gram_y)
    denominator = torch.linalg.norm(gx) * torch.linalg.norm(gy)
    if denominator == 0:
        return 0.0  # a constant representation carries nothing: no similarity
    return float((gx * gy).sum() / denominator)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n examples (rows; any trailing shape is flattened):
    ⟨HKₓH, HK_yH⟩ / (‖HKₓH‖ ‖HK_yH‖) with K = XXᵀ. In [0, 1]; 1 for identical features; invariant to orthogonal
    transforms and isotropic scaling."""
    x, y = _check_pair(x, y)
    return _cka_from_grams(x @ x.T, y @ y.T)


def _rbf_gram(x: torch.Tensor, threshold: float) -> torch.Tensor:
    dots = x @ x.T
    norms = dots.diagonal()
    sq = (norms[:, None] + norms[None, :] - 2 * dots).clamp_min(0)
    median = sq.median()
    if median == 0:
        return torch.ones_like(sq)
    return torch.exp(-sq / (2 * threshold**2 * median))


def rbf_cka(x: torch.Tensor, y: torch.Tensor, threshold: float = 1.0) -> float:
    """CKA with RBF kernels whose bandwidth is `threshold` times the median squared distance (the official
    alternative, threshold 1.0)."""
    x, y = _check_pair(x, y)
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}.")
    return _cka_from_grams(_rbf_gram(x, threshold), _rbf_gram(y, threshold))


def lr_similarity(x: torch.Tensor, y: torch.Tensor) -> float:
    """The official "LR" measure: ‖Q_yᵀ X‖² / ‖X‖² with Q_y from the reduced QR of Y, the share of X's energy in
    Y's column space (a linear-regression fit of X from Y). Not symmetric; 1 whenever Y has rank n (more features than
    examples), as in the official code, so use it with fewer features than probe images."""
    x, y = _check_pair(x, y)
    q, _ = torch.linalg.qr(y)
    total = torch.linalg.norm(x) ** 2
    return float(torch.linalg.norm(q.T @ x) ** 2 / total) if total > 0 else 0.0


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _flat(x), _flat(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"the two representations must be of the same examples: {x.shape[0]} vs {y.shape[0]} rows.")
    if x.shape[0] < 2:
        raise ValueError("a similarity needs at least 2 examples.")
    return x, y


def similarity(x: torch.Tensor, y: torch.Tensor, measure: str = "cka") -> float:
    """`measure` in SIMILARITY_MEASURES: "cka" (linear CKA, the official default), "rbf_cka", "lr"."""
    if measure == "cka":
        return linear_cka(x, y)
    if measure == "rbf_cka":
        return rbf_cka(x, y)
    if measure == "lr":
        return lr_similarity(x, y)
    raise ValueError(f"measure must be one of {SIMILARITY_MEASURES}, got {measure!r}.")


def similarity_matrix(
    features_a: Mapping[str, torch.Tensor], features_b: Mapping[str, torch.Tensor], measure: str = "cka"
) -> torch.Tensor:
    """(nodes of a) x (nodes of b) similarities, in the mappings' order. Linear CKA reuses each node's centered Gram
    matrix."""
    if measure != "cka":
        return torch.tensor([[similarity(fa, fb, measure) for fb in features_b.values()] for fa in features_a.values()])
    grams_a = [_center(_flat(f) @ _flat(f).T) for f in features_a.values()]
    grams_b = [_center(_flat(f) @ _flat(f).T) for f in features_b.values()]
    if grams_a and grams_b and grams_a[0].shape != grams_b[0].shape:
        raise ValueError("the two models' features must be of the same probe images (same number of rows).")
    out = torch.zeros(len(grams_a), len(grams_b), dtype=torch.float64)
    for i, ga in enumerate(grams_a):
        for j, gb in enumerate(grams_b):
            denominator = torch.linalg.norm(ga) * torch.linalg.norm(gb)
            out[i, j] = (ga * gb).sum() / denominator if denominator > 0 else 0.0
    return out


def zoo_similarities(
    features: Mapping[str, Mapping[str, torch.Tensor]], measure: str = "cka"
) -> dict[tuple[str, str], torch.Tensor]:
    """{(model a, model b): similarity_matrix} for every ordered pair of the zoo, a model with itself included (what
    `partition_zoo` reads). `features`: {model name: collect_node_features(...)} on the same probe images."""
    names = list(features)
    out: dict[tuple[str, str], torch.Tensor] = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            sim = similarity_matrix(features[a], features[b], measure)
            out[(a, b)] = sim
            if a != b:
                out[(b, a)] = sim.T if measure != "lr" else similarity_matrix(features[b], features[a], measure)
    return out
