"""Arguments of `RankMatchTrainer` (semi-supervised label distribution learning, arXiv 2312.06343)."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class RankMatchConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the settings of [`RankMatchTrainer`].

    `L = KL(d || p(x)) + lambda_u KL(q || p(A(u))) + ranking_weight (PRR_gap(p(x), d) + PRR_order(p(A(u)), q))`, with
    `q` the mean prediction over `num_weak_views` weak views of an unlabeled image (no gradient) and `A(u)` its strong
    view. No official code: every choice below is inferred from the paper's description (see the README).

    Parameters:
        num_weak_views (`int`, *optional*, defaults to `2`):
            K, weak views averaged into the pseudo distribution (>= 1; the default collator makes them).
        lambda_u (`float`, *optional*, defaults to `1.0`):
            Weight of the unlabeled KL consistency, >= 0.
        ranking_weight (`float`, *optional*, defaults to `0.05`):
            lambda, weight of the pairwise relevance ranking losses, >= 0 (the paper studies 0.005-0.1); 0 with K = 1
            is plain FixMatch-style KL consistency.
        ranking_delta (`float`, *optional*, defaults to `0.0`):
            On unlabeled images only pairs with `q_j > q_k + delta` are ordered, >= 0.
    `remove_unused_columns` defaults to False: the unlabeled views are not arguments of the model's forward.
    """

    num_weak_views: int = field(default=2, metadata={"help": "K weak views averaged into the pseudo distribution."})
    lambda_u: float = field(default=1.0, metadata={"help": "Weight of the unlabeled KL consistency (>= 0)."})
    ranking_weight: float = field(default=0.05, metadata={"help": "Weight of the pairwise ranking losses (>= 0)."})
    ranking_delta: float = field(default=0.0, metadata={"help": "Margin before a pseudo-label pair is ordered."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the unlabeled views (False)."})

    def __post_init__(self):
        super().__post_init__()
        k = self.num_weak_views
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"num_weak_views must be an integer >= 1 (K weak views), got {k!r}.")
        for name in ("lambda_u", "ranking_weight", "ranking_delta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False for RankMatch: the Trainer would drop the views.")
