"""L2D, CPT and RDD Trainer speed vs. hand-written PyTorch loops, measured side by side in one run (never a timed test).

What it measures: for each trainer, the per-step wall time of the Trainer divided by the per-step wall time of a
plain PyTorch loop doing the same work on the same inputs (target <= 1.05). As in `bench_distillation.py` (the timing
pieces are shared in `_bench.py`): the loop gets fresh copies of the same models with identical initial weights, the
same synthetic dataset (a list of dicts of tensors, shuffled, same batch size), the Trainer's default optimizer
(`torch.optim.AdamW(fused=True)`, same lr, betas, eps, weight decay and the Trainer's decay / no-decay parameter
groups, constant learning rate), frozen models in eval mode under `torch.no_grad()`, the loss from the same public
functions of `hf_methods.trainers`, backward, grad-norm clipping to `max_grad_norm`, optimizer step, `zero_grad`.

- `l2d`: `MultiLabelKDTrainer` (`multilabel_kd_type="l2d"`, official lambdas) with a label-query ViT student and a
  wider, deeper label-query ViT teacher (`LabelQueryForMultiLabelClassification`, decoders of the same width as in
  the official code, so no embedding projection). Loop: student forward, teacher forward, `l2d_loss` with the
  logits and the label-wise embeddings (BCE + MLD + class- and instance-aware embedding terms).
- `cpt`: `ConsistentProxyTuningTrainer` with GPT-2 models: a frozen large, a frozen small base and the trainable
  proxy (a copy of the small one). Uncached path: proxy, large and small forwards every step, `proxy_tuning_loss`
  (CE of `z_large + alpha_train * (z_proxy - z_small)`, shifted). `cpt-cached` (with `--cpt-cached`, on by default):
  the large model's logits come from a dataset column (`large_logits_column`, computed once beforehand by the large
  model), so only proxy and small run; the loop reads the same column.
- `rdd`: `RDDTrainer` with UperNet (ConvNeXt backbone, auxiliary head) student and teacher, both stages:
  `rdd-stage1` (teacher aux / main disagreement weights, `rdd_warmup_steps` beyond the run) and `rdd-stage2` (XOR
  of OHEM masks, `rdd_warmup_steps=0`, the heavier stage); select with `--rdd-stages`. Loop: `segmentation_forward`
  of student and teacher (main and auxiliary logits), `rdd_task_loss` at that stage + `lambda_logits * pixel_kd_loss`.

A step's time is the wall time between the ends of two consecutive optimizer steps, so it includes fetching and
collating the batch. For a Trainer the end of a step is `TrainerCallback.on_step_end`. The first `--warmup` steps of
every round are dropped. Rounds alternate in ABBA order (Trainer, loop, loop, Trainer, ...) so drift in the machine's
speed hits both alike, and medians over all kept steps are compared. On a shared or busy machine the medians still
move by several percent from run to run: rerun, or raise `--rounds`, before reading much into a ratio.

    HF_HUB_OFFLINE=1 python benchmarks/bench_trainers.py [--trainer l2d|cpt|rdd|all --steps 10 --rounds 5 --threads N]

Defaults (five benchmarks, about 120-270 ms per step with 2 threads) run in about 2 minutes on 2 idle CPU cores;
another process on the cores stretches that and disturbs the ratios (try `--threads 1` and more `--rounds` then).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _bench
import torch
import torch.nn.functional as F

from hf_methods.models.proxy_tuned import proxy_from_small
from hf_methods.trainers import (
    ConsistentProxyTuningConfig,
    ConsistentProxyTuningTrainer,
    MultiLabelKDConfig,
    MultiLabelKDTrainer,
    RDDConfig,
    RDDTrainer,
    l2d_loss,
    pixel_kd_loss,
    proxy_tuning_loss,
    rdd_task_loss,
    segmentation_forward,
)

IGNORE_INDEX = _bench.IGNORE_INDEX


def frozen_copy(model):
    """The loop's copy of a frozen model: same weights, no gradients, eval mode."""
    return copy.deepcopy(model).requires_grad_(False).eval()


