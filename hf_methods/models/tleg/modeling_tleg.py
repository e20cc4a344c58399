"""TLEG: the auxiliary network and learngene of "Transformer as Linear Expansion of Learngene"
(Xia et al., AAAI 2024, arXiv 2312.05614).

Deviation from the official code, on purpose: the official auxiliary net and descendants are DeiT variants
(no CLS token, mean pooling, a norm whose placement differs between aux and descendant). Here both run the
same stock transformers architecture (e.g. `ViTForImageClassification`, CLS pooling), so `expand(L)`
reproduces the auxiliary network exactly and descendants load with stock transformers. The linear rule,
its coefficient l/L and the initialization follow the paper's code.
"""

import torch
from torch import nn

from ...engine.learngene import LearngeneModel
from .configuration_tleg import TLEGConfig


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

    def describe_layer(self, index, depth):
        return f"theta_A + {index}/{depth} * theta_B" if self.config.coefficient == "index_over_depth" else (
            f"theta_A + {self.coefficient(index, depth):.4g} * theta_B"
        )
