"""Config of a fitted DN-ILDL solver stored as a model."""

from __future__ import annotations

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields


class DNILDLConfig(PreTrainedConfig):
    r"""A fitted DN-ILDL map from features to label distributions (`DNILDLForLabelDistribution`).

    Args:
        num_features: width of the features the map reads (e.g. a backbone's pooled output).
        fit_intercept: the map has a bias row (the solver's constant feature).
        prediction: "normalize" (`max(xW, 0)` over its sum) or "softmax".
        solver: the solver's settings it was fitted with (a record for the card; not used to predict).
        num_labels / id2label: the labels of the distributions.
    """

    model_type = "hf_methods_dn_ildl"
    num_features: int = 1
    fit_intercept: bool = True
    prediction: str = "normalize"
    solver: dict | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        if isinstance(self.num_features, bool) or not isinstance(self.num_features, int) or self.num_features < 1:
            raise ValueError(f"`num_features` must be a positive integer, got {self.num_features!r}.")
        if self.prediction not in ("normalize", "softmax"):
            raise ValueError(f"`prediction` must be 'normalize' or 'softmax', got {self.prediction!r}.")
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2, got {self.num_labels}.")
