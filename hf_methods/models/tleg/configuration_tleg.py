"""Config of a TLEG learngene (Xia et al., "Transformer as Linear Expansion of Learngene", AAAI 2024)."""

from typing import Literal

from ...engine.learngene import LearngeneConfig


class TLEGConfig(LearngeneConfig):
    r"""TLEG learngene: two layers of parameters, theta_A and theta_B, with layer l of a depth-L network
    set to theta_A + c(l, L) * theta_B for every weight, bias and norm parameter.

    Args:
        coefficient: `"index_over_depth"` is the paper's c = l / L (layer 0 is theta_A, the last layer
            theta_A + (L-1)/L theta_B); `"index_over_depth_minus_1"` (c = l / (L-1)) is kept for ablations.
        base_model_class, base_config, aux_num_layers: see `LearngeneConfig`.
    """

    model_type = "hf_methods_tleg"
    coefficient: Literal["index_over_depth", "index_over_depth_minus_1"] = "index_over_depth"

    def validate_learngene(self):
        super().validate_learngene()
        if self.coefficient not in ("index_over_depth", "index_over_depth_minus_1"):
            raise ValueError(
                f"coefficient={self.coefficient!r} is unknown; use 'index_over_depth' (the paper's l/L) "
                "or 'index_over_depth_minus_1'."
            )
