"""One trainer run for test_deepspeed.py (not collected by pytest): alone, or under `accelerate launch` with a shipped
DeepSpeed config (DS_ACCELERATOR=cpu, processes over gloo).

    python tests/trainers/deepspeed_script.py OUTDIR KIND [whole|stop|resume]
    accelerate launch --config_file <zero2|zero3>.yaml tests/trainers/deepspeed_script.py OUTDIR KIND [...]
    torchrun --nproc_per_node 2 tests/trainers/deepspeed_script.py OUTDIR KIND whole ds_config.json

Three optimizer steps over a global batch of 8 rows however many processes. KIND: `distillation`, a GPT-2 student
distilled from a wider GPT-2 teacher (`DistillationTrainer`); `tleg`, a TLEG learngene's auxiliary ViT distilled the
same way (layers generated from the gene at every forward); `pool`, a ViT instance distilled with feature terms and
their projectors (`LearngenePoolDistillationTrainer`, a side module trained beside the student); `l2d`, a label-query
student with a learned embedding projection (`MultiLabelKDTrainer`); `rdd`, a UperNet student distilled from a wider
UperNet (`RDDTrainer`, OHEM from step 2); `cpt`, a GPT-2 proxy tuned against frozen large and small GPT-2s
(`ConsistentProxyTuningTrainer`, two frozen models). The final student goes to OUTDIR/final and rank 0 writes
OUTDIR/result.json (the logged losses, the files saved, whether DeepSpeed ran and at which ZeRO stage).
"""

import dataclasses
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


# Trainers whose loss is relational within a batch (L2D's embedding terms, RDD's OHEM quantile): 2 processes equal one
# process that accumulates the same two micro-batches, not one process on the 8 rows at once.
PER_MICRO_BATCH = {"l2d", "rdd"}


def build(kind):
    """(trainer class, config class, {model keyword: model}, rows, config overrides) of each kind. The models are built
    before the TrainingArguments: under ZeRO-3 those switch on transformers' `zero.Init`, and a stock model built from
    a config inside it (UperNet's backbone) skips its usual init, so the two runs would start from other weights."""
    from hf_methods import trainers as t

    if kind == "cpt":
        from hf_methods.models.proxy_tuned import proxy_from_small

        small = gpt2(16, 1)
        models = dict(model=proxy_from_small(small), large_model=gpt2(48, 2), small_model=small)
        return t.ConsistentProxyTuningTrainer, t.ConsistentProxyTuningConfig, models, lm_rows(), {}
    if kind == "tleg":  # a learngene's auxiliary network: layers generated from partitioned gene parameters
        from hf_methods.models.tleg import TLEGConfig, TLEGModel

        torch.manual_seed(0)
        student = TLEGModel(TLEGConfig.from_base(vit(16, 1, 0), aux_num_layers=3))
        models = dict(model=student, teacher_model=vit(32, 4, 1))
        return t.DistillationTrainer, t.DistillationConfig, models, image_rows(), {}
    if kind == "pool":
        models = dict(model=vit(16, 3, 0), teacher_model=vit(32, 4, 1))
        return t.LearngenePoolDistillationTrainer, t.PoolDistillationConfig, models, image_rows(), {}
    if kind == "l2d":  # a learned embedding projection trains beside the student
        from multilabel_ddp_script import image_rows as multilabel_rows
        from test_multilabel_kd_trainer import label_query

        models = dict(model=label_query(16, 8, 0), teacher_model=label_query(32, 16, 1))
        l2d = {"learning_rate": 1e-4, "temperature": 1.0}  # MLD has no temperature
        return t.MultiLabelKDTrainer, t.MultiLabelKDConfig, models, multilabel_rows(), l2d
    if kind == "rdd":  # UperNet student with BatchNorm and an auxiliary head, OHEM after one warm-up step. SGD: Adam
        # would turn the round-off gradients of biases that feed a BatchNorm (exactly 0 in exact arithmetic) into steps
        from test_rdd_trainer import config, seg_rows, teacher_upernet, upernet

        models = dict(model=upernet(), teacher_model=teacher_upernet())
        rdd = {k: v for k, v in config(".").to_dict().items() if k in ("learning_rate", "min_kept")}
        return t.RDDTrainer, t.RDDConfig, models, seg_rows(), {**rdd, "rdd_warmup_steps": 1}
    models = dict(model=gpt2(32, 0), teacher_model=gpt2(48, 1))
    return t.DistillationTrainer, t.DistillationConfig, models, lm_rows(), {}


class StopAt:
    """A callback that ends training after step `step`, once its checkpoint is written (a run killed there)."""

    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):  # every other TrainerCallback event: nothing to do
        return lambda *args, **kwargs: None

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def main(outdir, kind="distillation", phase="whole", ds_config=None):
    """`phase`: `whole` (train 3 steps), `stop` (a run killed after its step-2 checkpoint) or `resume` (resume that
    run from its checkpoint in OUTDIR and finish it). `ds_config`: a DeepSpeed JSON given to the TrainingArguments
    (`deepspeed=`, the `--deepspeed` flag of a script that parses them), under torchrun instead of an accelerate
    config."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer_cls, config_cls, models, rows, specific = build(kind)
    overrides = dict(per_device_train_batch_size=8 // world, max_steps=3, logging_strategy="steps", logging_steps=1)
    if kind in PER_MICRO_BATCH:  # the same micro-batches of 4 rows: one per process, or accumulated in one process
        overrides.update(per_device_train_batch_size=4, gradient_accumulation_steps=2 // world)
    if phase != "whole":
        overrides.update(save_strategy="steps", save_steps=2)
    if ds_config:
        overrides.update(deepspeed=ds_config)
    kwargs = config_kwargs(outdir, **overrides, **specific)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    args = config_cls(**{k: v for k, v in kwargs.items() if k in fields})  # CPT and L2D have no alpha/temperature
    if kind == "tleg":  # a learngene loaded with from_pretrained while ZeRO-3 is on: whole and equal on every rank
        folder = os.path.join(outdir, "start")
        with args.main_process_first():
            if args.process_index == 0:
                models["model"].save_pretrained(folder)
        loaded = type(models["model"]).from_pretrained(folder)
        for key, value in models["model"].state_dict().items():
            if not torch.equal(loaded.state_dict()[key], value):
                raise AssertionError(f"rank {args.process_index}: {key} differs after from_pretrained")
        models["model"] = loaded
    trainer = trainer_cls(args=args, train_dataset=rows, **models)
    if phase == "stop":
        trainer.add_callback(StopAt(2))
    trainer.train(resume_from_checkpoint=phase == "resume" or None)
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
