"""TLEG: the auxiliary network and learngene of "Transformer as Linear Expansion of Learngene"
(Xia et al., AAAI 2024, arXiv 2312.05614).

Deviation from the official code, on purpose: the official auxiliary net and descendants are DeiT variants
(no CLS token, mean pooling, a norm whose placement differs between aux and descendant). Here both run the
same stock transformers architecture (e.g. `ViTForImageClassification`, CLS pooling), so `expand(L)`
reproduces the auxiliary network exactly and descendants load with stock transformers. The linear rule,
its coefficient l/L and the initialization follow the paper's code.

Starting from a pretrained teacher (not in the paper): `TLEGModel.from_teacher(teacher)` sets theta_A and theta_B
to the least-squares fit of the teacher's layers (`fit_linear_in_depth`) and copies its embeddings, norm and head.
"""

from collections.abc import Sequence

import torch
from torch import nn

from ...engine.learngene import LearngeneModel
from .configuration_tleg import TLEGConfig


def fit_linear_in_depth(
    tensors: Sequence[torch.Tensor], coefficients: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-squares (A, B) of `W_l ~ A + c_l * B` over the layers l, element by element, in closed form.

    `tensors[l]` is W_l (all of one shape), `coefficients[l]` is c_l. Minimizes sum_l ||A + c_l B - W_l||^2, i.e. a
    straight line through each element's values along depth: B = sum_l (c_l - c_mean) W_l / sum_l (c_l - c_mean)^2,
    A = W_mean - c_mean * B. Exact when the W_l are themselves linear in c_l. When all c_l are equal (one layer) B is
    undetermined and set to 0 (A = W_mean). Computed and returned in float64, streaming (one layer at a time).
    """
    if len(tensors) != len(coefficients) or not tensors:
        raise ValueError(
            f"need one coefficient per tensor, got {len(tensors)} tensors and {len(coefficients)} coefficients."
        )
    c = torch.tensor([float(x) for x in coefficients], dtype=torch.float64)
    dc = c - c.mean()
    spread = float((dc * dc).sum())
    mean = torch.zeros(tensors[0].shape, dtype=torch.float64, device=tensors[0].device)
    slope = torch.zeros_like(mean)
    for w, d in zip(tensors, dc.tolist()):
        w = w.detach().to(torch.float64)
        mean += w
        if spread > 0:
            slope.add_(w, alpha=d)  # sum_l (c_l - c_mean) W_l  =  sum_l (c_l - c_mean)(W_l - W_mean)
    mean /= len(tensors)
    if spread > 0:
        slope /= spread
    return mean - float(c.mean()) * slope, slope


class TLEGGene(nn.Module):
    """theta_A and theta_B, each shaped like one stock layer (so parameter names match the stock layer's)."""

    def __init__(self, theta_a: nn.Module, theta_b: nn.Module):
        super().__init__()
        self.theta_a = theta_a
        self.theta_b = theta_b


class TLEGModel(LearngeneModel):
    """A TLEG learngene. Its forward is the auxiliary network of depth `config.aux_num_layers`; train it by
    distillation (`DistillationTrainer`), then `expand(D)` gives stock models of any depth D with
    layer i = theta_A + (i/D) * theta_B. `save_pretrained` stores only the learngene: two layers plus the
    embeddings, final norm and head."""

    config_class = TLEGConfig
    method_name = "TLEG"
    gene_description = "theta_A and theta_B, layer l of L = theta_A + (l/L) * theta_B"

    def build_gene(self, template):
        # theta_A: a stock layer with the stock init (ViT: truncated normal std 0.02, biases 0, norm gamma 1).
        # theta_B: initialized like theta_A for weight matrices, zeros for biases and norm parameters (paper §2.2).
        theta_b = self.fresh_layer(template)
        with torch.no_grad():
            for param in theta_b.parameters():
                if param.dim() < 2:
                    param.zero_()
        return TLEGGene(template, theta_b)

    def coefficient(self, index: int, depth: int) -> float:
        if self.config.coefficient == "index_over_depth_minus_1":
            return index / (depth - 1) if depth > 1 else 0.0
        return index / depth

    def layer_parameters(self, index, depth):
        c = self.coefficient(index, depth)
        b = dict(self.gene.theta_b.named_parameters())
        return {name: torch.add(a, b[name], alpha=c) for name, a in self.gene.theta_a.named_parameters()}

    # --- starting from a pretrained teacher ---------------------------------------------------------------
    teacher_inits = ("least_squares", "random")

    def fit_gene(self, teacher_layers, init):
        """theta_A, theta_B = the least-squares fit of the teacher's layers W_l to theta_A + c_l * theta_B, per tensor,
        with c_l this learngene's coefficient for layer l of the TEACHER's depth (l/L_teacher by default), whatever
        `aux_num_layers` is: the linear rule is depth-free, so the fit places every teacher layer at its own relative
        depth, and the auxiliary network (or any descendant) re-samples the fitted line at its own depth."""
        depth = len(teacher_layers)
        coefficients = [self.coefficient(index, depth) for index in range(depth)]
        rule = f"l/{depth}" if self.config.coefficient == "index_over_depth" else f"l/{max(depth - 1, 1)}"
        detail = f"least squares over teacher layers 0..{depth - 1} with c_l = {rule}"
        fitted = {}
        for name in self.layer_parameter_names:
            a, b = fit_linear_in_depth([layer[name] for layer in teacher_layers], coefficients)
            fitted[f"theta_a.{name}"] = (a, detail)
            fitted[f"theta_b.{name}"] = (b, detail)
        return fitted

    def teacher_provenance(self, teacher_num_layers):
        return {"coefficients": [self.coefficient(i, teacher_num_layers) for i in range(teacher_num_layers)]}

    def describe_layer(self, index, depth):
        return (
            f"theta_A + {index}/{depth} * theta_B"
            if self.config.coefficient == "index_over_depth"
            else (f"theta_A + {self.coefficient(index, depth):.4g} * theta_B")
        )
