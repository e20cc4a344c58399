"""Arguments of `LIRFTrainer` (LIRF's deposit: Learning with Recoverable Forgetting, ECCV 2022, arXiv 2207.08224)."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .frozen_models_config import check_alpha, check_temperature


@dataclass
class LIRFTrainingConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the settings of [`LIRFTrainer`].

    `L = L_T + L_R` on deposit-set batches, with `L_T = alpha T^2 KL(softmax(z0[:, P]/T) || softmax(z_T[:, P]/T)) +
    (1 - alpha) CE(z_T, y_rand)` (P: the preserved classes; `y_rand` uniform over all classes) and `L_R = alpha T^2
    KL(softmax(z0[:, D]/T) || softmax(z_comb[:, D]/T)) + (1 - alpha) CE(z_comb, y)` (D: the deposit classes).

    The official code reads alpha, T, the learning rate, its step schedule and the epochs from a `params.json` it does
    not ship: those values are unknown. The defaults are the research brief's inferred starting point (alpha 0.9,
    T 4, lr 0.01, 20 epochs); the optimizer is the official one (SGD, momentum 0.9, weight decay 5e-4; one SGD over
    both lower parts equals the official two, which share the learning rate).

    Parameters:
        alpha (`float`, *optional*, defaults to `0.9`):
            Weight of the distillation terms (`alpha T^2 KL`) against the cross-entropies (`1 - alpha`), in [0, 1].
            Unknown in the official release (inferred).
        temperature (`float`, *optional*, defaults to `4.0`):
            T, the softmax temperature of the distillation terms, > 0. Unknown in the official release (inferred).
    """

    alpha: float = field(default=0.9, metadata={"help": "Weight of the KD terms vs the CE terms (inferred 0.9)."})
    temperature: float = field(default=4.0, metadata={"help": "Softmax temperature T of the KD terms (inferred 4)."})
    learning_rate: float = field(default=0.01, metadata={"help": "SGD learning rate (inferred 0.01)."})
    num_train_epochs: float = field(default=20, metadata={"help": "Epochs over the deposit set (inferred 20)."})
    optim: str = field(default="sgd", metadata={"help": "SGD, as the official code."})
    optim_args: str | None = field(default="momentum=0.9", metadata={"help": "Official SGD momentum 0.9."})
    weight_decay: float = field(default=5e-4, metadata={"help": "Official SGD weight decay 5e-4."})

    def __post_init__(self):
        super().__post_init__()
        check_alpha(self.alpha)
        check_temperature(self.temperature)
