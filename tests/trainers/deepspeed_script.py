"""One DistillationTrainer run for test_deepspeed.py (not collected by pytest): alone, or under `accelerate launch`
with a shipped DeepSpeed config (DS_ACCELERATOR=cpu, processes over gloo).

    python tests/trainers/deepspeed_script.py OUTDIR [distillation|pool|cpt]
    accelerate launch --config_file <zero2|zero3>.yaml tests/trainers/deepspeed_script.py OUTDIR [distillation|pool|cpt]

Three optimizer steps over a global batch of 8 rows however many processes: `distillation`, a GPT-2 student
distilled from a wider GPT-2 teacher (`DistillationTrainer`); `pool`, a ViT instance distilled with feature terms and
their projectors (`LearngenePoolDistillationTrainer`, a side module trained beside the student); `cpt`, a GPT-2 proxy
tuned against frozen large and small GPT-2s (`ConsistentProxyTuningTrainer`, two frozen models). The final student
goes to OUTDIR/final and rank 0 writes OUTDIR/result.json (the logged losses, the files saved, whether DeepSpeed ran
and at which ZeRO stage).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from ddp_script import VOCAB, config_kwargs, lm_rows  # noqa: E402


def gpt2(n_embd, seed):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=n_embd, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=16, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    return GPT2LMHeadModel(config)


def vit(hidden, layers, seed):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                       intermediate_size=2 * hidden, image_size=8, patch_size=4, num_channels=1, num_labels=4,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return ViTForImageClassification(config)


def image_rows(n=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]


def main(outdir, kind="distillation"):
    from hf_methods.trainers import (
        DistillationConfig,
        DistillationTrainer,
        LearngenePoolDistillationTrainer,
        PoolDistillationConfig,
    )

    world = int(os.environ.get("WORLD_SIZE", "1"))
    overrides = dict(per_device_train_batch_size=8 // world, max_steps=3, logging_strategy="steps", logging_steps=1)
    if kind == "cpt":
        from hf_methods.models.proxy_tuned import proxy_from_small
        from hf_methods.trainers import ConsistentProxyTuningConfig, ConsistentProxyTuningTrainer

        kwargs = config_kwargs(outdir, **overrides)
        del kwargs["alpha"], kwargs["temperature"]  # distillation fields
        args = ConsistentProxyTuningConfig(**kwargs)
        small = gpt2(16, 1)
        trainer = ConsistentProxyTuningTrainer(
            model=proxy_from_small(small),
            args=args,
            train_dataset=lm_rows(),
            large_model=gpt2(48, 2),
            small_model=small,
        )
    elif kind == "pool":
        args = PoolDistillationConfig(**config_kwargs(outdir, **overrides))
        trainer = LearngenePoolDistillationTrainer(
            model=vit(16, 3, 0), teacher_model=vit(32, 4, 1), args=args, train_dataset=image_rows()
        )
    else:
        args = DistillationConfig(**config_kwargs(outdir, **overrides))
        trainer = DistillationTrainer(model=gpt2(32, 0), teacher_model=gpt2(48, 1), args=args, train_dataset=lm_rows())
    trainer.train()
    trainer.save_model(os.path.join(outdir, "final"))
    if trainer.is_world_process_zero():
        zero = trainer.accelerator.deepspeed_config.get("zero_optimization", {}) if trainer.is_deepspeed_enabled else {}
        result = {
            "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
            "final_files": sorted(os.listdir(os.path.join(outdir, "final"))),
            "deepspeed": trainer.is_deepspeed_enabled,
            "zero_stage": zero.get("stage"),
            "world_size": world,
            "teacher_engine": type(getattr(trainer, "teacher_model", None) or trainer.large_model).__name__,
        }
        with open(os.path.join(outdir, "result.json"), "w") as f:
            json.dump(result, f)
    # as the DDP scripts: no destructor at exit (gloo's workers can abort a rank there, pytorch/pytorch#179291)
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
