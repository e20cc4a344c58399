"""Arguments for `LayerMatchTrainer` (LayerMatch, arXiv 2406.14207, on a FixMatch base)."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class LayerMatchConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the semi-supervised settings of [`LayerMatchTrainer`].

    The loss is FixMatch's, `CE(labeled) + lambda_u * mean(mask * CE(strong view, pseudo-label))`, with the pseudo-label
    the argmax of the weak view's prediction and `mask = max prob >= threshold`. LayerMatch changes the classifier's
    part of the unlabeled term; with both flags off this is plain FixMatch.

    Parameters:
        threshold (`float`, *optional*, defaults to `0.95`):
            tau, the confidence a pseudo-label needs, in [0, 1] (1.0 keeps essentially none: supervised training).
        lambda_u (`float`, *optional*, defaults to `1.0`):
            Weight of the unlabeled term (>= 0).
        grad_relu (`bool`, *optional*, defaults to `True`):
            Grad-ReLU: the unlabeled term's gradient never reaches the classifier (its weights are detached there), so
            the classifier learns from labeled data only while the feature extractor learns from both.
        avg_clustering (`bool`, *optional*, defaults to `True`):
            Avg-Clustering: the unlabeled term (pseudo-labels and strong-view logits) uses an exponential moving average
            of the classifier's weights and bias as stable cluster centres (no gradient, so Grad-ReLU holds too).
        center_momentum (`float`, *optional*, defaults to `0.999`):
            mu of that average, `W_bar <- mu * W_bar + (1 - mu) * W` after every optimizer step, in [0, 1).
        classifier_name (`str`, *optional*, defaults to `"classifier"`):
            The model's final `nn.Linear` (ViT, BERT and the project's CNNs call it `classifier`); its input is taken
            as the features.

    `remove_unused_columns` defaults to False here: the unlabeled views are not arguments of the model's forward.
    """

    threshold: float = field(default=0.95, metadata={"help": "Pseudo-label confidence threshold tau in [0, 1]."})
    lambda_u: float = field(default=1.0, metadata={"help": "Weight of the unlabeled term (>= 0)."})
    grad_relu: bool = field(default=True, metadata={"help": "Block the unlabeled gradient into the classifier."})
    avg_clustering: bool = field(default=True, metadata={"help": "Unlabeled term through an EMA of the classifier."})
    center_momentum: float = field(default=0.999, metadata={"help": "EMA momentum of the centres, in [0, 1)."})
    classifier_name: str = field(default="classifier", metadata={"help": "The model's final nn.Linear."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the unlabeled views (False)."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}.")
        if not self.lambda_u >= 0.0:
            raise ValueError(f"lambda_u must be >= 0, got {self.lambda_u!r}.")
        if not 0.0 <= self.center_momentum < 1.0:
            raise ValueError(f"center_momentum must be in [0, 1), got {self.center_momentum!r}.")
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns must be False for LayerMatch: the Trainer would drop the unlabeled views."
            )
