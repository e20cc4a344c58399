"""Shared pieces of the Trainer-vs-hand-written-loop benchmarks (not a benchmark itself).

The scripts in this folder are run as `python benchmarks/<name>.py` from the repository root, so Python puts
`benchmarks/` first on `sys.path` and `import _bench` finds this file.

How the benchmarks time a step: the wall time between the ends of two consecutive optimizer steps, so a step
includes fetching and collating its batch. For a Trainer the end of a step is `TrainerCallback.on_step_end`
(`StepEndTimes`); the hand-written loop (`hand_loop`) reads the clock right after `optimizer.zero_grad`. The first
`warmup` steps of every round are dropped (`step_durations`). Rounds alternate in ABBA order (Trainer, loop, loop,
Trainer, ...) so a drift in the machine's speed hits both sides alike (`abba_rounds`), and the medians over all kept
steps are compared (`Summary`).
"""

from __future__ import annotations

import itertools
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from transformers import PrinterCallback, Trainer, TrainerCallback
from transformers.utils import logging as hf_logging

TARGET = 1.05  # Trainer step / hand-written loop step


def quiet(threads: int | None = None) -> None:
    """Set torch's thread count (None: torch's own); silence transformers' logging, progress bars and Python
    warnings."""
    if threads:
        torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def add_timing_args(p, steps: int = 10, warmup: int = 2, rounds: int = 5) -> None:
    """The command-line options every Trainer-vs-loop benchmark shares."""
    p.add_argument("--steps", type=int, default=steps, help="timed steps per round")
    p.add_argument(
        "--warmup",
        type=int,
        default=warmup,
        help="untimed steps at the start of every round",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help="rounds per side, alternating Trainer / loop",
    )
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="the TrainingArguments default is 0.0",
    )
    p.add_argument(
        "--max-grad-norm",
        type=float,
        default=1.0,
        help="the TrainingArguments default is 1.0",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)


def trainer_kwargs(a, output_dir: str) -> dict:
    """TrainingArguments fields of a timed Trainer round: one epoch of `warmup + steps` batches, constant learning
    rate, no logging, evaluation, saving or progress bar, on the CPU. The optimizer is the default
    (`adamw_torch_fused`), as is `max_grad_norm` unless `--max-grad-norm` says otherwise."""
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": a.batch,
        "max_steps": a.warmup + a.steps,
        "learning_rate": a.lr,
        "weight_decay": a.weight_decay,
        "max_grad_norm": a.max_grad_norm,
        "lr_scheduler_type": "constant",
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": True,
        "seed": a.seed,
    }


class StepEndTimes(TrainerCallback):
    """`perf_counter()` at the start of training and at every `on_step_end`."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.times = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def step_durations(times: list[float], warmup: int) -> list[float]:
    """Durations of consecutive steps (seconds), the first `warmup` dropped."""
    return [b - a for a, b in itertools.pairwise(times)][warmup:]


def trainer_optimizer(trainer) -> torch.optim.Optimizer:
    """The torch optimizer behind the Trainer's (accelerate wraps it)."""
    opt = trainer.optimizer
    return opt.optimizer if hasattr(opt, "optimizer") else opt


def optimizer_desc(trainer) -> str:
    """One line describing the optimizer the Trainer built, to compare with the loop's."""
    opt, args = trainer_optimizer(trainer), trainer.args
    optim = args.optim.value if hasattr(args.optim, "value") else args.optim
    return (
        f"{type(opt).__name__}(fused={opt.defaults.get('fused')}, lr={opt.defaults['lr']}, "
        f"betas={opt.defaults['betas']}, eps={opt.defaults['eps']}, "
        f"groups={len(opt.param_groups)}), optim={optim}, max_grad_norm={args.max_grad_norm}"
    )


def timed_train(trainer, warmup: int) -> tuple[list[float], str]:
    """Run `trainer.train()` with a `StepEndTimes` callback (and without the end-of-training metrics print):
    (step durations without the first `warmup`, `optimizer_desc`)."""
    timer = StepEndTimes()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return step_durations(timer.times, warmup), optimizer_desc(trainer)


def decay_groups(model, weight_decay: float) -> list[dict]:
    """The Trainer's decay / no-decay parameter groups (no weight decay on biases and norm weights), by its own rule
    (`Trainer.get_decay_parameter_names`, which does not use `self`)."""
    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def hand_loop(model, dataset, a, loss_fn: Callable[[dict], torch.Tensor], collate_fn=None) -> list[float]:
    """One round of the plain PyTorch loop: shuffled batches of `dataset`, `loss_fn(batch)` (forward passes and
    the loss), backward, grad-norm clipping to `a.max_grad_norm`, fused AdamW step (the Trainer's default optimizer
    with its decay / no-decay groups, constant learning rate), `zero_grad`. Returns the step durations without the
    first `a.warmup`."""
    generator = torch.Generator().manual_seed(a.seed)
    loader = DataLoader(
        dataset,
        batch_size=a.batch,
        shuffle=True,
        num_workers=0,
        generator=generator,
        collate_fn=collate_fn,
    )
    optimizer = torch.optim.AdamW(
        decay_groups(model, a.weight_decay),
        lr=a.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=True,
    )
    model.train()
    times = [time.perf_counter()]
    n_steps = a.warmup + a.steps
    for step, batch in enumerate(loader):
        if step == n_steps:
            break
        loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return step_durations(times, a.warmup)


