"""Learngene auxiliary-network speed (TLEG, SWS), measured side by side in one run (never a timed test).

1. TLEG and SWS auxiliary-model train steps / stock ViTForImageClassification train step, same depth, width and
   inputs (target <= 1.05). Steps alternate between the models so drift hits all alike; medians are compared.
   SWS uses the paper's 3-3-4-3-3 stages at 16 layers (other depths: stages split by the same proportions).
2. `expand(12)` wall time for a ViT-Base-sized learngene.

    python benchmarks/bench_learngene.py [--hidden 192 --layers 16 --batch 32 --steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_methods import SWSConfig, SWSModel, TLEGConfig, TLEGModel
from hf_methods.models.sws import default_layers_source


def step_fn(model, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()

    return step


def time_once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skip-expand", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=4 * a.hidden,
        image_size=a.image,
        patch_size=a.patch,
        num_labels=10,
    )
    stock = ViTForImageClassification(config).train()
    aux = TLEGModel(TLEGConfig.from_base(stock, aux_num_layers=a.layers)).train()
    source = default_layers_source([3, 3, 4, 3, 3], a.layers)
    stages = [source.count(s) for s in sorted(set(source))]
    sws = SWSModel(SWSConfig.from_base(stock, stage_sizes=stages)).train()
    batch = {"pixel_values": torch.randn(a.batch, 3, a.image, a.image), "labels": torch.randint(0, 10, (a.batch,))}
    steps = {"stock": step_fn(stock, batch), "tleg": step_fn(aux, batch), "sws": step_fn(sws, batch)}
    for fn in steps.values():  # warm-up
        fn(), fn()
    times = {k: [] for k in steps}
    for _ in range(a.steps):
        for k, fn in steps.items():
            times[k].append(time_once(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"device cpu, threads {torch.get_num_threads()}, ViT hidden {a.hidden}, {a.layers} layers, "
        f"batch {a.batch}x{(a.image // a.patch) ** 2 + 1} tokens, {a.steps} alternating steps"
    )
    print(f"stock ViT train step   median {med['stock'] * 1e3:8.1f} ms")
    print(f"TLEG aux train step    median {med['tleg'] * 1e3:8.1f} ms")
    print(f"SWS aux train step     median {med['sws'] * 1e3:8.1f} ms  (stages {'-'.join(map(str, stages))})")
    print(f"ratio TLEG aux / stock: {med['tleg'] / med['stock']:.3f}  (target <= 1.05)")
    print(f"ratio SWS aux / stock:  {med['sws'] / med['stock']:.3f}  (target <= 1.05)")

    if not a.skip_expand:
        base = ViTConfig(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            image_size=224,
            patch_size=16,
            num_labels=1000,
        )
        gene = TLEGModel(
            TLEGConfig(base_model_class="ViTForImageClassification", base_config=base.to_dict(), aux_num_layers=12)
        )
        runs = [time_once(lambda: gene.expand(12)) for _ in range(3)]
        build = [time_once(lambda: ViTForImageClassification(base)) for _ in range(3)]
        print(
            f"expand(12) of a ViT-Base learngene ({gene.learngene_num_parameters() / 1e6:.1f}M stored params): "
            f"median {statistics.median(runs):.2f} s  (constructing a stock ViT-Base alone: "
            f"{statistics.median(build):.2f} s; ratio {statistics.median(runs) / statistics.median(build):.2f})"
        )


if __name__ == "__main__":
    main()
