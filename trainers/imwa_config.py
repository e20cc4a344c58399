"""Arguments for `IMWATrainer` (Iterative Model Weight Averaging, arXiv 2404.16331)."""

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from .frozen_models_config import check_choices


@dataclass
class IMWAConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the settings of [`IMWATrainer`].

    Training is split into `imwa_episodes` (E) episodes. In each, `imwa_replicas` (M) copies of the current model
    train `max_steps / E` optimizer steps with their own data order, and their parameters and buffers (BatchNorm
    statistics included) are averaged into the next episode's starting point. The total compute equals vanilla model
    weight averaging (M models x `max_steps`); E = 1 is vanilla averaging, M = 1 a single model trained in E segments.
    The `TrainingArguments` are every replica's: `max_steps` (required, > 0) is each replica's whole budget, and the
    learning-rate schedule runs over it once, indexed by the global step (not restarted per episode).

    Parameters:
        imwa_replicas (`int`, *optional*, defaults to `2`):
            M, the replicas trained from each average (>= 1).
        imwa_episodes (`int`, *optional*, defaults to `4`):
            E, the number of averaging rounds (>= 1); must divide `max_steps`.
        imwa_replica_seeds (`list[int]`, *optional*):
            One seed per replica for its data order (and dropout); episode e of replica m shuffles with
            `seeds[m] * 1000 + e`. Default: `seed + m`.
        imwa_optimizer_state (`str`, *optional*, defaults to `"keep"`):
            What a replica's optimizer state (momentum, Adam moments) does at an episode boundary: `"keep"` its own,
            `"reset"` start afresh. The paper does not say; "keep" is our default.
        imwa_ema_decay (`float`, *optional*):
            With a decay in (0, 1), every replica keeps an exponential moving average of its weights, updated after each
            optimizer step; the replicas' averages are averaged at each episode end like the weights, and
            `IMWATrainer.ema_model` holds the final one (the paper reports IMWA and EMA add up).
    """

    imwa_replicas: int = field(default=2, metadata={"help": "M: replicas trained from each average (>= 1)."})
    imwa_episodes: int = field(default=4, metadata={"help": "E: averaging rounds; must divide max_steps."})
    imwa_replica_seeds: list[int] | None = field(
        default=None, metadata={"help": "One data-order seed per replica (default seed + m)."}
    )
    imwa_optimizer_state: Literal["keep", "reset"] = field(
        default="keep", metadata={"help": "At an episode boundary a replica keeps its optimizer state or resets it."}
    )
    imwa_ema_decay: float | None = field(
        default=None, metadata={"help": "Per-replica EMA of the weights with this decay in (0, 1), averaged too."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("imwa_replicas", "imwa_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.max_steps is None or self.max_steps <= 0:
            raise ValueError(
                "IMWA needs max_steps > 0 (every replica's whole budget, split into imwa_episodes episodes); "
                f"got max_steps={self.max_steps}."
            )
        if self.max_steps % self.imwa_episodes:
            raise ValueError(
                f"imwa_episodes={self.imwa_episodes} must divide max_steps={self.max_steps} (equal episodes); "
                f"pick max_steps as a multiple of {self.imwa_episodes}."
            )
        seeds = self.imwa_replica_seeds
        if seeds is not None and (len(seeds) != self.imwa_replicas or len(set(seeds)) != len(seeds)):
            raise ValueError(
                f"imwa_replica_seeds must hold imwa_replicas={self.imwa_replicas} distinct seeds, got {seeds!r}."
            )
        check_choices(self, {"imwa_optimizer_state": ("keep", "reset")})
        decay = self.imwa_ema_decay
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError(f"imwa_ema_decay must be in (0, 1) or None, got {decay!r}.")

    @property
    def steps_per_episode(self) -> int:
        return self.max_steps // self.imwa_episodes

    def replica_seeds(self) -> list[int]:
        return list(self.imwa_replica_seeds or [self.seed + m for m in range(self.imwa_replicas)])