def config_defaults(config_class) -> argparse.Namespace:
    """The default value of every field of a config dataclass (what the Trainer runs with unless told otherwise)."""
    return argparse.Namespace(
        **{f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    )


def with_batch(a, batch: int):
    """`a` with this benchmark's batch size (the shared helpers read `a.batch`)."""
    return argparse.Namespace(**{**vars(a), "batch": batch})


def run_rounds(a, trainer_round, loop_round) -> tuple[list[float], list[float], str]:
    with tempfile.TemporaryDirectory() as output_dir:
        return _bench.abba_rounds(a.rounds, lambda: trainer_round(output_dir), loop_round)


# ---------------------------------------------------------------- L2D
def bench_l2d(a) -> _bench.Summary:
    b = with_batch(a, a.l2d_batch)
    torch.manual_seed(a.seed)
    (sh, sl, sn), (th, tl, tn) = a.l2d_student, a.l2d_teacher
    student = _bench.label_query_vit(sh, sl, sn, a.l2d_decoder, a.l2d_classes, a.l2d_image, 4)
    teacher = _bench.label_query_vit(th, tl, tn, a.l2d_decoder, a.l2d_classes, a.l2d_image, 4)
    loop_student, loop_teacher = copy.deepcopy(student), frozen_copy(teacher)
    rows = b.batch * (b.warmup + b.steps)  # one epoch = one round
    dataset = [
        {
            "pixel_values": torch.randn(3, a.l2d_image, a.l2d_image),
            "labels": (torch.rand(a.l2d_classes) < a.l2d_label_density).float(),
        }
        for _ in range(rows)
    ]
    cfg = config_defaults(MultiLabelKDConfig)  # the loss settings: the config's defaults, for both sides
    print(
        f"[l2d] MultiLabelKDTrainer, L2D (lambda bce {cfg.lambda_bce}, logits {cfg.lambda_logits}, le "
        f"{cfg.lambda_le}, cd {cfg.lambda_cd}, id {cfg.lambda_id}, BCE {cfg.bce_reduction}) | student label-query "
        f"ViT {sh} x {sl} ({_bench.n_params(student)}) | teacher label-query ViT {th} x {tl} "
        f"({_bench.n_params(teacher)}) | decoders {a.l2d_decoder} wide | {a.l2d_classes} classes, image "
        f"{a.l2d_image}, batch {b.batch}",
        flush=True,
    )

    def trainer_round(output_dir):
        args = MultiLabelKDConfig(**_bench.trainer_kwargs(b, output_dir))
        trainer = MultiLabelKDTrainer(model=student, args=args, train_dataset=dataset, teacher_model=teacher)
        assert trainer.embedding_projection is None  # same widths: no projection on either side
        return _bench.timed_train(trainer, b.warmup)

    def loss_fn(batch):
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        out = loop_student(pixel_values=pixel_values)
        with torch.no_grad():
            t_out = loop_teacher(pixel_values=pixel_values)
        loss, _ = l2d_loss(
            out.logits,
            t_out.logits,
            labels,
            out.label_embeddings,
            t_out.label_embeddings,
            multilabel_kd_type=cfg.multilabel_kd_type,
            lambda_bce=cfg.lambda_bce,
            lambda_logits=cfg.lambda_logits,
            lambda_le=cfg.lambda_le,
            lambda_cd=cfg.lambda_cd,
            lambda_id=cfg.lambda_id,
            bce_reduction=cfg.bce_reduction,
        )
        return loss

    times = run_rounds(b, trainer_round, lambda: _bench.hand_loop(loop_student, dataset, b, loss_fn))
    return report("l2d", "MultiLabelKDTrainer", *times)


# ---------------------------------------------------------------- CPT
def bench_cpt(a, cached: bool) -> _bench.Summary:
    b = with_batch(a, a.cpt_batch)
    torch.manual_seed(a.seed)
    (lh, ll, ln), (sh, sl, sn) = a.cpt_large, a.cpt_small
    large = _bench.gpt2(lh, ll, ln, a.cpt_vocab, a.cpt_seq).eval()
    small = _bench.gpt2(sh, sl, sn, a.cpt_vocab, a.cpt_seq).eval()
    proxy = proxy_from_small(small)
    loop_proxy, loop_large, loop_small = (
        copy.deepcopy(proxy),
        frozen_copy(large),
        frozen_copy(small),
    )
    rows = b.batch * (b.warmup + b.steps)
    dataset = []
    for _ in range(rows):
        ids = torch.randint(2, a.cpt_vocab, (a.cpt_seq,))
        dataset.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    if cached:  # the large model's logits, computed once (what cache_logits stores), float32
        with torch.no_grad():
            for start in range(0, rows, 32):
                chunk = dataset[start : start + 32]
                logits = large(
                    input_ids=torch.stack([r["input_ids"] for r in chunk]),
                    attention_mask=torch.stack([r["attention_mask"] for r in chunk]),
                ).logits
                for row, z in zip(chunk, logits, strict=True):
                    row["large_logits"] = z.clone()
    cfg = config_defaults(ConsistentProxyTuningConfig)
    name = "cpt-cached" if cached else "cpt"
    print(
        f"[{name}] ConsistentProxyTuningTrainer, CE(z_large + {cfg.alpha_train} (z_proxy - z_small)) | "
        f"large GPT-2 {lh} x {ll} ({_bench.n_params(large)}, "
        f"{'cached logits column' if cached else 'run every step'}) | small GPT-2 {sh} x {sl} "
        f"({_bench.n_params(small)}) | proxy = copy of small | vocab {a.cpt_vocab}, {a.cpt_seq} tokens, batch "
        f"{b.batch}",
        flush=True,
    )

    def trainer_round(output_dir):
        extra = {"large_logits_column": "large_logits"} if cached else {}
        args = ConsistentProxyTuningConfig(**_bench.trainer_kwargs(b, output_dir), **extra)
        trainer = ConsistentProxyTuningTrainer(
            model=proxy,
            args=args,
            train_dataset=dataset,
            large_model=None if cached else large,
            small_model=small,
        )
        return _bench.timed_train(trainer, b.warmup)

    def loss_fn(batch):
        inputs = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
        }
        z_proxy = loop_proxy(**inputs).logits
        with torch.no_grad():
            z_large = batch["large_logits"] if cached else loop_large(**inputs).logits
            z_small = loop_small(**inputs).logits
        loss, _ = proxy_tuning_loss(
            z_proxy,
            batch["labels"],
            z_large,
            z_small,
            alpha=cfg.alpha_train,
            shift_labels=True,
        )
        return loss

    times = run_rounds(b, trainer_round, lambda: _bench.hand_loop(loop_proxy, dataset, b, loss_fn))
    return report(name, "ConsistentProxyTuningTrainer", *times)


