"""Memory of the frozen models of the L2D, CPT and RDD trainers in float32 vs. bfloat16 (the configs' dtype fields).

What it measures: for `MultiLabelKDTrainer` (frozen: the teacher, `teacher_dtype`), `ConsistentProxyTuningTrainer`
(frozen: the large and the small base model, `large_dtype` / `small_dtype`) and `RDDTrainer` (frozen: the teacher,
`teacher_dtype`), with frozen models of tens of millions of parameters and a small trainable student, run once with
the dtype field at "float32" and once at "bfloat16":

- frozen bytes: parameters + buffers of the frozen models as the trainer holds them after its `__init__`
  (`trainer.teacher_model`, or `trainer.large_model` + `trainer.small_model`), exact;
- load peak: the process's peak resident set size (RSS) while the trainer is constructed (it loads the frozen
  models and prepares them), minus the baseline RSS;
- resident: RSS right after construction, minus the baseline (both read after `gc.collect()` and glibc's
  `malloc_trim(0)`, so that freed blocks malloc would keep do not count);
- train peak: peak RSS during `--steps` training steps (`trainer.train()`), minus the baseline;
- on a CUDA machine also `torch.cuda.memory_allocated` after construction and `torch.cuda.max_memory_allocated`
  during construction and during the steps, each minus the allocation at the baseline (GPU memory is then the
  figure that matters; RSS still shows the host side).

The baseline is taken after the imports, after building the trainable student (and its data), and before the frozen
models are built or loaded: every figure is what the frozen models, the trainer and (train peak) the training
steps add on top of that. The student, the trainer's own objects and the training state are the same in both runs,
so the float32 / bfloat16 difference is the frozen models'. "Peak RSS" is `VmHWM` of `/proc/self/status`, reset to
the current RSS (by writing 5 to `/proc/self/clear_refs`) at the baseline and before the steps, so each peak covers
its phase only; it counts every resident page, including file pages of a memory-mapped safetensors checkpoint while
it is read. Where /proc is not available it falls back to `resource.getrusage(...).ru_maxrss` (never reset; KiB on
Linux). Each (trainer, source, dtype) runs in a fresh Python process so no peak carries over from another.

Two ways to hand over the frozen models (`--sources`, both by default):
- `path`: the trainer loads them by name (`teacher_model_name_or_path`, `large_model_name_or_path`, ...) from float32
  safetensors checkpoints written once before the runs, passing the dtype field to `from_pretrained`. A float32
  load leaves the weights memory-mapped to the checkpoint file: they become resident (clean, reclaimable file pages)
  only when the first forward reads them, so its load figures are small and its train peak holds the weights. A
  bfloat16 load reads every float32 page and writes the bfloat16 copy: its load peak holds both for a moment.
- `object`: float32 models built in memory (same weights) after the baseline and passed as objects, as a recipe
  that trains its own teacher does; the trainer casts them in place (`model.to(dtype)`, tensor by tensor).
`peak` is the larger of the load and train peaks: the most RSS the run added at any moment.

The training steps must still work with bfloat16 frozen models: every step's loss must be finite (checked, printed).

    HF_HUB_OFFLINE=1 python benchmarks/bench_frozen_memory.py [--trainer l2d|cpt|rdd|all --sources path object
                                                               --dtypes float32 bfloat16 --steps 3 --threads N]

Defaults (3 trainers x 2 sources x 2 dtypes = 12 processes, 58-70M-parameter frozen models) run in about 3 minutes on
2 CPU cores and need about 2 GiB of memory.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MIB = 2**20
TRAINERS = ("l2d", "cpt", "rdd")


# ---------------------------------------------------------------- memory readings (no torch needed)
def _proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssFile, RssShmem of this process in bytes ({} without /proc)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def rss() -> int | None:
    return _proc_status().get("VmRSS")


def file_rss() -> int:
    """Resident file-backed and shared pages (e.g. of a memory-mapped checkpoint), bytes."""
    status = _proc_status()
    return status.get("RssFile", 0) + status.get("RssShmem", 0)


def peak_rss() -> int:
    """Peak RSS in bytes: VmHWM, else ru_maxrss (KiB on Linux)."""
    hwm = _proc_status().get("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def trim() -> None:
    """`gc.collect()`, then hand the C heap's free pages back to the OS (glibc `malloc_trim(0)`), so that RSS counts
    live memory rather than freed blocks malloc keeps (no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Set VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- models (child processes)
def build(kind: str, a):
    """A freshly initialized model of this benchmark: `kind` in l2d-teacher, l2d-student, cpt-large, cpt-small,
    rdd-teacher, rdd-student (the builders of `_bench`, shared with bench_trainers.py)."""
    import _bench  # benchmarks/ is sys.path[0]: the child runs this file

    if kind.startswith("l2d"):
        hidden, layers, heads = a.l2d_teacher if kind == "l2d-teacher" else a.l2d_student
        return _bench.label_query_vit(
            hidden,
            layers,
            heads,
            a.l2d_decoder,
            a.l2d_classes,
            32,
            4,
            decoder_heads=8,
            ff_multiplier=4,
        )
    if kind.startswith("cpt"):
        n_embd, layers, heads = a.cpt_large if kind == "cpt-large" else a.cpt_small
        return _bench.gpt2(n_embd, layers, heads, a.cpt_vocab, a.cpt_seq)
    teacher = kind == "rdd-teacher"
    widths = a.rdd_teacher_widths if teacher else [16, 32, 64, 128]
    depths = a.rdd_teacher_depths if teacher else [1, 1, 2, 1]
    head = a.rdd_teacher_head if teacher else 64
    return _bench.upernet(widths, depths, head, a.rdd_classes)


FROZEN = {
    "l2d": ("l2d-teacher",),
    "cpt": ("cpt-large", "cpt-small"),
    "rdd": ("rdd-teacher",),
}


def build_frozen(kind: str, a):
    """A frozen model of this benchmark in float32, the same weights every time (seeded)."""
    import torch

    which = kind.split("-")[0]
    torch.manual_seed(a.seed + FROZEN[which].index(kind))
    return build(kind, a)


def prepare(a) -> None:
    """Write the float32 checkpoints of every frozen model (and of the CPT small model, whose copy is the proxy)."""
    import _bench  # benchmarks/ is sys.path[0]: the child runs this file

    _bench.quiet(a.threads)
    for which in a.trainer_list:
        for kind in FROZEN[which]:
            model = build_frozen(kind, a)
            model.save_pretrained(os.path.join(a.workdir, kind))
            print(
                f"  wrote {kind}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters",
                flush=True,
            )
            del model


def student_and_data(which: str, a):
    """The trainable model and `a.steps` batches of synthetic data."""
    import torch

    from hf_methods.models.proxy_tuned import proxy_from_small

    torch.manual_seed(a.seed + 10)
    rows = a.batch * a.steps
    if which == "l2d":
        data = [
            {
                "pixel_values": torch.randn(3, 32, 32),
                "labels": (torch.rand(a.l2d_classes) < 0.2).float(),
            }
            for _ in range(rows)
        ]
        return build("l2d-student", a), data
    if which == "cpt":
        from transformers import GPT2LMHeadModel

        data = []
        for _ in range(rows):
            ids = torch.randint(2, a.cpt_vocab, (a.cpt_seq,))
            data.append(
                {
                    "input_ids": ids,
                    "attention_mask": torch.ones_like(ids),
                    "labels": ids,
                }
            )
        # the proxy: a trainable float32 copy of the small model
        small = GPT2LMHeadModel.from_pretrained(os.path.join(a.workdir, "cpt-small"))
        return proxy_from_small(small), data
    size = 64
    data = []
    for _ in range(rows):
        labels = torch.randint(0, a.rdd_classes, (size, size))
        data.append({"pixel_values": torch.randn(3, size, size), "labels": labels})
    return build("rdd-student", a), data


def make_trainer(which, source, dtype, student, data, a, output_dir, callbacks):
    from hf_methods.trainers import (
        ConsistentProxyTuningConfig,
        ConsistentProxyTuningTrainer,
        MultiLabelKDConfig,
        MultiLabelKDTrainer,
        RDDConfig,
        RDDTrainer,
    )

    common = {
        "output_dir": output_dir,
        "per_device_train_batch_size": a.batch,
        "max_steps": a.steps,
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "logging_strategy": "steps",
        "logging_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": not a.cuda,
        "seed": a.seed,
    }
    # by name (the trainer loads them with the dtype), or float32 objects built in memory (the trainer casts them)
    frozen = {
        kind: os.path.join(a.workdir, kind) if source == "path" else build_frozen(kind, a) for kind in FROZEN[which]
    }
    if which == "cpt":
        large, small = frozen["cpt-large"], frozen["cpt-small"]
        args = ConsistentProxyTuningConfig(large_dtype=dtype, small_dtype=dtype, **common)
        return ConsistentProxyTuningTrainer(
            model=student,
            args=args,
            train_dataset=data,
            large_model=large,
            small_model=small,
            callbacks=callbacks,
        )
    teacher = frozen[f"{which}-teacher"]
    if which == "l2d":
        args = MultiLabelKDConfig(teacher_dtype=dtype, **common)
        return MultiLabelKDTrainer(
            model=student,
            args=args,
            train_dataset=data,
            teacher_model=teacher,
            callbacks=callbacks,
        )
    min_kept = a.batch * 64 * 64 // 20
    args = RDDConfig(teacher_dtype=dtype, rdd_warmup_steps=1, min_kept=min_kept, **common)  # both stages
    return RDDTrainer(
        model=student,
        args=args,
        train_dataset=data,
        teacher_model=teacher,
        callbacks=callbacks,
    )


def frozen_models(trainer, which: str) -> list:
    models = [trainer.large_model, trainer.small_model] if which == "cpt" else [trainer.teacher_model]
    return [trainer.accelerator.unwrap_model(m) for m in models]


def measure(a) -> dict:
    """One (trainer, source, dtype) run in this process; returns its figures."""
    import _bench  # benchmarks/ is sys.path[0]: the child runs this file
    import torch
    from transformers import TrainerCallback

    _bench.quiet(a.threads)
    a.cuda = torch.cuda.is_available()
    which, source, dtype = a.which, a.source, a.dtype

    class Losses(TrainerCallback):
        def __init__(self):
            self.losses = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    student, data = student_and_data(which, a)
    if a.cuda:
        student.cuda()
    trim()
    can_reset = reset_peak_rss()
    base_rss = rss() if can_reset else peak_rss()
    base_file = file_rss()
    base_cuda = torch.cuda.memory_allocated() if a.cuda else 0
    if a.cuda:
        torch.cuda.reset_peak_memory_stats()

    losses = Losses()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = make_trainer(which, source, dtype, student, data, a, output_dir, [losses])
        trim()
        out = {
            "load_peak": peak_rss() - base_rss,
            "resident": (rss() or peak_rss()) - base_rss,
            "resident_file": file_rss() - base_file,
        }
        frozen = frozen_models(trainer, which)
        out["frozen_params"] = sum(p.numel() for m in frozen for p in m.parameters())
        out["frozen_bytes"] = sum(t.numel() * t.element_size() for m in frozen for t in [*m.parameters(), *m.buffers()])
        out["frozen_dtypes"] = sorted({str(p.dtype).removeprefix("torch.") for m in frozen for p in m.parameters()})
        if a.cuda:
            out["cuda_resident"] = torch.cuda.memory_allocated() - base_cuda
            out["cuda_load_peak"] = torch.cuda.max_memory_allocated() - base_cuda
            torch.cuda.reset_peak_memory_stats()
        reset_peak_rss()
        trainer.train()
        out["train_peak"] = peak_rss() - base_rss
        out["peak"] = max(out["load_peak"], out["train_peak"])
        if a.cuda:
            out["cuda_train_peak"] = torch.cuda.max_memory_allocated() - base_cuda
    out["losses"] = losses.losses
    out["finite"] = len(losses.losses) == a.steps and all(math.isfinite(x) for x in losses.losses)
    out["peak_reset"] = can_reset
    return out


# ---------------------------------------------------------------- driver
def child_command(a, mode: str, *extra: str) -> list[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        mode,
        "--workdir",
        a.workdir,
    ]
    for name in (
        "steps",
        "batch",
        "seed",
        "threads",
        "l2d_classes",
        "l2d_decoder",
        "cpt_vocab",
        "cpt_seq",
        "rdd_classes",
        "rdd_teacher_head",
    ):
        value = getattr(a, name)
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    for name in (
        "l2d_teacher",
        "l2d_student",
        "cpt_large",
        "cpt_small",
        "rdd_teacher_widths",
        "rdd_teacher_depths",
    ):
        cmd += [f"--{name.replace('_', '-')}", *map(str, getattr(a, name))]
    cmd += ["--trainer", a.trainer]
    return [*cmd, *extra]


def run_child(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer", choices=[*TRAINERS, "all"], default="all")
    p.add_argument("--sources", nargs="+", choices=["path", "object"], default=["path", "object"])
    p.add_argument(
        "--dtypes",
        nargs="+",
        choices=["float32", "bfloat16", "float16"],
        default=["float32", "bfloat16"],
    )
    p.add_argument(
        "--steps",
        type=int,
        default=3,
        help="training steps per run (losses must be finite)",
    )
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--l2d-teacher",
        type=int,
        nargs=3,
        default=[768, 8, 12],
        metavar=("HIDDEN", "LAYERS", "HEADS"),
    )
    p.add_argument(
        "--l2d-student",
        type=int,
        nargs=3,
        default=[192, 4, 3],
        metavar=("HIDDEN", "LAYERS", "HEADS"),
    )
    p.add_argument(
        "--l2d-decoder",
        type=int,
        default=256,
        help="label-query decoder width (both models)",
    )
    p.add_argument("--l2d-classes", type=int, default=20)
    p.add_argument(
        "--cpt-large",
        type=int,
        nargs=3,
        default=[768, 8, 12],
        metavar=("N_EMBD", "LAYERS", "HEADS"),
    )
    p.add_argument(
        "--cpt-small",
        type=int,
        nargs=3,
        default=[256, 4, 4],
        metavar=("N_EMBD", "LAYERS", "HEADS"),
    )
    p.add_argument("--cpt-vocab", type=int, default=8192)
    p.add_argument("--cpt-seq", type=int, default=64)
    p.add_argument("--rdd-teacher-widths", type=int, nargs=4, default=[96, 192, 384, 768])
    p.add_argument("--rdd-teacher-depths", type=int, nargs=4, default=[3, 3, 9, 3])
    p.add_argument("--rdd-teacher-head", type=int, default=512, help="UperNet decoder width")
    p.add_argument("--rdd-classes", type=int, default=19)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    # internal: the child processes
    p.add_argument("--child", choices=["prepare", "measure"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--which", choices=TRAINERS, help=argparse.SUPPRESS)
    p.add_argument("--source", choices=["path", "object"], help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.trainer_list = list(TRAINERS) if a.trainer == "all" else [a.trainer]

    if a.child == "prepare":
        prepare(a)
        return
    if a.child == "measure":
        print("RESULT " + json.dumps(measure(a)), flush=True)
        return

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        a.workdir = workdir
        print(f"writing float32 checkpoints of the frozen models to {workdir}", flush=True)
        subprocess.run(child_command(a, "prepare"), check=True)
        results = {}
        for which in a.trainer_list:
            for source in a.sources:
                for dtype in a.dtypes:
                    extra = ("--which", which, "--source", source, "--dtype", dtype)
                    r = run_child(child_command(a, "measure", *extra))
                    results[which, source, dtype] = r
                    print(f"  {which} {source:<6} {dtype:<8}: {run_line(r)}", flush=True)

    if not all(r["peak_reset"] for r in results.values()):
        print("note: /proc/self/clear_refs not writable: peaks are ru_maxrss, not reset between phases")
    print()
    keys = ["frozen_bytes", "load_peak", "resident", "train_peak", "peak"]
    if any("cuda_train_peak" in r for r in results.values()):
        keys += ["cuda_resident", "cuda_load_peak", "cuda_train_peak"]
    print("MiB; RSS figures over the baseline (see the module docstring)")
    header = "".join(f"{k:>16}" for k in keys)
    print(f"{'trainer':<8}{'source':<8}{'dtype':<10}{header}  losses")
    for (which, source, dtype), r in results.items():
        row = "".join(f"{r[k] / MIB:>16.1f}" for k in keys)
        print(f"{which:<8}{source:<8}{dtype:<10}{row}  {'finite' if r['finite'] else 'NOT FINITE'}")
    low = [d for d in a.dtypes if d != "float32"]
    if "float32" in a.dtypes and low:
        print()
        for which in a.trainer_list:
            for source in a.sources:
                ref = results[which, source, "float32"]
                for dtype in low:
                    print(f"{which} ({source}) {dtype} vs float32: {compare(results[which, source, dtype], ref)}")
    ok = all(r["finite"] for r in results.values())
    print(f"training steps with every dtype: {'all losses finite' if ok else 'SOME LOSSES NOT FINITE'}")
    print(f"benchmark wall time: {time.perf_counter() - t_start:.1f} s")


def run_line(r: dict) -> str:
    """One run's figures on one line."""
    cuda = ""
    if "cuda_train_peak" in r:
        cuda = (
            f" | CUDA: resident {mib(r['cuda_resident'])}, load peak {mib(r['cuda_load_peak'])}, train peak "
            f"{mib(r['cuda_train_peak'])}"
        )
    losses = ", ".join(f"{x:.4g}" for x in r["losses"])
    return (
        f"frozen {r['frozen_params'] / 1e6:.1f}M params ({'/'.join(r['frozen_dtypes'])}) = "
        f"{mib(r['frozen_bytes'])} MiB | RSS over baseline, MiB: load peak {mib(r['load_peak'])}, resident "
        f"{mib(r['resident'])} (file-backed {mib(r['resident_file'])}), train peak {mib(r['train_peak'])}"
        f"{cuda} | losses {losses} ({'finite' if r['finite'] else 'NOT FINITE'})"
    )


def compare(r: dict, ref: dict) -> str:
    """The lower-precision run against the float32 one: ratio and difference of each figure."""
    keys = ["frozen_bytes", "train_peak", "peak", "load_peak", "resident"]
    if "cuda_train_peak" in r:
        keys += ["cuda_resident", "cuda_train_peak"]
    parts = []
    for k in keys:
        ratio = f"{r[k] / ref[k]:.2f}x" if ref[k] > 0 else "n/a"
        parts.append(f"{k} {ratio} ({mib(ref[k]).strip()} -> {mib(r[k]).strip()})")
    return ", ".join(parts)


def mib(n) -> str:
    return f"{n / MIB:.1f}"


if __name__ == "__main__":
    main()
