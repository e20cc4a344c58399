"""2-process IMWA run for test_imwa.py (not collected by pytest).

torchrun --nproc_per_node 2 tests/trainers/imwa_ddp_script.py OUTDIR

Each process trains one of the 2 replicas of a small BatchNorm + dropout network for 3 episodes of 2 steps. Every
replica writes its weights at the end of every episode, before the average (OUTDIR/replica{r}-episode{e}.safetensors);
rank 0 saves the final average (OUTDIR/final/model.safetensors), its EMA (OUTDIR/ema.safetensors) and the run's
`history` and `log_history` (OUTDIR/result.json).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from transformers import TrainerCallback  # noqa: E402


class ConvBN(nn.Module):
    """8x8 one-channel images, 10 labels; BatchNorm statistics and dropout make the replicas' seeds matter."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, pixel_values, labels=None):
        logits = self.head(self.body(pixel_values).flatten(1))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def network():
    torch.manual_seed(0)
    return ConvBN()


def image_rows(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]


def config(output_dir):
    from hf_methods.trainers.imwa_config import IMWAConfig

    return IMWAConfig(
        output_dir=output_dir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="linear",
        max_steps=6,
        imwa_replicas=2,
        imwa_episodes=3,
        imwa_ema_decay=0.5,
        seed=3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )


class Snapshot(TrainerCallback):
    """Writes the replica's weights when its episode ends, before the processes average them."""

    def __init__(self, out, rank):
        self.out, self.rank, self.episode = out, rank, 0

    def on_train_end(self, args, state, control, model=None, **kwargs):
        from safetensors.torch import save_file

        path = os.path.join(self.out, f"replica{self.rank}-episode{self.episode}.safetensors")
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
        self.episode += 1


def main(out):
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file

    from hf_methods.trainers.imwa_trainer import IMWATrainer

    rank = int(os.environ["RANK"])
    args = config(os.path.join(out, "run"))
    trainer = IMWATrainer(network(), args, train_dataset=image_rows(), callbacks=[Snapshot(out, rank)])
    trainer.train()
    trainer.save_model(os.path.join(out, "final"))
    if rank == 0:
        save_file({k: v.contiguous() for k, v in trainer.ema_model.state_dict().items()}, f"{out}/ema.safetensors")
        result = {"world_size": args.world_size, "history": trainer.history, "log_history": trainer.log_history}
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)
    dist.barrier()  # both ranks leave together, then without destructors (see multilabel_ddp_script.shut_down)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
