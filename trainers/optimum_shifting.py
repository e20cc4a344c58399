"""Optimum Shifting (OS) and Stochastic Optimum Shifting (SOS), "Optimum Shifting to Stabilize Training and Improve
Generalization of Deep Neural Networks" (arXiv 2405.14111, AAAI 2025; no official code).

A linear layer `Z = A V` (inputs `A`, N x d, with a ones column for the bias; weights `V`, d x k) gives the same
outputs on those N inputs for every `V'` with `A V' = A V`. When N < d the system is under-determined, and OS moves
the layer to the minimum-norm such `V'`: the projection of `V`'s columns onto the row space of `A`, `V* = A^+ A V`.
The network's outputs, hence its loss, on the batch are unchanged, the weight norm does not grow, and by the paper's
bound the Hessian trace, a measure of sharpness, shrinks. SOS applies it with a small random batch during training
(Neural Collapse makes the outputs on the other samples approximately preserved).

- `optimum_shift_(linear, inputs)`: the step on one `nn.Linear`, in place, computed in float64 with an SVD (exact
  projection; the brief's regularized normal equations would move the outputs by the regularizer).
- `OptimumShiftingCallback`: SOS for any `Trainer`, which layers, how many samples, how often.
- `hutchinson_trace`: the flatness measurement, the trace of the loss Hessian with respect to chosen parameters.

Inferred (the paper's values are not known to us; each is an option): the samples per shift (default
`min(d_in, max(2 * num_labels, 64))`, below the d_in + 1 unknowns of a layer with bias), the period (every epoch), the
layers (the classifier), and whether the optimizer's state for the layer is reset after a shift (default no).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


@torch.no_grad()
def optimum_shift_(linear: nn.Linear, inputs: torch.Tensor, rtol: float = 1e-10) -> dict[str, float]:
    """Move `linear` to the minimum-norm weights (bias included) that give the same outputs on `inputs`, in place.

    Args:
        linear: the layer; its weight is `(k, d)`, its bias (if any) is folded in as a ones column of the inputs.
        inputs: its inputs, `(..., d)`; every leading position is one row of `A`.
        rtol: singular values below `rtol * largest` count as zero (the rank of `A`).

    Returns `{"rows", "rank", "norm_before", "norm_after", "max_output_change"}` (Frobenius norms of `[W, b]`). When
    `A` has full column rank (N >= d + 1, independent rows), the layer is left exactly as it was.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"optimum_shift_ takes an nn.Linear, got {type(linear).__name__}.")
    rows = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float64)
    if rows.shape[-1] != linear.in_features:
        raise ValueError(f"inputs have {rows.shape[-1]} features but the layer takes {linear.in_features}.")
    if rows.shape[0] == 0:
        raise ValueError("optimum_shift_ needs at least one input row.")
    if linear.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    weights = linear.weight.detach().to(torch.float64).T  # (d, k)
    if linear.bias is not None:
        weights = torch.cat([weights, linear.bias.detach().to(torch.float64)[None]], dim=0)  # (d + 1, k)
    _, singular, basis = torch.linalg.svd(rows, full_matrices=False)
    rank = int((singular > rtol * singular.max()).sum()) if singular.numel() else 0
    before = float(weights.norm())
    stats = {"rows": rows.shape[0], "rank": rank, "norm_before": before, "norm_after": before, "max_output_change": 0.0}
    if rank >= weights.shape[0]:  # full column rank: the outputs pin the weights down, nothing to shift
        return stats
    row_space = basis[:rank]  # (r, d + 1), orthonormal rows
    shifted = row_space.T @ (row_space @ weights)  # the projection of every column onto the row space of A
    new_weight = shifted[: linear.in_features].T.to(linear.weight.dtype)
    new_bias = shifted[linear.in_features].to(linear.bias.dtype) if linear.bias is not None else None
    parts = [new_weight.double().T, *([new_bias.double()[None]] if new_bias is not None else [])]
    after = float(torch.cat(parts).norm())
    if after > before:  # rounding in the cast back; a projection never grows the norm
        return stats
    linear.weight.copy_(new_weight)
    if new_bias is not None:
        linear.bias.copy_(new_bias)
    change = (rows @ shifted - rows @ weights).abs().max()
    stats.update(norm_after=after, max_output_change=float(change))
    return stats


def _resolve_linear(model: nn.Module, name: str) -> nn.Linear:
    modules = dict(model.named_modules())
    module = modules.get(name)
    if module is None:
        candidates = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"OptimumShiftingCallback.layer_names: the model has no module {name!r}; its linear layers are "
            f"{candidates[-5:]} (last 5)."
        )
    if not isinstance(module, nn.Linear):
        raise ValueError(
            f"OptimumShiftingCallback.layer_names: {name!r} is a {type(module).__name__}, not an nn.Linear; "
            "optimum shifting applies to linear layers."
        )
    return module


