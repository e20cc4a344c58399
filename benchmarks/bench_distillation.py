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
still move by several percent from run to run: rerun, or raise `--rounds`, before reading much into a ratio. The
timing pieces (callback, loop, ABBA rounds, summary) are shared with `bench_trainers.py` in `_bench.py`.

    HF_HUB_OFFLINE=1 python benchmarks/bench_distillation.py [--steps 10 --rounds 5 --warmup 2 --batch 32 --threads N]

Defaults run in well under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _bench
import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_methods.trainers import (
    DistillationConfig,
    DistillationTrainer,
    distillation_loss,
)

ALPHA, TEMPERATURE, KD_NORM = 0.5, 2.0, "numel"


def vit(hidden, layers, heads, intermediate, image, patch, labels) -> ViTForImageClassification:
    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        image_size=image,
        patch_size=patch,
        num_channels=3,
        num_labels=labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def trainer_round(student, teacher, dataset, a, output_dir) -> tuple[list[float], str]:
    args = DistillationConfig(
        distillation_type="soft",
        alpha=ALPHA,
        temperature=TEMPERATURE,
        kd_normalization=KD_NORM,
        **_bench.trainer_kwargs(a, output_dir),
    )
    trainer = DistillationTrainer(model=student, args=args, train_dataset=dataset, teacher_model=teacher)
    return _bench.timed_train(trainer, a.warmup)


def loop_round(student, teacher, dataset, a) -> list[float]:
    teacher.eval()

    def loss_fn(batch):
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        student_logits = student(pixel_values=pixel_values).logits
        with torch.no_grad():
            teacher_logits = teacher(pixel_values=pixel_values).logits
        loss, _, _ = distillation_loss(
            student_logits,
            teacher_logits,
            labels,
            distillation_type="soft",
            alpha=ALPHA,
            temperature=TEMPERATURE,
            kd_normalization=KD_NORM,
        )
        return loss

    return _bench.hand_loop(student, dataset, a, loss_fn)


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
    _bench.add_timing_args(p)
    a = p.parse_args()
    _bench.quiet(a.threads)

    torch.manual_seed(a.seed)
    student = vit(a.hidden, a.layers, a.heads, 4 * a.hidden, a.image, a.patch, a.labels)
    teacher = vit(
        a.teacher_hidden,
        a.teacher_layers,
        a.teacher_heads,
        4 * a.teacher_hidden,
        a.image,
        a.patch,
        a.labels,
    )
    # The loop's models: fresh copies with the same initial weights, taken before any training.
    loop_student, loop_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    loop_teacher.requires_grad_(False)
    rows = a.batch * (a.warmup + a.steps)  # one epoch = one round
    dataset = [
        {
            "pixel_values": torch.randn(3, a.image, a.image),
            "labels": int(torch.randint(0, a.labels, ())),
        }
        for _ in range(rows)
    ]

    print(
        f"setup: torch {torch.__version__}, {torch.get_num_threads()} threads | student ViT hidden {a.hidden} x "
        f"{a.layers} layers ({_bench.n_params(student)}) | teacher ViT hidden {a.teacher_hidden} x "
        f"{a.teacher_layers} layers ({_bench.n_params(teacher)}) | image {a.image}, patch {a.patch}, {a.labels} "
        f"labels | batch {a.batch} | soft KD alpha {ALPHA}, T {TEMPERATURE}, {KD_NORM} | {a.rounds} rounds x "
        f"({a.warmup} warm-up + {a.steps} timed) steps per side",
        flush=True,
    )
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer_times, loop_times, optimizer_desc = _bench.abba_rounds(
            a.rounds,
            lambda: trainer_round(student, teacher, dataset, a, output_dir),
            lambda: loop_round(loop_student, loop_teacher, dataset, a),
        )
    print(f"Trainer optimizer: {optimizer_desc}")
    _bench.Summary("DistillationTrainer", trainer_times, loop_times).print_lines()
    print(f"benchmark wall time: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
