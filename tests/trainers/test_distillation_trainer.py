import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification  # noqa: E402

from hf_methods.trainers import DistillationConfig, DistillationTrainer, distillation_loss  # noqa: E402

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("distillation_ddp_script", HERE / "ddp_script.py")
ddp_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_script)
lm_rows, config_kwargs, VOCAB = ddp_script.lm_rows, ddp_script.config_kwargs, ddp_script.VOCAB


# ---------------------------------------------------------------- tiny models and data
def vit(hidden=32, num_labels=4, seed=0):
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def gpt2(n_embd=32, vocab=VOCAB, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=n_embd,
        n_layer=2,
        n_head=2,
        vocab_size=vocab,
        n_positions=16,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


def image_rows(n=8, labels=True):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return [{"pixel_values": x[i], **({"labels": y[i]} if labels else {})} for i in range(n)]


def make_trainer(tmp_path, student, teacher, rows, **overrides):
    args = DistillationConfig(**config_kwargs(str(tmp_path), **overrides))
    return DistillationTrainer(model=student, args=args, train_dataset=rows, teacher_model=teacher)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- 1. the loss against hand computations
def softmax(x):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("kind", ["soft-numel", "soft-batchmean", "hard"])
def test_loss_matches_hand_computation(kind):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 3, 1, 1, 2])
    T, alpha, n, c = 2.0, 0.3, 5, 4
    sd, td = s.double(), t.double()
    ce = -sum(torch.log(softmax(sd)[i, y[i]]) for i in range(n)) / n
    if kind == "hard":
        kd = -sum(torch.log(softmax(sd)[i, td[i].argmax()]) for i in range(n)) / n
    else:
        p_t, p_s = softmax(td / T), softmax(sd / T)
        kl = (p_t * (torch.log(p_t) - torch.log(p_s))).sum()
        kd = T * T * kl / (n * c if kind == "soft-numel" else n)
    expected = (1 - alpha) * ce + alpha * kd
    loss, ce_out, kd_out = distillation_loss(
        s,
        t,
        y,
        distillation_type=kind.split("-")[0],
        alpha=alpha,
        temperature=T,
        kd_normalization=kind.split("-")[-1] if kind != "hard" else "numel",
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce_out.double(), ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kd_out.double(), kd, rtol=1e-5, atol=1e-6)


def test_lm_loss_shifts_and_ignores_minus_100():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    labels = torch.tensor([[1, 2, -100, 4, -100], [-100, 0, 5, 5, 3]])
    T, alpha = 2.0, 0.3
    ce_sum = kl_sum = 0.0
    count = 0
    for b in range(2):
        for j in range(4):  # logits at j predict the label at j + 1
            y = labels[b, j + 1].item()
            if y == -100:
                continue
            count += 1
            ce_sum += -math.log(softmax(s[b, j].double())[y].item())
            p_t, p_s = softmax(t[b, j].double() / T), softmax(s[b, j].double() / T)
            kl_sum += (p_t * (p_t.log() - p_s.log())).sum().item()
    assert count == 6
    for n_items in (None, 7):  # per batch, or a count over a whole accumulated batch
        n = count if n_items is None else n_items
        expected = (1 - alpha) * ce_sum / n + alpha * T * T * kl_sum / (n * 6)
        loss, _, _ = distillation_loss(
            s, t, labels, alpha=alpha, temperature=T, shift_labels=True, num_items_in_batch=n_items
        )
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_errors_and_none():
    s, t, y = torch.randn(3, 4), torch.randn(3, 5), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 4\)"):
        distillation_loss(s, t, y)
    with pytest.raises(ValueError, match="alpha=1.0"):
        distillation_loss(s, s, None, alpha=0.5)
    loss, _, kd = distillation_loss(s, None, y, distillation_type="none", alpha=0.9)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(s, y))
    assert kd.item() == 0.0


