"""Arguments of DPC's trainers: `DPCTrainer` (two networks, the paper's method) and `DPCLiteTrainer` (one network)."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

LOSS_TYPES = ("evidential", "cross_entropy")
SELECTION_SCORES = ("margin", "small_loss")


@dataclass
class DPCConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the settings of [`DPCTrainer`] and [`DPCLiteTrainer`].

    Both train with DPC's evidential loss on every (noisy) example for `warmup_epochs` epochs. Every later epoch
    begins by scoring the training set (large margins by default) and fitting a 2-component Gaussian mixture; an
    example counts as clean when its posterior exceeds `p_threshold`. `DPCLiteTrainer` then trains on the clean
    examples only; `DPCTrainer` splits each batch per network by the other network's posterior (co-divide) and trains
    with MixMatch (label refinement, co-guessing, the settings below).

    Parameters:
        warmup_epochs (`int`, *optional*, defaults to `2`):
            Epochs on all examples before the first selection (the official code warms up 10-40 epochs on CIFAR).
        p_threshold (`float`, *optional*, defaults to `0.5`):
            Clean posterior an example needs, in [0, 1] (official 0.5).
        gamma (`float`, *optional*):
            The Dirichlet prior mass added to the evidence, > 0; default 10 / num_labels (official).
        kl_weight (`float`, *optional*, defaults to `0.5`):
            Weight of the evidential KL term before its 1 / C normalization (official 0.5), >= 0.
        loss_type (`str`, *optional*, defaults to `"evidential"`):
            `"evidential"` (DPC) or `"cross_entropy"` (`DPCLiteTrainer` only: a plain cross-entropy baseline).
        selection_score (`str`, *optional*, defaults to `"margin"`):
            `"margin"` (DPC's large margin, logit of the label minus the best other) or `"small_loss"` (minus the
            per-example training loss: DivideMix's criterion), the score the mixture is fitted to.
        temperature (`float`, *optional*, defaults to `0.5`):
            Sharpening temperature T of the refined and co-guessed targets, > 0 (official 0.5).
        mixmatch_alpha (`float`, *optional*, defaults to `4.0`):
            MixMatch's Beta(alpha, alpha) mixing, > 0 (official 4).
        lambda_u (`float`, *optional*, defaults to `0.0`):
            Weight of the unlabeled (head-2) term, >= 0 (official 0 on CIFAR-10, 25 on CIFAR-100).
        rampup_epochs (`float`, *optional*, defaults to `16`):
            `lambda_u` ramps up linearly over this many epochs after the warm-up, > 0 (official 16).
        prior_penalty (`bool`, *optional*, defaults to `True`):
            Add `sum_c pi_c log(pi_c / mean p_c)` with a uniform prior pi (official).
        confidence_penalty (`bool`, *optional*, defaults to `False`):
            Add the negative entropy of the prediction during the warm-up (calibrated for the evidential loss, softmax
            for cross-entropy; the official code, like DivideMix's, does for asymmetric noise).
    """

    warmup_epochs: int = field(default=2, metadata={"help": "Epochs on every example before the first selection."})
    p_threshold: float = field(default=0.5, metadata={"help": "Clean posterior an example needs, in [0, 1]."})
    gamma: float | None = field(default=None, metadata={"help": "Prior mass added to the evidence (default 10/C)."})
    kl_weight: float = field(default=0.5, metadata={"help": "Weight of the evidential KL term (official 0.5)."})
    loss_type: str = field(default="evidential", metadata={"help": "'evidential' (DPC) or 'cross_entropy'."})
    selection_score: str = field(default="margin", metadata={"help": "'margin' (DPC) or 'small_loss' (DivideMix)."})
    temperature: float = field(default=0.5, metadata={"help": "Sharpening temperature of the targets (official 0.5)."})
    mixmatch_alpha: float = field(default=4.0, metadata={"help": "MixMatch's Beta(alpha, alpha) (official 4)."})
    lambda_u: float = field(default=0.0, metadata={"help": "Weight of the unlabeled head-2 term (official 0 / 25)."})
    rampup_epochs: float = field(default=16.0, metadata={"help": "Epochs over which lambda_u ramps up (official 16)."})
    prior_penalty: bool = field(default=True, metadata={"help": "Uniform-prior penalty on the mean prediction."})
    confidence_penalty: bool = field(default=False, metadata={"help": "Negative-entropy penalty in the warm-up."})

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
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}.")
        if self.selection_score not in SELECTION_SCORES:
            raise ValueError(f"selection_score must be one of {SELECTION_SCORES}, got {self.selection_score!r}.")
        for name in ("temperature", "mixmatch_alpha", "rampup_epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not self.lambda_u >= 0:
            raise ValueError(f"lambda_u must be >= 0, got {self.lambda_u!r}.")
