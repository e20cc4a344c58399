"""DistillationTrainer speed vs. a hand-written PyTorch loop, measured side by side in one run (never a timed test).

What it measures: the per-step wall time of `DistillationTrainer` (soft KD, alpha 0.5, T 2.0, "numel"
normalization) divided by the per-step wall time of a plain PyTorch loop doing the same work on the same inputs
(target <= 1.05):

- same student (`ViTForImageClassification`) and teacher (a wider, deeper ViT), the loop getting fresh copies with
  identical initial weights;
- same synthetic dataset (a list of `{"pixel_values", "labels"}` dicts), same batch size, shuffled;
- same optimizer as the Trainer's default (`optim="adamw_torch_fused"`: `torch.optim.AdamW(fused=True)`, same lr,
  betas, eps, weight decay, and the Trainer's decay / no-decay parameter groups), constant learning rate;
- teacher in eval mode under `torch.no_grad()`, loss from the same `distillation_loss` function, backward,
  grad-norm clipping to `max_grad_norm` (the Trainer clips by default), optimizer step, `zero_grad`.

A step's time is the wall time between the ends of two consecutive optimizer steps, so it includes fetching and
collating the batch. For the Trainer the end of a step is `TrainerCallback.on_step_end`. The first `--warmup` steps
of every round are dropped. Rounds alternate in ABBA order (Trainer, loop, loop, Trainer, ...) so drift in the
machine's speed hits both alike, and medians over all kept steps are compared. On a shared or busy machine the medians
still move by several percent from run to run: rerun, or raise `--rounds`, before reading much into a ratio.

    HF_HUB_OFFLINE=1 python benchmarks/bench_distillation.py [--steps 10 --rounds 5 --warmup 2 --batch 32 --threads N]

Defaults run in well under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import PrinterCallback, TrainerCallback, ViTConfig, ViTForImageClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_methods.trainers import DistillationConfig, DistillationTrainer, distillation_loss  # noqa: E402

ALPHA, TEMPERATURE, KD_NORM = 0.5, 2.0, "numel"


class StepEndTimes(TrainerCallback):
    """`perf_counter()` at the start of training and at every `on_step_end`."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.times = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def vit(hidden, layers, heads, intermediate, image, patch, labels) -> ViTForImageClassification:
    config = ViTConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
        image_size=image, patch_size=patch, num_channels=3, num_labels=labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def n_params(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


def step_durations(times: list[float], warmup: int) -> list[float]:
    """Durations of consecutive steps (seconds), the first `warmup` dropped."""
    return [b - a for a, b in zip(times, times[1:])][warmup:]


def trainer_round(student, teacher, dataset, a, output_dir) -> tuple[list[float], str]:
    args = DistillationConfig(
        output_dir=output_dir,
        distillation_type="soft", alpha=ALPHA, temperature=TEMPERATURE, kd_normalization=KD_NORM,
        per_device_train_batch_size=a.batch, max_steps=a.warmup + a.steps,
        learning_rate=a.lr, weight_decay=a.weight_decay, lr_scheduler_type="constant",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, use_cpu=True, seed=a.seed,
    )
    timer = StepEndTimes()
    trainer = DistillationTrainer(
        model=student, args=args, train_dataset=dataset, teacher_model=teacher, callbacks=[timer]
    )
    trainer.remove_callback(PrinterCallback)  # no end-of-training metrics print
    trainer.train()
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    optimizer_desc = (
        f"{type(opt).__name__}(fused={opt.defaults.get('fused')}, lr={opt.defaults['lr']}, "
        f"betas={opt.defaults['betas']}, eps={opt.defaults['eps']}, groups={len(opt.param_groups)}), "
        f"optim={args.optim.value if hasattr(args.optim, 'value') else args.optim}, max_grad_norm={args.max_grad_norm}"
    )
    return step_durations(timer.times, a.warmup), optimizer_desc


def decay_groups(model, weight_decay):
    """The Trainer's grouping: no weight decay on biases and LayerNorm weights."""
    no_decay = {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        for name, _ in module.named_parameters(recurse=False)
        if isinstance(module, torch.nn.LayerNorm) or "bias" in name
    }
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
    ]


