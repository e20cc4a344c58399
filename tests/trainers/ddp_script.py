"""2-process DistillationTrainer run for test_distillation_trainer.py (not collected by pytest).

accelerate launch --multi_gpu --num_processes 2 tests/trainers/ddp_script.py OUTDIR

OUTDIR holds `student/` and `teacher/` (saved by the test). One optimizer step over `lm_rows()` with 4 rows per
process, then the final model goes to OUTDIR/final and rank 0 writes OUTDIR/result.json.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

VOCAB = 64


def lm_rows(n=8, seq=8, short=3):
    """Deterministic LM rows; the first half keeps only `short` labelled tokens, the second half all of them."""
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(1, VOCAB, (n, seq), generator=g)
    rows = []
    for i in range(n):
        keep = short if i < n // 2 else seq
        mask = (torch.arange(seq) < keep).long()
        labels = ids[i].masked_fill(mask == 0, -100)
        rows.append({"input_ids": ids[i], "attention_mask": mask, "labels": labels})
    return rows


def config_kwargs(output_dir, **overrides):
    kwargs = dict(
        output_dir=output_dir,
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
        max_steps=1,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        alpha=0.5,
        temperature=2.0,
    )
    kwargs.update(overrides)
    return kwargs


def main(outdir):
    from transformers import GPT2LMHeadModel

    from hf_methods.trainers import DistillationConfig, DistillationTrainer

    args = DistillationConfig(**config_kwargs(os.path.join(outdir, "run")))
    student = GPT2LMHeadModel.from_pretrained(os.path.join(outdir, "student"))
    trainer = DistillationTrainer(
        model=student,
        args=args,
        train_dataset=lm_rows(),
        teacher_model=os.path.join(outdir, "teacher"),  # loaded by name: AutoModelForCausalLM
    )
    trainer.train()
    trainer.save_model(os.path.join(outdir, "final"))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        result = {
            "world_size": trainer.args.world_size,
            "num_processes": trainer.accelerator.num_processes,
            "parallel_mode": str(trainer.args.parallel_mode),
            "teacher_class": type(trainer.teacher_model).__name__,
            "final_files": sorted(os.listdir(os.path.join(outdir, "final"))),
        }
        with open(os.path.join(outdir, "result.json"), "w") as f:
            json.dump(result, f)
    trainer.accelerator.wait_for_everyone()  # both ranks leave together, and without destructors: at exit gloo's
    sys.stdout.flush()  # threads abort the rank or deadlock on the GIL (see multilabel_ddp_script.shut_down)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
