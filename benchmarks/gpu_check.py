"""GPU check of the scaling paths: TLEG distillation and GPT-2 knowledge distillation on one CUDA GPU in bf16, plainly,
under DeepSpeed ZeRO-2 and under FSDP2, printing step time, peak GPU memory, the losses and what was saved.

    python benchmarks/gpu_check.py [--steps 30] [--out /tmp/gpu_check]     # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --smoke                                 # anywhere: tiny models, CPU, fp32, no FSDP

Every (setting, job) pair runs in its own `accelerate launch --num_processes 1` with the shipped configs
(`hf_methods.recipes.accelerate_configs`), so that its peak memory and its DeepSpeed / FSDP state are its own.

- `tleg`: a TLEG learngene's auxiliary ViT (width 384, 12 generated layers, `DistillationTrainer`) distilled from a
  ViT-B-sized teacher (width 768, 12 layers), 224x224 images, batch 64.
- `kd`: a GPT-2 student (width 384, 6 layers) distilled from a GPT-2-small-sized teacher (768, 12 layers), 256 tokens,
  batch 16.

Both use random weights and random inputs: the check is about the code paths (bf16 autocast, the frozen teacher in
its own engine, ZeRO-2 and FSDP2 sharding, consolidated saving), their step time and memory, not about accuracy. A
step's time is the median wall time between consecutive optimizer steps after the first `--warmup` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # name -> accelerate config (None: plain single-device accelerate)
    "one-gpu": None,
    "zero2": "zero2",
    "fsdp": "fsdp",
}
JOBS = ("tleg", "kd")


def _models(job: str, smoke: bool):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification

    from hf_methods.models.tleg import TLEGConfig, TLEGModel

    torch.manual_seed(0)
    if job == "tleg":

        def vit(width, layers, heads):
            size = dict(image_size=16, patch_size=4) if smoke else dict(image_size=224, patch_size=16)
            return ViTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=4 * width, num_labels=10, **size)  # fmt: skip

        teacher = ViTForImageClassification(vit(32, 2, 2) if smoke else vit(768, 12, 12))
        student_base = vit(16, 1, 2) if smoke else vit(384, 1, 6)
        config = TLEGConfig(base_model_class="ViTForImageClassification", base_config=student_base.to_dict(),
                            aux_num_layers=3 if smoke else 12)  # fmt: skip
        student = TLEGModel(config)
        size = student_base.image_size
        g = torch.Generator().manual_seed(0)
        n = 16 if smoke else 1024
        x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
        rows = [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]
        return student, teacher, rows, (4 if smoke else 64)

    def gpt2(width, layers, heads):
        return GPT2Config(n_embd=width, n_layer=layers, n_head=heads, vocab_size=256 if smoke else 50257,
                          n_positions=32 if smoke else 256)  # fmt: skip

    teacher = GPT2LMHeadModel(gpt2(32, 2, 2) if smoke else gpt2(768, 12, 12))
    student = GPT2LMHeadModel(gpt2(16, 1, 2) if smoke else gpt2(384, 6, 6))
    seq, vocab = student.config.n_positions, student.config.vocab_size
    n = 16 if smoke else 512
    ids = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(seq, dtype=torch.long), "labels": ids[i]}
            for i in range(n)]  # fmt: skip
    return student, teacher, rows, (4 if smoke else 16)


def worker(job: str, setting: str, out: Path, steps: int, warmup: int, smoke: bool) -> None:
    """One training under the current launch; rank 0 writes out/result.json."""
    import torch
    from transformers import TrainerCallback

    from hf_methods.trainers import DistillationConfig, DistillationTrainer

    student, teacher, rows, batch = _models(job, smoke)  # before the TrainingArguments (see deepspeed_script.py)
    args = DistillationConfig(
        output_dir=str(out / "run"), report_to="none", per_device_train_batch_size=batch, max_steps=steps,
        learning_rate=1e-4, lr_scheduler_type="constant", logging_steps=1, save_strategy="no", disable_tqdm=True,
        bf16=not smoke, use_cpu=smoke, seed=0, alpha=0.5, temperature=2.0, dataloader_num_workers=0,
    )  # fmt: skip

    class StepEnds(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    ends = StepEnds()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=rows,
                                  callbacks=[ends])  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    trainer.save_model(str(out / "final"))
    steps_s = [b - a for a, b in zip(ends.times[warmup:], ends.times[warmup + 1 :])]
    if trainer.is_world_process_zero():
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        result = {
            "job": job,
            "setting": setting,
            "distributed_type": trainer.accelerator.distributed_type.value,
            "mixed_precision": trainer.accelerator.mixed_precision,
            "step_ms": 1000 * statistics.median(steps_s) if steps_s else None,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
            "saved": sorted(os.listdir(out / "final")),
            "teacher_wrapper": type(trainer.teacher_model).__name__,
        }
        (out / "result.json").write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    os._exit(0)  # no process-group teardown at exit (see tests/trainers/ddp_script.py)


def launch(job, setting, out: Path, a) -> dict:
    from hf_methods.recipes.accelerate_configs import config_file

    config = SETTINGS[setting]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no" if a.smoke else "bf16", "--dynamo_backend", "no"]  # fmt: skip
    cmd += ["--config_file", str(config_file(config))] if config else (["--cpu"] if a.smoke else [])
    cmd += [__file__, "--worker", job, "--setting", setting, "--out", str(out), "--steps", str(a.steps),
            "--warmup", str(a.warmup)] + (["--smoke"] if a.smoke else [])  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if a.smoke:
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "result.json").is_file():
        lines = [line for line in proc.stderr.splitlines() if "Error" in line or "error:" in line]
        return {"job": job, "setting": setting, "error": (lines or proc.stderr.splitlines() or ["?"])[-1][:300]}
    return {**json.loads((out / "result.json").read_text()), "wall_s": round(time.time() - start, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("/tmp/hf_methods_gpu_check"))
    p.add_argument("--smoke", action="store_true", help="tiny models on CPU in fp32, without FSDP (GPUs only)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    p.add_argument("--worker", choices=JOBS, help=argparse.SUPPRESS)
    p.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.setting, a.out, a.steps, a.warmup, a.smoke)
    import torch

    if not a.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here; run it on a GPU machine, or pass --smoke for the CPU code-path check")
    if a.out.exists() and any(a.out.iterdir()):
        sys.exit(f"gpu_check: {a.out} is not empty; pass another --out")
    settings = [s for s in a.settings if not (a.smoke and s == "fsdp")]  # accelerate applies FSDP on GPUs only
    device = "CPU (smoke)" if a.smoke else torch.cuda.get_device_name(0)
    print(f"gpu_check on {device}: {a.steps} steps, median step time after {a.warmup}", flush=True)
    rows = []
    for setting in settings:
        for job in a.jobs:
            out = a.out / f"{setting}-{job}"
            out.mkdir(parents=True)
            row = launch(job, setting, out, a)
            rows.append(row)
            if "error" in row:
                print(f"{setting:6} {job:5} FAILED: {row['error']}", flush=True)
                continue
            saved = "model.safetensors" in row["saved"]
            print(
                f"{setting:6} {job:5} {row['distributed_type']:9} {row['mixed_precision']:4} "
                f"step {row['step_ms']:8.1f} ms  peak {row['peak_gpu_mib'] or 0:8.0f} MiB  "
                f"loss {row['first_loss']:.4f} -> {row['last_loss']:.4f}  finite {row['finite']}  "
                f"saved model.safetensors {saved}  teacher {row['teacher_wrapper']}  ({row['wall_s']} s)",
                flush=True,
            )
    (a.out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    failed = [r for r in rows if "error" in r]
    print(f"{len(rows) - len(failed)}/{len(rows)} ran; results in {a.out / 'gpu_check.json'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
