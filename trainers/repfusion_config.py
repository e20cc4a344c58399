"""Arguments of `RepFusionTrainer` (RepFusion pre-training, arXiv 2308.10916)."""

from dataclasses import dataclass, field

from .frozen_models_config import FrozenModelsConfig, _is_real


@dataclass
class RepFusionTrainingConfig(FrozenModelsConfig):
    r"""
    [`~transformers.TrainingArguments`] of [`RepFusionTrainer`], with the official optimizer as defaults: SGD
    (momentum 0.9), learning rate 0.1, weight decay 1e-4 (the official step decay at epochs 100 and 150 of 200 is not
    reproduced: use any `lr_scheduler_type`). The loss weights (`kd_weight`, the initial `entropy_reg`,
    `reward_baseline`) belong to the model's `RepFusionConfig`, since its forward computes the loss.

    Parameters:
        entropy_end_epoch (`float`, *optional*, defaults to `100`):
            The entropy weight decays linearly from the model's `entropy_reg` to 0 at this epoch
            (`EntropyDecayCallback`, the official `EntropyDecayHook(end_epoch=100)`); fractional epochs are allowed for
            short runs. Empty: no decay.
        policy_learning_rate (`float`, *optional*):
            Learning rate of the policy network alone (its own parameter group, same schedule); empty: `learning_rate`
            as in the official code. A larger one lets the policy move when few images carry labels (few rewards).
    """

    learning_rate: float = field(default=0.1, metadata={"help": "Official: SGD lr 0.1."})
    optim: str = field(default="sgd", metadata={"help": "Official: SGD."})
    optim_args: str | None = field(default="momentum=0.9", metadata={"help": "Official: momentum 0.9."})
    weight_decay: float = field(default=1e-4, metadata={"help": "Official: 1e-4."})
    entropy_end_epoch: float | None = field(
        default=100.0, metadata={"help": "Epoch at which the entropy weight reaches 0 (empty: no decay)."}
    )
    policy_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the policy network (empty: learning_rate)."}
    )

    def __post_init__(self):
        super().__post_init__()
        lr = self.policy_learning_rate
        if lr is not None and not (_is_real(lr) and lr > 0):
            raise ValueError(f"`policy_learning_rate` must be a number > 0 or empty (learning_rate), got {lr!r}.")
        end = self.entropy_end_epoch
        if end is not None and not (_is_real(end) and end > 0):
            raise ValueError(f"`entropy_end_epoch` must be a number > 0 or empty (no decay), got {end!r}.")
