"""How many torch threads a recipe should use: the step time of the TLEG / SWS recipes' teacher training with 1 and
2 threads, alone and two runs at a time on this machine. `--task digits`: their default 12-layer ViT, width 64, on
16x16 digits, batch 32; `--task bbc_news`: fine-tuning the pretrained MiniLM (22.7M parameters) on BBC News, 32
tokens, batch 16 (the text recipes'). Both through the recipes' own `training_args` and Trainer.

    python benchmarks/bench_threads.py [--task digits|bbc_news] [--steps 40] [--warmup 5]

Every configuration runs in fresh processes (this script with `--worker`); "two at a time" starts two such processes
together, as two users' runs on one machine would. Printed: the median milliseconds per optimizer step of each
configuration, and for each thread count the ratio (two at a time) / (alone), what sharing the machine costs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from _bench import StepEndTimes, quiet, step_durations


def worker(task: str, threads: int, steps: int, warmup: int) -> None:
    quiet(threads)
    import transformers

    from hf_methods.recipe import MINILM, load_task, local_model, training_args
    from hf_methods.recipes.tleg.pipeline import TLEGRecipe
    from hf_methods.trainers import ResumableTrainer

    text = {"dataset": "bbc_news", "teacher": MINILM, "batch_size": 16} if task == "bbc_news" else {}
    recipe = TLEGRecipe(num_threads=threads, save_checkpoints=False, **text)
    data, _, _ = load_task(recipe)
    transformers.set_seed(0)
    if text:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(local_model(MINILM)[0], num_labels=5)
    else:
        model = transformers.ViTForImageClassification(
            transformers.ViTConfig(
                image_size=recipe.image_size, patch_size=recipe.patch_size, num_channels=1,
                hidden_size=recipe.hidden_size, num_hidden_layers=recipe.teacher_num_layers,
                num_attention_heads=recipe.num_attention_heads, intermediate_size=recipe.intermediate_size,
                num_labels=10,
            )
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = training_args(
            recipe, out, learning_rate=1e-3, max_steps=steps + warmup, eval_strategy="no", disable_tqdm=True
        )
        times = StepEndTimes()
        trainer = ResumableTrainer(model, args, train_dataset=data["train"], callbacks=[times])
        trainer.train()
    print(json.dumps(step_durations(times.times, warmup)))


def run(task: str, threads: int, together: int, steps: int, warmup: int) -> float:
    """Median ms per step over `together` processes started at once."""
    command = [sys.executable, __file__, "--worker", "--task", task, "--threads", str(threads), "--steps", str(steps)]
    procs = [
        subprocess.Popen([*command, "--warmup", str(warmup)], stdout=subprocess.PIPE, text=True)
        for _ in range(together)
    ]
    durations = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"worker failed ({proc.returncode})")
        durations += json.loads(out.strip().splitlines()[-1])
    return 1000 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=("digits", "bbc_news"), default="digits", help="which teacher trains")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per process")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    a = parser.parse_args()
    if a.worker:
        return worker(a.task, a.threads, a.steps, a.warmup)
    import os

    print(f"{a.task} teacher training step, {os.cpu_count()} CPUs; median ms per step")
    print("| threads per run | alone | two runs at a time | two at a time / alone |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        alone = run(a.task, threads, 1, a.steps, a.warmup)
        shared = run(a.task, threads, 2, a.steps, a.warmup)
        print(f"| {threads} | {alone:.1f} | {shared:.1f} | **{shared / alone:.2f}** |", flush=True)


if __name__ == "__main__":
    main()