# ---------------------------------------------------------------- RDD
def segmentation_rows(n, size, classes, block=8):
    """Scenes of `block` x `block` squares of random classes (labels), images = class pattern + noise; the top two
    rows of every label map are ignored."""
    rows = []
    for _ in range(n):
        coarse = torch.randint(0, classes, (1, 1, size // block, size // block)).float()
        labels = F.interpolate(coarse, size=(size, size), mode="nearest")[0, 0].long()
        image = (labels.float() / classes).expand(3, -1, -1) + 0.5 * torch.randn(3, size, size)
        labels[:2] = IGNORE_INDEX
        rows.append({"pixel_values": image.contiguous(), "labels": labels})
    return rows


def bench_rdd(a, stage: int) -> _bench.Summary:
    b = with_batch(a, a.rdd_batch)
    torch.manual_seed(a.seed)
    student = _bench.upernet(a.rdd_student_widths, a.rdd_student_depths, a.rdd_student_head, a.rdd_classes)
    teacher = _bench.upernet(a.rdd_teacher_widths, a.rdd_teacher_depths, a.rdd_teacher_head, a.rdd_classes)
    loop_student, loop_teacher = copy.deepcopy(student), frozen_copy(teacher)
    rows = b.batch * (b.warmup + b.steps)
    dataset = segmentation_rows(rows, a.rdd_image, a.rdd_classes)
    pixels = b.batch * a.rdd_image * a.rdd_image
    min_kept = a.rdd_min_kept if a.rdd_min_kept is not None else pixels // 20  # ~5%, as the official setting
    warmup_steps = 10**9 if stage == 1 else 0  # every step of the run in that stage
    cfg = config_defaults(RDDConfig)
    name = f"rdd-stage{stage}"
    what = "teacher aux/main difficulty weights" if stage == 1 else "XOR of OHEM masks"
    print(
        f"[{name}] RDDTrainer stage {stage} ({what}; lambda_logits {cfg.lambda_logits}, aux_weight {cfg.aux_weight}, "
        f"ohem {cfg.ohem_thresh}, min_kept {min_kept}) | student UperNet-ConvNeXt {a.rdd_student_widths} "
        f"({_bench.n_params(student)}) | teacher UperNet-ConvNeXt {a.rdd_teacher_widths} "
        f"({_bench.n_params(teacher)}) | {a.rdd_classes} classes, image {a.rdd_image}, batch {b.batch}",
        flush=True,
    )

    def trainer_round(output_dir):
        args = RDDConfig(
            rdd_warmup_steps=warmup_steps,
            min_kept=min_kept,
            **_bench.trainer_kwargs(b, output_dir),
        )
        trainer = RDDTrainer(model=student, args=args, train_dataset=dataset, teacher_model=teacher)
        return _bench.timed_train(trainer, b.warmup)

    def loss_fn(batch):
        inputs, labels = {"pixel_values": batch["pixel_values"]}, batch["labels"]
        _, student_logits, student_aux = segmentation_forward(loop_student, inputs)
        with torch.no_grad():
            _, teacher_logits, teacher_aux = segmentation_forward(loop_teacher, inputs)
        task, _ = rdd_task_loss(
            student_logits,
            labels,
            stage=stage,
            teacher_logits=teacher_logits,
            teacher_aux_logits=teacher_aux,
            student_aux_logits=student_aux,
            aux_weight=cfg.aux_weight,
            ohem_thresh=cfg.ohem_thresh,
            min_kept=min_kept,
            ignore_index=cfg.ignore_index,
        )
        return task + cfg.lambda_logits * pixel_kd_loss(student_logits, teacher_logits, cfg.temperature)

    times = run_rounds(b, trainer_round, lambda: _bench.hand_loop(loop_student, dataset, b, loss_fn))
    return report(name, "RDDTrainer", *times)


# ---------------------------------------------------------------- driver
def report(name, trainer_name, trainer_times, loop_times, optimizer_desc) -> _bench.Summary:
    summary = _bench.Summary(name, trainer_times, loop_times)
    print(f"  {trainer_name} optimizer: {optimizer_desc}")
    print(f"  {summary.line()}", flush=True)
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer", choices=["l2d", "cpt", "rdd", "all"], default="all")
    g = p.add_argument_group("L2D")
    g.add_argument(
        "--l2d-student",
        type=int,
        nargs=3,
        default=[128, 4, 4],
        metavar=("HIDDEN", "LAYERS", "HEADS"),
    )
    g.add_argument(
        "--l2d-teacher",
        type=int,
        nargs=3,
        default=[192, 6, 6],
        metavar=("HIDDEN", "LAYERS", "HEADS"),
    )
    g.add_argument(
        "--l2d-decoder",
        type=int,
        default=128,
        help="label-query decoder width (both models)",
    )
    g.add_argument("--l2d-classes", type=int, default=20)
    g.add_argument("--l2d-label-density", type=float, default=0.2, help="share of positive labels")
    g.add_argument("--l2d-image", type=int, default=32, help="image side (patch 4)")
    g.add_argument("--l2d-batch", type=int, default=16)
    g = p.add_argument_group("CPT")
    g.add_argument(
        "--cpt-large",
        type=int,
        nargs=3,
        default=[256, 6, 4],
        metavar=("N_EMBD", "LAYERS", "HEADS"),
    )
    g.add_argument(
        "--cpt-small",
        type=int,
        nargs=3,
        default=[128, 4, 2],
        metavar=("N_EMBD", "LAYERS", "HEADS"),
    )
    g.add_argument("--cpt-vocab", type=int, default=2048)
    g.add_argument("--cpt-seq", type=int, default=64, help="tokens per row")
    g.add_argument("--cpt-batch", type=int, default=16)
    g.add_argument(
        "--cpt-cached",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also benchmark the cached large-model logits path",
    )
    g = p.add_argument_group("RDD")
    g.add_argument("--rdd-stages", type=int, nargs="+", choices=[1, 2], default=[1, 2])
    g.add_argument("--rdd-student-widths", type=int, nargs=4, default=[16, 32, 64, 128])
    g.add_argument("--rdd-student-depths", type=int, nargs=4, default=[1, 1, 2, 1])
    g.add_argument("--rdd-student-head", type=int, default=64, help="UperNet decoder width")
    g.add_argument("--rdd-teacher-widths", type=int, nargs=4, default=[32, 64, 128, 256])
    g.add_argument("--rdd-teacher-depths", type=int, nargs=4, default=[2, 2, 4, 2])
    g.add_argument("--rdd-teacher-head", type=int, default=128)
    g.add_argument("--rdd-classes", type=int, default=19)
    g.add_argument("--rdd-image", type=int, default=64, help="image side")
    g.add_argument("--rdd-batch", type=int, default=4)
    g.add_argument(
        "--rdd-min-kept",
        type=int,
        default=None,
        help="OHEM min_kept (default: 5%% of a batch's pixels)",
    )
    _bench.add_timing_args(p)
    a = p.parse_args()
    _bench.quiet(a.threads)

    print(
        f"setup: torch {torch.__version__}, {torch.get_num_threads()} threads | {a.rounds} rounds x "
        f"({a.warmup} warm-up + {a.steps} timed) steps per side | lr {a.lr}, weight decay {a.weight_decay}, "
        f"max_grad_norm {a.max_grad_norm}",
        flush=True,
    )
    t_start = time.perf_counter()
    runs = []
    if a.trainer in ("l2d", "all"):
        runs.append(lambda: bench_l2d(a))
    if a.trainer in ("cpt", "all"):
        runs.append(lambda: bench_cpt(a, cached=False))
        if a.cpt_cached:
            runs.append(lambda: bench_cpt(a, cached=True))
    if a.trainer in ("rdd", "all"):
        runs += [lambda stage=stage: bench_rdd(a, stage) for stage in a.rdd_stages]
    summaries = [run() for run in runs]

    print()
    print(
        f"{'benchmark':<12} {'Trainer ms':>10} {'loop ms':>9} {'ratio':>7} {'min ratio':>9}  target <= {_bench.TARGET}"
    )
    for s in summaries:
        print(
            f"{s.name:<12} {1e3 * s.trainer_median:>10.1f} {1e3 * s.loop_median:>9.1f} {s.ratio:>7.3f} "
            f"{s.ratio_of_minima:>9.3f}  {s.verdict}"
        )
    print(f"benchmark wall time: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
