"""Arguments for `DPCLiteTrainer` (the single-network variant of DPC, AAAI 2024)."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class DPCConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the settings of [`DPCLiteTrainer`].

    Training uses DPC's evidential loss throughout. After `warmup_epochs` epochs on every (noisy) example, each epoch
    begins by scoring the training set with the large-margin criterion and fitting a 2-component Gaussian mixture. The
    epoch then trains on the examples whose posterior of being clean exceeds `p_threshold`.

    Parameters:
        warmup_epochs (`int`, *optional*, defaults to `2`):
            Epochs on all examples before the first selection (the official code warms up 10-40 epochs on CIFAR).
        p_threshold (`float`, *optional*, defaults to `0.5`):
            Clean posterior an example needs to be trained on, in [0, 1] (official 0.5).
        gamma (`float`, *optional*):
            The Dirichlet prior mass added to the evidence, > 0; default 10 / num_labels (official).
        kl_weight (`float`, *optional*, defaults to `0.5`):
            Weight of the evidential KL term before its 1 / C normalization (official 0.5), >= 0.
    """

    warmup_epochs: int = field(default=2, metadata={"help": "Epochs on every example before the first selection."})
    p_threshold: float = field(default=0.5, metadata={"help": "Clean posterior an example needs, in [0, 1]."})
    gamma: float | None = field(default=None, metadata={"help": "Prior mass added to the evidence (default 10/C)."})
    kl_weight: float = field(default=0.5, metadata={"help": "Weight of the evidential KL term (official 0.5)."})

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}.")
        if not 0.0 <= self.p_threshold <= 1.0:
            raise ValueError(f"p_threshold must be in [0, 1], got {self.p_threshold!r}.")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (or None for 10 / num_labels), got {self.gamma!r}.")
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight!r}.")