def loop_round(student, teacher, dataset, a) -> list[float]:
    generator = torch.Generator().manual_seed(a.seed)
    loader = DataLoader(dataset, batch_size=a.batch, shuffle=True, num_workers=0, generator=generator)
    optimizer = torch.optim.AdamW(
        decay_groups(student, a.weight_decay), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, fused=True
    )
    student.train()
    teacher.eval()
    times = [time.perf_counter()]
    n_steps = a.warmup + a.steps
    for step, batch in enumerate(loader):
        if step == n_steps:
            break
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        student_logits = student(pixel_values=pixel_values).logits
        with torch.no_grad():
            teacher_logits = teacher(pixel_values=pixel_values).logits
        loss, _, _ = distillation_loss(
            student_logits, teacher_logits, labels,
            distillation_type="soft", alpha=ALPHA, temperature=TEMPERATURE, kd_normalization=KD_NORM,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), a.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return step_durations(times, a.warmup)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=192, help="student hidden size")
    p.add_argument("--layers", type=int, default=6, help="student layers")
    p.add_argument("--heads", type=int, default=3, help="student attention heads")
    p.add_argument("--teacher-hidden", type=int, default=256)
    p.add_argument("--teacher-layers", type=int, default=8)
    p.add_argument("--teacher-heads", type=int, default=4)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--labels", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every round")
    p.add_argument("--rounds", type=int, default=5, help="rounds per side, alternating Trainer / loop")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0, help="the TrainingArguments default is 0.0")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="the TrainingArguments default is 1.0")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")

    torch.manual_seed(a.seed)
    student = vit(a.hidden, a.layers, a.heads, 4 * a.hidden, a.image, a.patch, a.labels)
    teacher = vit(a.teacher_hidden, a.teacher_layers, a.teacher_heads, 4 * a.teacher_hidden, a.image, a.patch,
                  a.labels)
    # The loop's models: fresh copies with the same initial weights, taken before any training.
    loop_student, loop_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    loop_teacher.requires_grad_(False)
    rows = a.batch * (a.warmup + a.steps)  # one epoch = one round
    dataset = [
        {"pixel_values": torch.randn(3, a.image, a.image), "labels": int(torch.randint(0, a.labels, ()))}
        for _ in range(rows)
    ]

    print(
        f"setup: torch {torch.__version__}, {torch.get_num_threads()} threads | student ViT hidden {a.hidden} x "
        f"{a.layers} layers ({n_params(student)}) | teacher ViT hidden {a.teacher_hidden} x {a.teacher_layers} "
        f"layers ({n_params(teacher)}) | image {a.image}, patch {a.patch}, {a.labels} labels | batch {a.batch} | "
        f"soft KD alpha {ALPHA}, T {TEMPERATURE}, {KD_NORM} | {a.rounds} rounds x ({a.warmup} warm-up + "
        f"{a.steps} timed) steps per side",
        flush=True,
    )
    t_start = time.perf_counter()
    trainer_times, loop_times = [], []
    with tempfile.TemporaryDirectory() as output_dir:
        for r in range(a.rounds):
            # ABBA order (Trainer, loop, loop, Trainer, ...): a linear drift in machine speed cancels out.
            if r % 2 == 0:
                t, optimizer_desc = trainer_round(student, teacher, dataset, a, output_dir)
                lp = loop_round(loop_student, loop_teacher, dataset, a)
            else:
                lp = loop_round(loop_student, loop_teacher, dataset, a)
                t, optimizer_desc = trainer_round(student, teacher, dataset, a, output_dir)
            trainer_times += t
            loop_times += lp
            print(
                f"  round {r + 1}: Trainer median {1e3 * statistics.median(t):.1f} ms | "
                f"loop median {1e3 * statistics.median(lp):.1f} ms",
                flush=True,
            )
    print(f"Trainer optimizer: {optimizer_desc}")
    tr, lo = statistics.median(trainer_times), statistics.median(loop_times)
    ratio = tr / lo
    print(f"DistillationTrainer step: median {1e3 * tr:.1f} ms  (min {1e3 * min(trainer_times):.1f}, "
          f"n={len(trainer_times)})")
    print(f"hand-written loop step:   median {1e3 * lo:.1f} ms  (min {1e3 * min(loop_times):.1f}, "
          f"n={len(loop_times)})")
    print(f"ratio Trainer / loop (medians): {ratio:.3f}  (target <= 1.05: "
          f"{'OK' if ratio <= 1.05 else 'ABOVE TARGET'})")
    print(f"  for reference, ratio of minima: {min(trainer_times) / min(loop_times):.3f}  (least disturbed steps)")
    print(f"benchmark wall time: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
