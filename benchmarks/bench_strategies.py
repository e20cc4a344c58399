"""Overhead of the training strategies against the plain `Trainer`, measured side by side in one process (never a timed
test). Each pair runs in ABBA order (A, B, B, A, ...) so a drift in the machine's speed hits both alike; medians of the
kept step times (or of whole runs, for IMWA) are compared.

- SOS: a `Trainer` with `OptimumShiftingCallback` (a shift every `--shift-every` steps, 64 images) vs the same
  `Trainer` without it. The ratio is of mean step times (the amortized cost: a shift lands in one step of N); one
  shift's cost is printed too.
- LayerMatch: `LayerMatchTrainer` (Grad-ReLU + Avg-Clustering) vs a plain `Trainer` stepping on as many images
  (labeled + weak + strong: `batch * (1 + 2 * mu)`), i.e. what LayerMatch adds beyond its larger batch; and vs
  FixMatch (the same trainer with both flags off).
- IMWA: `IMWATrainer` (M replicas, E episodes) vs M plain `Trainer` runs of the same steps (vanilla averaging's
  compute): the cost of episode switches (a Trainer per episode and replica) and averaging.
- DPC: a `DPCTrainer` step after the warm-up (two networks: no-gradient guesses on two views, MixMatch, both networks'
  losses) and a `DPCLiteTrainer` step after the warm-up (evidential loss on the selected rows) vs a plain `Trainer`
  step of one network on the same batch. The selection's scoring pass at each epoch start is timed apart.

    HF_HUB_OFFLINE=1 python benchmarks/bench_strategies.py [--rounds 3 --steps 40 --threads 1]

The model is the small VGG of the strategy recipes (channels 16, 128) on 8x8 digits, batch 32. Defaults run in about
2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from _bench import StepEndTimes, quiet, step_durations
from transformers import PrinterCallback, Trainer, TrainingArguments

from hf_methods.data import digits
from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.dpc import DPCForImageClassification, DPCModelConfig
from hf_methods.trainers import (
    DPCConfig,
    DPCLiteTrainer,
    DPCTrainer,
    IMWAConfig,
    IMWATrainer,
    LayerMatchConfig,
    LayerMatchTrainer,
    OptimumShiftingCallback,
    SemiSupervisedDataset,
)


def vgg(seed=0):
    torch.manual_seed(seed)
    return VGGForImageClassification(VGGConfig(num_channels=1, hidden_sizes=[16, 128], depths=[1, 1], num_labels=10))


def common(a, out, steps=None, batch=None):
    return dict(output_dir=out, per_device_train_batch_size=batch or a.batch, max_steps=steps or a.warmup + a.steps,
                learning_rate=1e-3, lr_scheduler_type="constant", save_strategy="no", logging_strategy="no",
                report_to="none", disable_tqdm=True, use_cpu=True, seed=a.seed, dataloader_num_workers=0)  # fmt: skip


def step_times(trainer, warmup) -> list[float]:
    timer = StepEndTimes()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return step_durations(timer.times, warmup)


def abba(rounds, first, second, stat=statistics.median):
    a_times, b_times = [], []
    for r in range(rounds):
        for run in (first, second) if r % 2 == 0 else (second, first):
            (a_times if run is first else b_times).extend(run())
    return stat(a_times), stat(b_times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--mu", type=int, default=4, help="unlabeled images per labeled image (LayerMatch)")
    p.add_argument("--shift-every", type=int, default=10, help="steps between two optimum shifts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    quiet(a.threads)
    train = digits(image_size=8)["train"]
    rows = [{"pixel_values": r["pixel_values"], "labels": r["labels"]} for r in train]
    out = tempfile.mkdtemp()
    print(f"VGG [16, 128] on 8x8 digits, batch {a.batch}, {a.rounds} ABBA rounds of {a.steps} timed steps, "
          f"{a.threads} thread(s)", flush=True)  # fmt: skip

    # --- SOS ---
    shifts = []

    def plain():
        return step_times(Trainer(model=vgg(), args=TrainingArguments(**common(a, out)), train_dataset=rows), a.warmup)

    def sos():
        callback = OptimumShiftingCallback(num_samples=64, every_n_epochs=None, every_n_steps=a.shift_every)
        args = TrainingArguments(**common(a, out))
        trainer = Trainer(model=vgg(), args=args, train_dataset=rows, callbacks=[callback])
        original = callback.shift

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            shifts.append(time.perf_counter() - start)
            return result

        callback.shift = timed
        return step_times(trainer, a.warmup)

    base, with_sos = abba(a.rounds, plain, sos, stat=statistics.fmean)  # the mean: a shift lands in 1 step of N
    print(f"SOS, a shift every {a.shift_every} steps: {with_sos * 1e3:.2f} vs {base * 1e3:.2f} ms per step (mean), "
          f"ratio "
          f"{with_sos / base:.3f}; one shift {statistics.median(shifts) * 1e3:.1f} ms (64 images, 129 x 10 weights)",
          flush=True)  # fmt: skip

    # --- LayerMatch ---
    labeled, unlabeled = rows[:200], [r["pixel_values"] for r in rows[200:]]
    semi = SemiSupervisedDataset(labeled, unlabeled, unlabeled_ratio=a.mu)
    big_batch = a.batch * (1 + 2 * a.mu)

    def layermatch(flags=True):
        def go():
            args = LayerMatchConfig(**common(a, out), grad_relu=flags, avg_clustering=flags, threshold=0.5)
            return step_times(LayerMatchTrainer(model=vgg(), args=args, train_dataset=semi), a.warmup)

        return go

    def plain_big():
        args = TrainingArguments(**common(a, out, batch=big_batch))
        return step_times(Trainer(model=vgg(), args=args, train_dataset=rows * 4), a.warmup)

    base_big, lm = abba(a.rounds, plain_big, layermatch())
    fixmatch, lm2 = abba(a.rounds, layermatch(False), layermatch())
    print(f"LayerMatch (batch {a.batch} + {a.mu * a.batch} weak + {a.mu * a.batch} strong): {lm * 1e3:.2f} ms per "
          f"step vs {base_big * 1e3:.2f} ms for a plain Trainer on {big_batch} images, ratio {lm / base_big:.3f}; vs "
          f"FixMatch {lm2 * 1e3:.2f} / {fixmatch * 1e3:.2f} ms, ratio {lm2 / fixmatch:.3f}", flush=True)  # fmt: skip

    # --- IMWA ---
    replicas, episodes, steps = 2, 8, 8 * a.steps  # episodes of a.steps steps, as the recipe's 40

    def vanilla():
        start = time.perf_counter()
        for _ in range(replicas):
            trainer = Trainer(model=vgg(), args=TrainingArguments(**common(a, out, steps=steps)), train_dataset=rows)
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        return [time.perf_counter() - start]

    def imwa():
        start = time.perf_counter()
        args = IMWAConfig(**common(a, out, steps=steps), imwa_replicas=replicas, imwa_episodes=episodes)
        IMWATrainer(vgg(), args, train_dataset=rows).train()
        return [time.perf_counter() - start]

    base_run, imwa_run = abba(a.rounds, vanilla, imwa)
    print(f"IMWA ({replicas} replicas, {episodes} episodes, {steps} steps each): {imwa_run:.2f} s vs {base_run:.2f} s "
          f"for {replicas} plain Trainer runs, ratio {imwa_run / base_run:.3f}", flush=True)  # fmt: skip

    # --- DPC ---
    selections = []

    def dpc_model():
        torch.manual_seed(a.seed)
        config = DPCModelConfig(backbone_config=vgg().config.to_dict(), id2label=vgg().config.id2label,
                                aux_hidden_size=64)  # fmt: skip
        return DPCForImageClassification(config)

    def dpc(two_networks: bool):
        def go():
            args = DPCConfig(**common(a, out), warmup_epochs=0)  # a selection at the start, then only DPC steps
            if two_networks:
                trainer = DPCTrainer(model=dpc_model(), args=args, train_dataset=rows)
            else:
                trainer = DPCLiteTrainer(model=vgg(), args=args, train_dataset=rows)
            original = trainer.select

            def timed(epoch):
                start = time.perf_counter()
                original(epoch)
                selections.append(time.perf_counter() - start)

            trainer.select = timed
            return step_times(trainer, a.warmup)

        return go

    base_dpc, two = abba(a.rounds, plain, dpc(True))
    base_lite, lite = abba(a.rounds, plain, dpc(False))
    print(f"DPC (two networks, MixMatch): {two * 1e3:.2f} vs {base_dpc * 1e3:.2f} ms per step of one plain network, "
          f"ratio {two / base_dpc:.3f}; DPC-lite {lite * 1e3:.2f} vs {base_lite * 1e3:.2f} ms, ratio "
          f"{lite / base_lite:.3f}; one selection (scoring {len(rows)} images + the mixture) "
          f"{statistics.median(selections) * 1e3:.0f} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
