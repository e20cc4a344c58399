"""Size and cost of a model, the two axes users choose a descendant on: parameters and FLOPs per sample."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter elements (a tensor shared by two modules counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def count_flops(model: nn.Module, inputs: dict, **forward_kwargs) -> int:
    """Floating-point operations of one forward pass per sample (a multiply-add counts 2), measured by running
    `model(**inputs, **forward_kwargs)` under `torch.utils.flop_counter.FlopCounterMode`.

    Counted from the operations actually executed (matmuls, convolutions, attention), so it is right for any
    architecture, including stitched ones; elementwise work (norms, activations) is not counted, as is usual.
    """
    batch = next((v.shape[0] for v in inputs.values() if torch.is_tensor(v) and v.dim() > 0), None)
    if not batch:
        raise ValueError("count_flops needs at least one batched tensor in `inputs` (e.g. pixel_values).")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**inputs, **forward_kwargs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // batch


def stored_parameter_ratio(learngene, depths) -> float:
    """Parameters of descendants at every depth in `depths`, summed, over the parameters stored in the learngene:
    how many times less one must store (and pre-train) to initialize all of them (the SWS paper's "20x")."""
    depths = list(depths)
    if not depths:
        raise ValueError("depths must name at least one descendant depth.")
    total = sum(learngene.descendant_num_parameters(d) for d in depths)
    return total / learngene.learngene_num_parameters()
