"""Config of a GTL learngene: which CNN it was taken from, the gene's granularity and budget, its layers, lineage."""

from __future__ import annotations

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from .genes import ConvLayer, check_fraction, check_granularity


class GTLConfig(PreTrainedConfig):
    r"""A Genetic Transfer Learning learngene (arXiv 2401.08139): masked convolution weights of an ancestor CNN.

    Args:
        base_model_class: class of the ancestor network (`"VGGForImageClassification"`,
            `"ResNet12ForImageClassification"`, `"ResNetForImageClassification"`, ...); the default descendant class.
        base_config: the ancestor's config (`config.to_dict()`); `expand()` builds descendants from it.
        granularity: what the gene selects: `"channel"` (output channels of each convolution, the paper's
            "channel subsets"), `"kernel"` (single k x k kernels) or `"layer"` (whole convolutions).
        gene_fraction: the budget, a fraction of the ancestor's convolution weights (paper: about 0.2).
        layers: the ancestor's convolutions in forward order (`name`, weight `shape`, following `norm`, `bias`) and
            `units`, how many units the gene holds in each (this fixes the stored tensors' shapes).
        lineage: the gene's ancestry from the evolution, oldest first (`id`, `generation`, `fitness`, ...).
    """

    model_type = "hf_methods_gtl"
    base_model_class: str = "VGGForImageClassification"
    base_config: dict | None = None
    granularity: str = "channel"
    gene_fraction: float = 0.2
    layers: list | None = None
    lineage: list | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs, allowed=())
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        for name in ("layers", "lineage"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (list, tuple)):
                raise ValueError(
                    f"{name} must be a list (or None), got a {type(value).__name__} ({value!r}); give its entries "
                    "in order as a list."
                )
        check_granularity(self.granularity)
        check_fraction(self.gene_fraction)
        for i, layer in enumerate(self.layers or []):
            if not isinstance(layer, dict) or {"name", "shape", "units"} - set(layer):
                raise ValueError(f"layers[{i}] must be a dict with name, shape and units, got {layer!r}.")

    @property
    def conv_layers(self) -> list[ConvLayer]:
        return [ConvLayer.from_dict(d) for d in self.layers or []]
