"""What freezing the imported objects out of the cyclic garbage collector saves per `Trainer.train()` (hf_methods does
it in `cli.run_script`, the tests after collection). Every `train()` ends with a full `gc.collect()` (accelerate's
`free_memory`); over the million objects torch + transformers + hf_methods create at import, that costs a fraction of
a second, more than a whole tiny training. Two fresh processes, side by side, ABAB; the ratio of their medians.

    HF_HUB_OFFLINE=1 python benchmarks/bench_gc_freeze.py [--trainings 5 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gc, json, sys, time
import torch
import hf_methods
from transformers import Trainer, TrainingArguments
from hf_methods.data import digits, in_memory_rows
from hf_methods.recipe import digits_vgg

torch.set_num_threads(1)
rows = in_memory_rows(digits(8, seed=0, max_train_samples=64)["train"])
if sys.argv[1] == "frozen":
    gc.collect()
    gc.freeze()
times = []
for _ in range(int(sys.argv[2])):
    args = TrainingArguments(sys.argv[3], max_steps=2, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, logging_strategy="no")
    start = time.perf_counter()
    Trainer(digits_vgg([4], [1]), args, train_dataset=rows).train()
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=5, help="tiny trainings (2 steps each) per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per arm, run ABAB")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    times = {"default": [], "frozen": []}
    for _ in range(args.rounds):
        for arm in times:
            out = subprocess.run([sys.executable, "-c", CHILD, arm, str(args.trainings), "/tmp/bench_gc_freeze"],
                                 env=env, capture_output=True, text=True, check=True)  # fmt: skip
            times[arm] += json.loads(out.stdout.strip().splitlines()[-1])
    default, frozen = statistics.median(times["default"]), statistics.median(times["frozen"])
    print(f"one tiny Trainer.train() (2 steps): default gc {default * 1000:.0f} ms, frozen {frozen * 1000:.0f} ms; "
          f"ratio default / frozen = {default / frozen:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
