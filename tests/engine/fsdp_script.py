"""FSDP2 (`torch.distributed.fsdp.fully_shard`) over a TLEG learngene's auxiliary network, for test_learngene_fsdp.py
(not collected by pytest). accelerate applies FSDP on GPUs only, so this wraps the model as accelerate's FSDP2 does
(every module whose class is in `model._no_split_modules`, then the root) and runs one forward and backward per rank
on its half of the batch over gloo.

    python -m torch.distributed.run --nproc_per_node 2 tests/engine/fsdp_script.py OUTDIR

Rank 0 also runs the unsharded model on the whole batch and writes OUTDIR/result.json: both losses, the largest
gradient difference, and which modules were wrapped.
"""

import copy
import json
import os
import sys

import torch
import torch.distributed as dist


def main(outdir):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import ViTConfig

    from hf_methods.models.tleg import TLEGConfig, TLEGModel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    base = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                     patch_size=4, num_channels=1, num_labels=4, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)  # fmt: skip
    model = TLEGModel(TLEGConfig(base_model_class="ViTForImageClassification", base_config=base.to_dict(),
                                 aux_num_layers=3))  # fmt: skip
    whole = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)

    mesh = init_device_mesh("cpu", (world,))
    units = tuple(c for c in {type(m) for m in model.modules()} if c.__name__ in model._no_split_modules)
    wrapped = []
    for name, module in reversed(list(model.named_modules())):
        if name and isinstance(module, units):
            fully_shard(module, mesh=mesh)
            wrapped.append(type(module).__name__)
    fully_shard(model, mesh=mesh)
    half = slice(rank * 8 // world, (rank + 1) * 8 // world)
    loss = model(pixel_values=x[half], labels=y[half]).loss
    loss.backward()
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}  # averaged over the ranks
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    if rank == 0:
        whole_loss = whole(pixel_values=x, labels=y).loss
        whole_loss.backward()
        diff = max((grads[n] - p.grad).abs().max().item() for n, p in whole.named_parameters())
        result = {
            "sharded_loss": sum(float(v) for v in losses) / world,
            "whole_loss": float(whole_loss),
            "max_grad_difference": diff,
            "gene_is_sharded": type(model.gene.theta_a.mlp.fc1.weight).__name__ == "DTensor",
            "wrapped": sorted(set(wrapped)),
        }
        with open(os.path.join(outdir, "result.json"), "w") as f:
            json.dump(result, f)
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # as the DDP scripts: no gloo teardown at exit (pytorch/pytorch#179291)


if __name__ == "__main__":
    main(sys.argv[1])
