"""Learngene Pool speed, measured side by side in one run (never a timed test: machines are noisy).

Forward time of one stitched configuration run by the pool (`pool(pixel_values, stitch_config_id=c)`) / the same
configuration exported as a standalone `StitchedViTForImageClassification` (target <= 1.05): the pool must not
cost more than the network it runs. Calls alternate between the two so drift hits both alike; medians compared.

    python benchmarks/bench_pool.py [--widths 192 384 --layers 6 --batch 32 --steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_methods import LearngenePoolModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", type=int, nargs="+", default=[192, 384])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    torch.manual_seed(0)
    instances = [
        ViTForImageClassification(
            ViTConfig(
                hidden_size=w,
                num_hidden_layers=a.layers,
                num_attention_heads=w // 64,
                intermediate_size=4 * w,
                image_size=a.image,
                patch_size=a.patch,
                num_labels=10,
            )
        )
        for w in a.widths
    ]
    pixels = torch.randn(a.batch, 3, a.image, a.image)
    pool = LearngenePoolModel.from_instances(instances, stitch_init="least_squares", calibration_inputs=pixels).eval()
    # a cross-width stitch in the middle: half the front instance, the stitch, half the end instance
    config = next(c for c in pool.stitch_configs if c["j"] == a.layers // 2 - 1 and c["k"] == a.layers // 2)
    exported = pool.export(config["id"]).eval()
    sides = {
        "pool": lambda: pool(pixel_values=pixels, stitch_config_id=config["id"]),
        "exported": lambda: exported(pixel_values=pixels),
    }
    with torch.no_grad():
        assert torch.equal(sides["pool"]().logits, sides["exported"]().logits)
        for fn in sides.values():  # warm-up
            fn(), fn()
        times = {k: [] for k in sides}
        for i in range(a.steps):
            for k in list(sides) if i % 2 == 0 else list(sides)[::-1]:  # ABBA
                t = time.perf_counter()
                sides[k]()
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"device cpu, threads {torch.get_num_threads()}, instances widths {a.widths}, {a.layers} layers each, "
        f"config {config['id']} ({config['front']}->{config['end']}, j={config['j']}, k={config['k']}, "
        f"{config['depth']} layers), batch {a.batch}x{(a.image // a.patch) ** 2 + 1} tokens, {a.steps} rounds"
    )
    print(f"exported standalone forward  median {med['exported'] * 1e3:8.1f} ms")
    print(f"pool running the config      median {med['pool'] * 1e3:8.1f} ms")
    print(f"ratio pool / exported: {med['pool'] / med['exported']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
