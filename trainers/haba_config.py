"""Settings of `HaBaDistiller` (HaBa, dataset factorization; arXiv 2210.16774): the MTT trajectory-matching loop that
learns bases, hallucinators and the synthetic learning rate, plus the adversarial diversity game with an extractor."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

DSA_OPERATIONS = ("color", "crop", "cutout", "flip", "scale", "rotate")

# The official scripts' (run_cifar10_ipc{1,10,50}_style5.sh) per-ipc settings: syn_steps, max_start_epoch, lr_lr and
# the initial synthetic learning rate (lr_teacher; `HaBaConfig.initial_synthetic_lr`).
OFFICIAL_PER_IPC = {
    1: {"syn_steps": 50, "max_start_epoch": 2, "lr_lr": 1e-7, "initial_synthetic_lr": 0.01},
    10: {"syn_steps": 30, "max_start_epoch": 20, "lr_lr": 1e-5, "initial_synthetic_lr": 0.001},
    50: {"syn_steps": 30, "max_start_epoch": 20, "lr_lr": 1e-5, "initial_synthetic_lr": 0.01},
}


@dataclass
class HaBaDistillerConfig:
    r"""Settings of [`HaBaDistiller`]; the defaults are the official CIFAR-10 ipc-1 script's
    (`run_cifar10_ipc1_style5.sh`, `distill_fac.py`). `HaBaDistillerConfig.official(ipc)` gives the official settings of
    ipc 1, 10 or 50 (and `official_initial_synthetic_lr(ipc)` the matching `HaBaConfig.initial_synthetic_lr`).

    One iteration: sample an expert trajectory and a start epoch s < `max_start_epoch`; from the expert's parameters
    at epoch s take `syn_steps` SGD steps on synthetic batches (one random hallucinator per step, DSA when `dsa`) with
    the learnable rate eta_syn, keeping the graph; `L_param = ||theta_N - theta*_{s+M}||^2 / ||theta*_s -
    theta*_{s+M}||^2` with M = `expert_epochs`. The synthesizers (bases, hallucinators, eta_syn) minimize `L_param +
    lambda_club * mean((cos(e0, e1) + 1) / 2)` (e0, e1: the extractor's embeddings of one batch of bases through two
    different hallucinators), then eta_syn is clipped at `min_synthetic_lr`. The extractor then minimizes `lambda_cls
    CE + lambda_likelihood mean((1 - cos(e0, e1)) / 2) + lambda_contrast SupCon([e0, e1], c)` on a fresh batch.
    """

    iterations: int = field(default=15000, metadata={"help": "Distillation iterations (official argparse default)."})
    syn_steps: int = field(
        default=50, metadata={"help": "N, unrolled SGD steps on synthetic data per iteration (ipc 1: 50, 10: 30)."}
    )
    expert_epochs: int = field(default=2, metadata={"help": "M, the target is the expert M epochs after the start."})
    max_start_epoch: int = field(
        default=2, metadata={"help": "Start epochs are drawn from [0, max_start_epoch) (ipc 1: 2, ipc 10: 20)."}
    )
    batch_syn: int | None = field(
        default=None, metadata={"help": "Bases per inner step; empty: all num_classes * ipc (official)."}
    )
    lr_img: float = field(default=100.0, metadata={"help": "SGD learning rate of the bases (official lr_img)."})
    img_momentum: float = field(default=0.95, metadata={"help": "SGD momentum of the bases."})
    lr_hallucinator: float = field(
        default=100.0, metadata={"help": "SGD learning rate of the hallucinators (official lr_style)."}
    )
    hallucinator_momentum: float = field(default=0.95, metadata={"help": "SGD momentum of the hallucinators."})
    lr_lr: float = field(
        default=1e-7, metadata={"help": "SGD learning rate of the synthetic learning rate (ipc 1: 1e-7, 10: 1e-5)."}
    )
    lr_momentum: float = field(default=0.9, metadata={"help": "SGD momentum of the synthetic learning rate."})
    min_synthetic_lr: float = field(
        default=0.001, metadata={"help": "eta_syn is clipped to at least this after every update (official 0.001)."}
    )
    lambda_club: float = field(
        default=0.1, metadata={"help": "Weight of the diversity term in the synthesizers' loss (lambda_club_content)."}
    )
    lambda_cls: float = field(default=1.0, metadata={"help": "Extractor: weight of its classification loss."})
    lambda_likelihood: float = field(
        default=0.1, metadata={"help": "Extractor: weight of mean((1 - cos(e0, e1)) / 2) (lambda_likeli_content)."}
    )
    lambda_contrast: float = field(
        default=0.1, metadata={"help": "Extractor: weight of the supervised contrastive loss (lambda_contrast)."}
    )
    supcon_temperature: float = field(default=0.07, metadata={"help": "SupCon temperature (and base temperature)."})
    extractor_lr: float = field(default=0.001, metadata={"help": "SGD learning rate of the extractor."})
    extractor_momentum: float = field(default=0.9, metadata={"help": "SGD momentum of the extractor."})
    extractor_width: int = field(
        default=128, metadata={"help": "Channels of the extractor's three conv blocks (official 128)."}
    )
    dsa: bool = field(
        default=True, metadata={"help": "Differentiable siamese augmentation of every synthetic batch (official)."}
    )
    dsa_strategy: str = field(
        default="color_crop_cutout_flip_scale_rotate",
        metadata={
            "help": "Augmentations joined by '_' (color, crop, cutout, flip, scale, rotate); each batch gets ONE of "
            "them, drawn at random (DSA's 'S' mode, official). Drop flip for digits or text-like images."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of every draw of the loop (experts, starts, batches, DSA)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar over the iterations."})

    def __post_init__(self):
        for name in ("iterations", "expert_epochs", "max_start_epoch", "extractor_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        steps = self.syn_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"syn_steps must be an integer >= 0 (0: L_param is 1 by construction), got {steps!r}.")
        if self.batch_syn is not None and (isinstance(self.batch_syn, bool) or self.batch_syn < 1):
            raise ValueError(f"batch_syn must be a positive integer or empty (all bases), got {self.batch_syn!r}.")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}.")
        if self.supcon_temperature <= 0:
            raise ValueError(f"supcon_temperature must be > 0, got {self.supcon_temperature!r}.")
        unknown = [op for op in self.dsa_strategy.split("_") if op not in DSA_OPERATIONS]
        if self.dsa and (unknown or not self.dsa_strategy):
            raise ValueError(
                f"dsa_strategy {self.dsa_strategy!r} has unknown augmentation(s) {unknown}; use {DSA_OPERATIONS} "
                "joined by '_', or dsa=False."
            )

    @classmethod
    def official(cls, ipc: int, **overrides) -> HaBaDistillerConfig:
        """The official script's settings for `ipc` (1, 10 or 50; others take the nearest smaller one), then
        `overrides`."""
        settings = OFFICIAL_PER_IPC[official_ipc(ipc)]
        values = {k: v for k, v in settings.items() if k != "initial_synthetic_lr"}
        return replace(cls(), **{**values, **overrides})


def official_ipc(ipc: int) -> int:
    """The official script whose settings apply to `ipc`: 1, 10 or 50 (the largest not above it)."""
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ValueError(f"ipc (images per class) must be an integer >= 1, got {ipc!r}.")
    return max(k for k in OFFICIAL_PER_IPC if k <= ipc)


def official_initial_synthetic_lr(ipc: int) -> float:
    """The official initial synthetic learning rate (lr_teacher) for `ipc`: 0.01 (ipc 1, 50) or 0.001 (ipc 10)."""
    return OFFICIAL_PER_IPC[official_ipc(ipc)]["initial_synthetic_lr"]