def abba_rounds(
    rounds: int,
    trainer_round: Callable[[], tuple[list[float], str]],
    loop_round: Callable[[], list[float]],
    indent: str = "  ",
) -> tuple[list[float], list[float], str]:
    """Alternate `trainer_round()` and `loop_round()` in ABBA order (Trainer, loop, loop, Trainer, ...: a linear
    drift in machine speed cancels out), printing each round's medians. Returns all Trainer step durations, all loop
    step durations, and the last `optimizer_desc`."""
    trainer_times: list[float] = []
    loop_times: list[float] = []
    optimizer = ""
    for r in range(rounds):
        if r % 2 == 0:
            t, optimizer = trainer_round()
            lp = loop_round()
        else:
            lp = loop_round()
            t, optimizer = trainer_round()
        trainer_times += t
        loop_times += lp
        print(
            f"{indent}round {r + 1}: Trainer median {1e3 * statistics.median(t):.1f} ms | "
            f"loop median {1e3 * statistics.median(lp):.1f} ms",
            flush=True,
        )
    return trainer_times, loop_times, optimizer


@dataclass
class Summary:
    """Medians and minima of the Trainer's and the loop's step durations (seconds)."""

    name: str
    trainer_times: list[float]
    loop_times: list[float]

    @property
    def trainer_median(self) -> float:
        return statistics.median(self.trainer_times)

    @property
    def loop_median(self) -> float:
        return statistics.median(self.loop_times)

    @property
    def ratio(self) -> float:
        return self.trainer_median / self.loop_median

    @property
    def ratio_of_minima(self) -> float:
        return min(self.trainer_times) / min(self.loop_times)

    @property
    def verdict(self) -> str:
        return "OK" if self.ratio <= TARGET else "ABOVE TARGET"

    def print_lines(self) -> None:
        """The detailed summary: both medians (with minima and counts), the ratio, the ratio of minima."""
        width = max(len(self.name) + len(" step:"), len("hand-written loop step:"))
        print(
            f"{(self.name + ' step:').ljust(width)} median {1e3 * self.trainer_median:.1f} ms  "
            f"(min {1e3 * min(self.trainer_times):.1f}, n={len(self.trainer_times)})"
        )
        print(
            f"{'hand-written loop step:'.ljust(width)} median {1e3 * self.loop_median:.1f} ms  "
            f"(min {1e3 * min(self.loop_times):.1f}, n={len(self.loop_times)})"
        )
        print(f"ratio Trainer / loop (medians): {self.ratio:.3f}  (target <= {TARGET}: {self.verdict})")
        print(f"  for reference, ratio of minima: {self.ratio_of_minima:.3f}  (least disturbed steps)")

    def line(self) -> str:
        """The one-line summary."""
        return (
            f"{self.name}: Trainer {1e3 * self.trainer_median:.1f} ms / loop "
            f"{1e3 * self.loop_median:.1f} ms per step (medians, n={len(self.trainer_times)}+"
            f"{len(self.loop_times)}) = {self.ratio:.3f}  (target <= {TARGET}: {self.verdict}; "
            f"ratio of minima {self.ratio_of_minima:.3f})"
        )


def n_params(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


# ---------------------------------------------------------------- the benchmarks' models
IGNORE_INDEX = 255


def label_query_vit(
    hidden,
    layers,
    heads,
    decoder,
    classes,
    image,
    patch,
    decoder_heads=4,
    ff_multiplier=2,
):
    """A label-query multi-label classifier on a ViT backbone, no dropout."""
    from transformers import ViTConfig

    from hf_methods.models.label_query import (
        LabelQueryConfig,
        LabelQueryForMultiLabelClassification,
    )

    vit = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=image,
        patch_size=patch,
        num_channels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config = LabelQueryConfig(
        backbone_config=vit.to_dict(),
        num_labels=classes,
        d_model=decoder,
        num_attention_heads=decoder_heads,
        dim_feedforward=ff_multiplier * decoder,
        decoder_dropout=0.0,
    )
    return LabelQueryForMultiLabelClassification(config)


def gpt2(n_embd, layers, heads, vocab, positions):
    """A GPT-2 LM without dropout or cache."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(
            n_embd=n_embd,
            n_layer=layers,
            n_head=heads,
            vocab_size=vocab,
            n_positions=positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
            use_cache=False,
        )
    )


def upernet(widths, depths, head, classes):
    """A UperNet on a ConvNeXt backbone (every stage feeds the decoder), auxiliary head on."""
    from transformers import (
        ConvNextConfig,
        UperNetConfig,
        UperNetForSemanticSegmentation,
    )

    stages = [f"stage{i + 1}" for i in range(len(widths))]
    backbone = ConvNextConfig(
        num_channels=3,
        patch_size=2,
        num_stages=len(widths),
        hidden_sizes=list(widths),
        depths=list(depths),
        out_features=stages,
    )
    config = UperNetConfig(
        backbone_config=backbone,
        hidden_size=head,
        auxiliary_channels=head // 2,
        use_auxiliary_head=True,
        pool_scales=[1, 2, 3, 6],
        num_labels=classes,
        loss_ignore_index=IGNORE_INDEX,
    )
    return UperNetForSemanticSegmentation(config)