class OptimumShiftingCallback(TrainerCallback):
    """Stochastic Optimum Shifting for any `Trainer`: every `every_n_epochs` epochs (or `every_n_steps` steps), draw
    `num_samples` training examples, record the inputs of each layer in `layer_names` on them (model in eval mode, no
    gradient) and `optimum_shift_` the layer.

    The examples come from the training dataset through the Trainer's collator, drawn with a generator seeded by
    `(seed, step)`, so every process of a distributed run shifts with the same inputs and the replicas stay equal. The
    shift's statistics are logged (`os/<layer>/norm_before`, ...) and kept in `self.history`.

    Args:
        layer_names: the `nn.Linear` layers to shift (names in `model.named_modules()`), default the classifier.
        num_samples: examples per shift; None: `min(d_in, max(2 * num_labels, 64))` for each layer's d_in inputs.
        every_n_epochs: shift at the end of every n-th epoch (None: never by epoch).
        every_n_steps: shift after every n-th optimizer step (None: never by step).
        reset_optimizer_state: drop the optimizer's state (Adam moments, momentum) for a shifted layer's parameters.
        seed: seed of the example draw.
    """

    def __init__(
        self,
        layer_names: Sequence[str] = ("classifier",),
        num_samples: int | None = None,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        reset_optimizer_state: bool = False,
        seed: int = 0,
        rtol: float = 1e-10,
    ):
        if isinstance(layer_names, str) or not layer_names:
            raise ValueError(f"layer_names must be a non-empty list of layer names, got {layer_names!r}.")
        for field, value in (
            ("num_samples", num_samples),
            ("every_n_epochs", every_n_epochs),
            ("every_n_steps", every_n_steps),
        ):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{field} must be a positive integer or None, got {value!r}.")
        if every_n_epochs is None and every_n_steps is None:
            raise ValueError("set every_n_epochs or every_n_steps: otherwise the callback never shifts.")
        self.layer_names = list(layer_names)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.reset_optimizer_state = reset_optimizer_state
        self.seed = seed
        self.rtol = rtol
        self.history: list[dict] = []
        self._dataset = None
        self._collate = None

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if train_dataloader is None:
            raise ValueError("OptimumShiftingCallback needs the Trainer's train_dataloader (a train_dataset).")
        self._dataset = train_dataloader.dataset
        self._collate = train_dataloader.collate_fn
        for name in self.layer_names:
            _resolve_linear(_unwrap(model), name)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.shift(model, optimizer, state, args)

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.every_n_epochs and round(state.epoch or 0) % self.every_n_epochs == 0:
            self.shift(model, optimizer, state, args)

    def shift(self, model, optimizer, state, args) -> dict[str, dict]:
        model = _unwrap(model)
        if any(hasattr(p, "ds_id") for p in model.parameters()):
            raise RuntimeError("OptimumShiftingCallback does not run under DeepSpeed ZeRO-3 (partitioned weights).")
        layers = {name: _resolve_linear(model, name) for name in self.layer_names}
        inputs = self._layer_inputs(model, layers, args.device, state.global_step)
        record = {"step": state.global_step}
        logs = {}
        for name, layer in layers.items():
            stats = optimum_shift_(layer, inputs[name], rtol=self.rtol)
            record[name] = stats
            logs.update({f"os/{name}/{k}": v for k, v in stats.items() if k in ("norm_before", "norm_after", "rank")})
            if self.reset_optimizer_state and optimizer is not None:
                for param in layer.parameters():
                    optimizer.state.pop(param, None)
        self.history.append(record)
        logger.info("optimum shifting at step %d: %s", state.global_step, logs)
        return record

    def _layer_inputs(self, model, layers: dict[str, nn.Linear], device, step: int) -> dict[str, torch.Tensor]:
        wanted = {name: self.num_samples or _default_samples(layer, model) for name, layer in layers.items()}
        n = min(max(wanted.values()), len(self._dataset))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        order = torch.randperm(len(self._dataset), generator=g)[:n].tolist()
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        hooks = [
            layer.register_forward_hook(lambda mod, inp, out, name=name: captured[name].append(inp[0].detach()))
            for name, layer in layers.items()
        ]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                batch_size = 64
                for start in range(0, n, batch_size):
                    batch = self._collate([self._dataset[i] for i in order[start : start + batch_size]])
                    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    batch.pop("labels", None)
                    model(**batch)
        finally:
            for hook in hooks:
                hook.remove()
            model.train(was_training)
        out = {}
        for name in layers:
            rows = torch.cat([t.reshape(-1, t.shape[-1]) for t in captured[name]])
            out[name] = rows[: wanted[name]]
        return out


def _default_samples(layer: nn.Linear, model: nn.Module) -> int:
    num_labels = getattr(getattr(model, "config", None), "num_labels", None) or layer.out_features
    return min(layer.in_features, max(2 * num_labels, 64))


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def hutchinson_trace(
    loss_fn: Callable[[], torch.Tensor], params: Iterable[torch.Tensor], num_probes: int = 32, seed: int = 0
) -> float:
    """Hutchinson's estimate of the trace of the Hessian of `loss_fn()` with respect to `params`:
    the mean over Rademacher probes v of v^T H v (H v by double backward). Exact when H is diagonal."""
    params = [p for p in params if p.requires_grad]
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}.")
    g = torch.Generator().manual_seed(seed)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    total = 0.0
    for i in range(num_probes):
        probes = [(torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p) for p in params]
        hv = torch.autograd.grad(grads, params, grad_outputs=probes, retain_graph=i < num_probes - 1)
        total += float(sum((v * h).sum() for v, h in zip(probes, hv)))
    return total / num_probes
