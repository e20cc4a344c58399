"""2-process MultiLabelKDTrainer run for test_multilabel_kd_trainer.py (not collected by pytest).

accelerate launch --multi_gpu --num_processes 2 tests/trainers/multilabel_ddp_script.py OUTDIR

OUTDIR holds `student/` and `teacher/` (label-query models of different embedding widths, saved by the test). One
SGD step with 4 rows per process (L2D with a learned projection), then the student goes to OUTDIR/final (projection
beside it) and rank 0 writes OUTDIR/result.json.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

NUM_CLASSES = 4


def image_rows(n=8):
    """Class c is present when quadrant c of the 8x8 image is bright on average."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    quadrants = x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).reshape(n, NUM_CLASSES)
    y = (quadrants > 0).float()
    y[0] = 1.0  # at least one image with every label: both ID and CD have groups of 3 or more
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]


def config_kwargs(output_dir, **overrides):
    kwargs = dict(
        output_dir=output_dir,
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
        max_steps=1,
        optim="sgd",
        learning_rate=0.01,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return {**kwargs, **overrides}


def main(out):
    torch.set_num_threads(1)
    from hf_methods.models.label_query import LabelQueryForMultiLabelClassification
    from hf_methods.trainers.multilabel_kd_config import MultiLabelKDConfig
    from hf_methods.trainers.multilabel_kd_trainer import MultiLabelKDTrainer

    student = LabelQueryForMultiLabelClassification.from_pretrained(os.path.join(out, "student"))
    teacher = LabelQueryForMultiLabelClassification.from_pretrained(os.path.join(out, "teacher"))
    args = MultiLabelKDConfig(**config_kwargs(os.path.join(out, "run")))
    trainer = MultiLabelKDTrainer(model=student, args=args, train_dataset=image_rows(), teacher_model=teacher)
    initial = trainer.embedding_projection.weight.detach().clone()
    trainer.train()
    trainer.save_model(os.path.join(out, "final"))
    if trainer.is_world_process_zero():
        result = {
            "world_size": args.world_size,
            "num_processes": trainer.accelerator.num_processes,
            "initial_projection": initial.tolist(),
            "final_files": sorted(os.listdir(os.path.join(out, "final"))),
        }
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)
    shut_down(trainer)


def shut_down(trainer) -> None:
    """Both ranks leave together, then the process ends without running destructors: at interpreter exit gloo's
    threads either abort the rank ("terminate called without an active exception", pytorch/pytorch#179291) or, once
    the group is destroyed, deadlock with the main thread (the worker waits for the GIL to free a finished barrier's
    tensor while the main thread, holding it, joins the worker from ~ProcessGroupGloo). Both were seen in CI."""
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
