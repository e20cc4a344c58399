"""A fitted DN-ILDL solver as a `PreTrainedModel`: the learned map W saved with safetensors, loaded with the Auto
classes and pushed with a card, so a solver fitted on a backbone's features can be shared like any model."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ...modeling import HfMethodsModel
from ..label_distribution.modeling_label_distribution import LabelDistributionOutput
from .configuration_dn_ildl import DNILDLConfig
from .solver import DNILDL


class DNILDLForLabelDistribution(HfMethodsModel, PreTrainedModel):
    """`forward(features)` returns the predicted distributions of a fitted DN-ILDL map (the solver's `predict`);
    `from_solver(solver, id2label=...)` stores a fitted `DNILDL`."""

    config_class = DNILDLConfig
    method_name = "DN-ILDL"
    base_model_prefix = "dn_ildl"
    main_input_name = "features"

    def __init__(self, config: DNILDLConfig):
        super().__init__(config)
        rows = config.num_features + (1 if config.fit_intercept else 0)
        # a parameter (transformers reads a model's dtype from its parameters), never trained: the solver fits it
        self.weights = torch.nn.Parameter(
            torch.zeros(rows, config.num_labels, dtype=torch.float64), requires_grad=False
        )
        self.post_init()

    def _init_weights(self, module):
        """Nothing to initialize: the weights come from a fitted solver."""

    @classmethod
    def from_solver(cls, solver: DNILDL, id2label: dict | None = None) -> DNILDLForLabelDistribution:
        if solver.weights is None:
            raise ValueError("from_solver needs a fitted DNILDL: call fit(features, noisy_distributions) first.")
        rows, labels = solver.weights.shape
        config = DNILDLConfig(
            num_features=rows - (1 if solver.fit_intercept else 0),
            fit_intercept=solver.fit_intercept,
            prediction=solver.prediction,
            id2label=id2label or {i: str(i) for i in range(labels)},
            solver={k: v for k, v in vars(solver).items() if isinstance(v, (int, float, bool, str))},
        )
        model = cls(config)
        with torch.no_grad():
            model.weights.copy_(solver.weights)
        return model

    def forward(self, features: torch.Tensor, **kwargs) -> LabelDistributionOutput:
        solver = DNILDL(fit_intercept=self.config.fit_intercept, prediction=self.config.prediction)
        solver.weights = self.weights.detach().to(torch.float64)
        if features.shape[-1] != self.config.num_features:
            raise ValueError(
                f"features have {features.shape[-1]} columns but the map was fitted on {self.config.num_features}."
            )
        distribution = solver.predict(features.to(torch.float64))
        return LabelDistributionOutput(distribution=distribution, logits=distribution.clamp_min(1e-12).log())

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import run_model_card

        results = results or {}
        return run_model_card(
            self,
            repo_or_path,
            method="DN-ILDL",
            title=f"DN-ILDL label-distribution map ({self.config.num_features} features -> {self.config.num_labels} "
            "labels)",
            description=(
                "A linear map from features to label distributions fitted with DN-ILDL (low-rank map, row-sparse "
                "instance- and label-dependent noise, graph regularization; ADMM) on inaccurate label distributions. "
                f"Solver settings: {self.config.solver}."
            ),
            tags=["label-distribution-learning", "dn-ildl"],
            training_setup=results.get("training_setup"),
            metrics={k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))},
            dataset=results.get("dataset"),
        )