def test_config_validation(tmp_path):
    for bad in ({"alpha": 1.5}, {"temperature": 0.0}, {"kd_normalization": "mean"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DistillationConfig(output_dir=str(tmp_path), **bad)


# ---------------------------------------------------------------- 2. frozen teacher, never saved
def test_teacher_frozen_and_not_in_checkpoints(tmp_path):
    student, teacher = vit(hidden=32), vit(hidden=48, seed=1)
    teacher_before, student_before = params(teacher), params(student)
    student.save_pretrained(tmp_path / "student_alone")  # keys as saved (transformers 5 renames some on save)
    student_keys = {k: tuple(v.shape) for k, v in load_file(str(tmp_path / "student_alone/model.safetensors")).items()}
    trainer = make_trainer(
        tmp_path, student, teacher, image_rows(), max_steps=2, save_strategy="steps", save_steps=1, logging_steps=1
    )
    trainer.train()

    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher_model.parameters())
    assert not trainer.teacher_model.training
    for k, v in trainer.teacher_model.state_dict().items():
        torch.testing.assert_close(v, teacher_before[k], rtol=0, atol=0)
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    assert not any(m is trainer.teacher_model for m in student.modules())

    trainer.save_model(str(tmp_path / "final"))
    for folder in ("checkpoint-1", "checkpoint-2", "final"):
        saved = load_file(str(tmp_path / folder / "model.safetensors"))
        assert {k: tuple(v.shape) for k, v in saved.items()} == student_keys, folder

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:  # alpha = 0.5
        assert h["loss"] == pytest.approx(0.5 * h["ce_loss"] + 0.5 * h["kd_loss"], rel=1e-4)


def test_evaluate_returns_distillation_loss_and_logits(tmp_path):
    student, teacher, rows = vit(), vit(48, seed=1), image_rows()
    trainer = make_trainer(tmp_path, student, teacher, rows, per_device_eval_batch_size=8)
    assert not any(m is trainer.teacher_model for m in trainer.accelerator._models)
    metrics = trainer.evaluate(rows)
    x, y = torch.stack([r["pixel_values"] for r in rows]), torch.stack([r["labels"] for r in rows])
    with torch.no_grad():
        s, t = student(pixel_values=x).logits, teacher(pixel_values=x).logits
        expected, _, _ = distillation_loss(s, t, y, temperature=2.0)  # config_kwargs: alpha 0.5, T 2
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert trainer.predict(rows).predictions.shape == (8, 4)


# ---------------------------------------------------------------- 3. gradient accumulation is exact
def _one_step(tmp_path, student, teacher, rows, batch, ga, **overrides):
    trainer = make_trainer(
        tmp_path, student, teacher, rows, per_device_train_batch_size=batch, gradient_accumulation_steps=ga, **overrides
    )
    trainer.train()
    return trainer, params(student)


@pytest.mark.parametrize("labels", [True, False], ids=["ce+kd", "pure-kd-no-labels"])
def test_grad_accumulation_classification(tmp_path, labels):
    overrides = {} if labels else {"alpha": 1.0}
    rows = image_rows(labels=labels)
    _, full = _one_step(tmp_path / "a", vit(), vit(48, seed=1), rows, 8, 1, **overrides)
    _, accum = _one_step(tmp_path / "b", vit(), vit(48, seed=1), rows, 4, 2, **overrides)
    assert any(not torch.equal(full[k], v) for k, v in params(vit()).items())  # the step did something
    for k in full:
        torch.testing.assert_close(accum[k], full[k], rtol=0, atol=1e-6)


def test_grad_accumulation_causal_lm_uneven_padding(tmp_path):
    rows = lm_rows()  # rows 0-3: 2 target tokens each, rows 4-7: 7 each
    trainer, full = _one_step(tmp_path / "a", gpt2(), gpt2(48, seed=1), rows, 8, 1)
    _, accum = _one_step(tmp_path / "b", gpt2(), gpt2(48, seed=1), rows, 4, 2)
    for k in full:
        torch.testing.assert_close(accum[k], full[k], rtol=0, atol=1e-6)
    # the Trainer counts the shifted tokens (it would count position 0 too for GPT2LMHeadModel on its own)
    labels = torch.stack([r["labels"] for r in rows])
    assert trainer.shift_labels
    assert int(trainer._get_num_items_in_batch([{"labels": labels}], torch.device("cpu"))) == 36


# ---------------------------------------------------------------- 4. mismatches fail in __init__
def test_output_size_mismatch_raises(tmp_path):
    with pytest.raises(ValueError, match=r"teacher 5, student 4 \(num_labels\)"):
        make_trainer(tmp_path, vit(num_labels=4), vit(num_labels=5), image_rows())
    with pytest.raises(ValueError, match=r"teacher 65, student 64 \(vocabulary size\)"):
        make_trainer(tmp_path, gpt2(vocab=64), gpt2(vocab=65), lm_rows())
    with pytest.raises(ValueError, match="needs a teacher"):
        make_trainer(tmp_path, vit(), None, image_rows())
    make_trainer(tmp_path, vit(), None, image_rows(), distillation_type="none")  # plain CE needs none


# ---------------------------------------------------------------- 5. resume
def test_resume_matches_uninterrupted_run(tmp_path):
    rows = image_rows(16)
    kw = dict(max_steps=4, save_strategy="steps", save_steps=2, optim="adamw_torch", learning_rate=1e-2)
    student = vit()
    make_trainer(tmp_path / "full", student, vit(48, seed=1), rows, **kw).train()
    resumed = vit(seed=5)
    make_trainer(tmp_path / "resumed", resumed, vit(48, seed=1), rows, **kw).train(
        resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2")
    )
    for k, v in params(student).items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- 6. two processes (gloo DDP on CPU)
def test_two_process_ddp_matches_single_process(tmp_path):
    gpt2().save_pretrained(tmp_path / "student")
    gpt2(48, seed=1).save_pretrained(tmp_path / "teacher")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        str(HERE / "ddp_script.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["num_processes"] == 2
    assert result["teacher_class"] == "GPT2LMHeadModel"
    assert "model.safetensors" in result["final_files"]

    # same global batch of 8 in one process: identical update (loss scaled by the process count)
    single = GPT2LMHeadModel.from_pretrained(tmp_path / "student")
    _, expected = _one_step(tmp_path / "single", single, str(tmp_path / "teacher"), lm_rows(), 8, 1)
    ddp = GPT2LMHeadModel.from_pretrained(tmp_path / "final")
    for k, v in expected.items():
        torch.testing.assert_close(ddp.state_dict()[k], v, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- 7. bf16 teacher on CPU
def test_bf16_teacher(tmp_path):
    student = vit()
    trainer = make_trainer(tmp_path, student, vit(48, seed=1), image_rows(), teacher_dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in trainer.teacher_model.parameters())
    trainer.train()
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
    loss = trainer.compute_loss(student, {"pixel_values": torch.randn(2, 1, 8, 8), "labels": torch.tensor([0, 1])})
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------- the TLEG auxiliary model as the student
def test_tleg_student_learns_and_is_treated_as_its_base(tmp_path):
    from hf_methods import TLEGConfig, TLEGModel

    teacher = gpt2(48, seed=1)
    student = TLEGModel(TLEGConfig.from_base(gpt2(), aux_num_layers=3))
    rows = lm_rows()
    trainer, before = make_trainer(tmp_path / "lm", student, teacher, rows), params(student)
    assert trainer.shift_labels  # a TLEG learngene over GPT2LMHeadModel is a causal LM
    trainer.train()
    changed = [k for k, v in params(student).items() if not torch.equal(v, before[k])]
    assert any(k.startswith("gene.theta_b.") for k in changed)  # theta_B gets gradients through every layer
    assert int(trainer._get_num_items_in_batch([{"labels": torch.stack([r["labels"] for r in rows])}], "cpu")) == 36

    vit_student = TLEGModel(TLEGConfig.from_base(vit(), aux_num_layers=2))
    with pytest.raises(ValueError, match="teacher 7, student 4"):
        make_trainer(tmp_path / "vit", vit_student, vit(num_labels=7), image_rows())
