"""Multi-label KD (L2D): the losses against hand computations and their invariances, the trainer's teacher handling,
the embedding projection, the logit-only path, gradient accumulation, and config errors."""

import importlib.util
import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import ViTConfig, ViTForImageClassification

from hf_methods.models.label_query import (
    LabelQueryConfig,
    LabelQueryForMultiLabelClassification,
)
from hf_methods.trainers.distillation_trainer import distillation_loss
from hf_methods.trainers.multilabel_kd_config import MultiLabelKDConfig
from hf_methods.trainers.multilabel_kd_trainer import (
    PROJECTION_FILE,
    PROJECTION_NAME,
    MultiLabelKDTrainer,
    grouped_huber_distance,
    huber_distance,
    l2d_loss,
    labelwise_embedding_distillation,
    multilabel_logit_distillation,
)

NUM_CLASSES = 4
HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("multilabel_ddp_script", HERE / "multilabel_ddp_script.py")
ddp_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_script)


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny ops: on a shared 2-core machine two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- tiny models and data
def vit_config(hidden):
    return ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def label_query(hidden=16, d_model=16, seed=0):
    torch.manual_seed(seed)
    config = LabelQueryConfig(
        backbone_config=vit_config(hidden).to_dict(),
        num_labels=NUM_CLASSES,
        d_model=d_model,
        num_attention_heads=2,
        dim_feedforward=2 * d_model,
        decoder_dropout=0.0,
    )
    return LabelQueryForMultiLabelClassification(config)


def stock_vit(hidden=16, seed=0):
    torch.manual_seed(seed)
    config = vit_config(hidden)
    config.num_labels, config.problem_type = NUM_CLASSES, "multi_label_classification"
    return ViTForImageClassification(config)


def image_rows(n=32):
    """Class c is present when quadrant c of the image is bright on average: learnable from the patches."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    quadrants = x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).reshape(n, NUM_CLASSES)
    y = (quadrants > 0).float()
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]


def config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
        "per_device_train_batch_size": 8,
        "max_steps": 3,
        "optim": "adamw_torch",
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
    }
    return MultiLabelKDConfig(**{**kwargs, **overrides})


def make_trainer(tmp_path, student, teacher_model, rows=None, **overrides):
    return MultiLabelKDTrainer(
        model=student,
        args=config(tmp_path, **overrides),
        train_dataset=rows or image_rows(),
        teacher_model=teacher_model,
    )


def saved_keys(folder):
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        return set(f.keys())


def saved_keys_of(model, folder):
    """The tensor names `save_pretrained` writes for `model` (transformers renames some on save)."""
    model.save_pretrained(folder)
    return saved_keys(folder)


def random_orthogonal(d, seed=0):
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


# ---------------------------------------------------------------- 1. MLD
def test_mld_is_the_per_label_bernoulli_kl():
    z_s, z_t = torch.randn(6, 5) * 3, torch.randn(6, 5) * 3
    p_t = torch.sigmoid(z_t)
    entropy = -(p_t * p_t.log() + (1 - p_t) * (1 - p_t).log()).sum() / 6
    hand = F.binary_cross_entropy_with_logits(z_s, p_t, reduction="sum") / 6 - entropy
    torch.testing.assert_close(multilabel_logit_distillation(z_s, z_t), hand)
    # the same as a sum of scalar Bernoulli KLs written out
    kl = 0.0
    for s, t in zip(torch.sigmoid(z_s).flatten().tolist(), p_t.flatten().tolist()):
        kl += t * math.log(t / s) + (1 - t) * math.log((1 - t) / (1 - s))
    assert multilabel_logit_distillation(z_s, z_t).item() == pytest.approx(kl / 6, rel=1e-5)
    # N is num_items_in_batch when given (a whole accumulated batch)
    torch.testing.assert_close(multilabel_logit_distillation(z_s, z_t, num_items_in_batch=12), hand / 2)


def test_mld_is_nonnegative_and_zero_exactly_when_the_sigmoids_agree():
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        z_s, z_t = torch.randn(8, 7, generator=g) * 5, torch.randn(8, 7, generator=g) * 5
        assert multilabel_logit_distillation(z_s, z_t) > 0
        assert multilabel_logit_distillation(z_t, z_t).item() == 0.0
    z = torch.randn(3, 4)
    z_off = z.clone()
    z_off[1, 2] += 0.1  # one label differs -> positive
    assert multilabel_logit_distillation(z_off, z) > 0


def test_mld_stays_finite_for_saturated_logits_and_clamps_at_eps():
    z_s = torch.tensor([[-40.0, 40.0, 0.0]], requires_grad=True)
    z_t = torch.tensor([[40.0, -40.0, 0.0]])
    loss = multilabel_logit_distillation(z_s, z_t)
    loss.backward()
    # each saturated label costs at most log(1 / eps) (the clamp), not inf
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(2 * math.log(1e8), rel=1e-4)
    assert torch.isfinite(z_s.grad).all()


# ---------------------------------------------------------------- 2. the normalized-distance Huber loss
def test_huber_distance_is_invariant_to_scale_rotation_and_translation():
    e = torch.randn(7, 12)
    rotation = random_orthogonal(12)
    for k in (0.1, 1.0, 37.0):
        moved = k * e @ rotation + torch.randn(12)
        assert huber_distance(moved, e).item() == pytest.approx(0.0, abs=1e-5)
        assert huber_distance(e, moved).item() == pytest.approx(0.0, abs=1e-5)
    assert huber_distance(torch.randn(7, 12), e) > 0.01
    # widths may differ: the distance matrices are n x n
    assert huber_distance(e @ rotation[:, :12], e).item() == pytest.approx(0.0, abs=1e-5)
    assert huber_distance(torch.randn(7, 3), e) > 0


def test_huber_distance_matches_a_hand_computation_and_gives_the_teacher_no_gradient():
    s, t = torch.randn(5, 4, requires_grad=True), torch.randn(5, 6, requires_grad=True)

    def normalized(x):
        d = torch.cdist(x.double(), x.double())
        d.fill_diagonal_(0)
        return d / d[d > 0].mean()

    hand = F.smooth_l1_loss(normalized(s), normalized(t), reduction="sum", beta=1.0) / 5
    loss = huber_distance(s, t)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-4)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None
    assert huber_distance(torch.randn(1, 4), torch.randn(1, 4)).item() == 0.0  # one row: nothing to compare


# ---------------------------------------------------------------- 3. CD and ID
def _loop_cd_id(s, t, y):
    cd = sum(
        (
            huber_distance(s[y[:, c] > 0.5, c], t[y[:, c] > 0.5, c])
            for c in range(y.shape[1])
            if (y[:, c] > 0.5).sum() >= 2
        ),
        torch.tensor(0.0),
    )
    id_ = sum(
        (huber_distance(s[i, y[i] > 0.5], t[i, y[i] > 0.5]) for i in range(y.shape[0]) if (y[i] > 0.5).sum() >= 2),
        torch.tensor(0.0),
    )
    return cd, id_


def test_cd_and_id_equal_the_per_class_and_per_image_loops():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(9, 5, 6, generator=g), torch.randn(9, 5, 8, generator=g)
    y = (torch.rand(9, 5, generator=g) < 0.5).float()
    total, cd, id_ = labelwise_embedding_distillation(s, t, y, lambda_cd=100.0, lambda_id=1000.0)
    loop_cd, loop_id = _loop_cd_id(s, t, y)
    assert cd.item() == pytest.approx(loop_cd.item(), rel=1e-5) and cd > 0
    assert id_.item() == pytest.approx(loop_id.item(), rel=1e-5) and id_ > 0
    assert total.item() == pytest.approx(100 * loop_cd.item() + 1000 * loop_id.item(), rel=1e-5)
    grouped = grouped_huber_distance(s.transpose(0, 1), t.transpose(0, 1), (y > 0.5).t())
    assert grouped.item() == pytest.approx(loop_cd.item(), rel=1e-5)


def test_cd_ignores_classes_with_fewer_than_two_positives_and_id_images_with_fewer_than_two():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 4, 5, generator=g), torch.randn(4, 4, 5, generator=g)
    # class 3 has one positive image (image 2); image 2 has three labels; image 3 none
    y = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.float)
    _, cd, id_ = labelwise_embedding_distillation(s, t, y)
    assert cd > 0 and id_ > 0
    # moving the lone class-3 positive changes no CD group, but it is one of image 2's three labels: ID changes
    moved = s.clone()
    moved[2, 3] += 10.0
    _, cd2, id2 = labelwise_embedding_distillation(moved, t, y)
    assert cd2.item() == pytest.approx(cd.item(), abs=1e-6) and abs(id2.item() - id_.item()) > 1e-4
    # negatives and label-less images are in no group
    moved = s.clone()
    moved[3] += 5.0
    moved[1, 2] -= 5.0
    _, cd3, id3 = labelwise_embedding_distillation(moved, t, y)
    assert (cd3.item(), id3.item()) == pytest.approx((cd.item(), id_.item()), abs=1e-6)
    # one label per image: no ID group at all, while classes with two or more images still give CD
    y1 = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.float)
    _, cd4, id4 = labelwise_embedding_distillation(s, t, y1)
    assert id4.item() == 0.0 and cd4 > 0
    # two rows carry no structure once distances are normalized (the one distance is 1): an image with exactly
    # two labels adds nothing to ID
    y2 = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float)
    assert labelwise_embedding_distillation(s, t, y2)[2].item() == pytest.approx(0.0, abs=1e-6)


def test_empty_batches_and_no_eligible_group_give_zero_not_nan():
    s = torch.randn(3, 4, 5, requires_grad=True)
    t = torch.randn(3, 4, 5)
    total, cd, id_ = labelwise_embedding_distillation(s, t, torch.zeros(3, 4))
    assert total.item() == cd.item() == id_.item() == 0.0
    total.backward()  # keeps the graph: no error, zero gradient
    assert s.grad is not None and s.grad.abs().sum() == 0
    empty = torch.zeros(0, NUM_CLASSES)
    loss, parts = l2d_loss(
        empty, empty.clone(), empty.clone(), torch.zeros(0, NUM_CLASSES, 5), torch.zeros(0, NUM_CLASSES, 5)
    )
    assert loss.item() == 0.0 and all(v.item() == 0.0 for v in parts.values())
    for kind in ("l2d", "softmax"):
        for reduction in ("sum", "mean"):
            loss, _ = l2d_loss(empty, empty.clone(), empty.clone(), multilabel_kd_type=kind, bce_reduction=reduction)
            assert loss.item() == 0.0


# ---------------------------------------------------------------- 4. the total loss
def test_l2d_loss_is_the_weighted_sum_of_its_parts():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    e_s, e_t = torch.randn(6, 4, 8, generator=g), torch.randn(6, 4, 8, generator=g)
    y = (torch.rand(6, 4, generator=g) < 0.5).float()
    loss, parts = l2d_loss(z_s, z_t, y, e_s, e_t)
    bce = F.binary_cross_entropy_with_logits(z_s, y, reduction="sum")
    _, cd, id_ = labelwise_embedding_distillation(e_s, e_t, y)
    torch.testing.assert_close(parts["bce"], bce)
    torch.testing.assert_close(parts["kd"], multilabel_logit_distillation(z_s, z_t))
    torch.testing.assert_close(loss, bce + 10 * parts["kd"] + 100 * cd + 1000 * id_)
    # mean BCE divides by batch x classes
    _, parts = l2d_loss(z_s, z_t, y, e_s, e_t, bce_reduction="mean")
    torch.testing.assert_close(parts["bce"], bce / 24)
    # softmax baseline: the soft KD of distillation_loss, no embedding terms
    loss, parts = l2d_loss(z_s, z_t, y, e_s, e_t, multilabel_kd_type="softmax", temperature=2.0)
    _, _, kd = distillation_loss(z_s, z_t, None, alpha=1.0, temperature=2.0, kd_normalization="batchmean")
    torch.testing.assert_close(parts["kd"], kd)
    assert parts["cd"].item() == parts["id"].item() == 0.0
    torch.testing.assert_close(loss, bce + 10 * kd)
    # no teacher: BCE only
    loss, parts = l2d_loss(z_s, None, y)
    torch.testing.assert_close(loss, bce)
    with pytest.raises(ValueError, match="multi-hot"):
        l2d_loss(z_s, z_t, y[:, :3])
    with pytest.raises(ValueError, match="no `labels`"):
        l2d_loss(z_s, z_t, None)


# ---------------------------------------------------------------- 5. the trainer
def test_tiny_l2d_run_has_finite_decreasing_loss_and_a_frozen_unsaved_teacher(tmp_path):
    teacher = label_query(hidden=32, d_model=16, seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = make_trainer(tmp_path, label_query(seed=0), teacher, max_steps=20, save_strategy="steps", save_steps=20)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    losses = [e["loss"] for e in logs]
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])  # 4 batches per epoch: compare whole epochs
    assert all(k in logs[0] for k in ("bce_loss", "kd_loss", "cd_loss", "id_loss")) and logs[0]["cd_loss"] > 0
    # the teacher: never trained, no gradients, in eval mode
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not trainer.teacher_model.training
    # the checkpoint holds the student's tensors and nothing else (no teacher, no projection: same widths)
    checkpoint = tmp_path / "checkpoint-20"
    assert saved_keys(checkpoint) == saved_keys_of(trainer.model, tmp_path / "plain")
    reloaded = LabelQueryForMultiLabelClassification.from_pretrained(checkpoint).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in trainer.model.state_dict().items())
    assert not any("teacher" in p.name for p in checkpoint.iterdir())
    assert trainer.embedding_projection is None and not (checkpoint / PROJECTION_FILE).exists()


def test_projection_when_widths_differ_is_trained_and_saved_beside_the_student(tmp_path):
    teacher = label_query(hidden=32, d_model=24, seed=1)
    student = label_query(hidden=16, d_model=8, seed=0)
    trainer = make_trainer(tmp_path, student, teacher, max_steps=4, save_strategy="steps", save_steps=4)
    projection = trainer.embedding_projection
    assert isinstance(projection, torch.nn.Linear) and (projection.in_features, projection.out_features) == (8, 24)
    start = projection.weight.detach().clone()
    optimized = {id(p) for group in trainer.create_optimizer().param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in projection.parameters())
    trainer.train()
    assert not torch.equal(projection.weight, start)
    checkpoint = tmp_path / "checkpoint-4"
    keys = saved_keys(checkpoint)
    assert not any(k.startswith(PROJECTION_NAME) for k in keys)
    assert keys == saved_keys_of(LabelQueryForMultiLabelClassification(student.config), tmp_path / "plain")
    saved = load_file(checkpoint / PROJECTION_FILE)
    torch.testing.assert_close(saved["weight"], projection.weight.detach())
    # the saved student is a plain label-query model; the projection comes back on resume
    reloaded = LabelQueryForMultiLabelClassification.from_pretrained(checkpoint)
    assert PROJECTION_NAME not in reloaded._modules
    fresh = make_trainer(tmp_path / "again", label_query(hidden=16, d_model=8, seed=5), teacher)
    fresh._load_from_checkpoint(str(checkpoint))
    torch.testing.assert_close(fresh.embedding_projection.weight, projection.weight.detach())
    # 'none': distance matrices compared directly, no projection
    none = make_trainer(tmp_path / "none", label_query(hidden=16, d_model=8), teacher, embedding_projection="none")
    assert none.embedding_projection is None
    none.train()
    assert math.isfinite(none.state.log_history[-1]["train_loss"])


def test_logit_only_path_with_stock_vit_models(tmp_path, caplog):
    teacher, student = stock_vit(hidden=32, seed=1), stock_vit(seed=0)
    trainer = make_trainer(tmp_path, student, teacher, max_steps=6)
    with caplog.at_level(logging.INFO, logger="hf_methods.trainers.multilabel_kd_trainer"):
        trainer.train()
    notes = [r for r in caplog.records if "label_embeddings" in r.getMessage()]
    assert len(notes) == 1 and "logit terms" in notes[0].getMessage()  # said once, not once per step
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert all(e["cd_loss"] == 0 and e["id_loss"] == 0 and e["kd_loss"] > 0 for e in logs)
    assert all(math.isfinite(e["loss"]) for e in logs)
    # a label-query teacher with a stock student: also the logit terms only
    mixed = make_trainer(tmp_path / "mixed", stock_vit(seed=2), label_query(hidden=32, seed=1), max_steps=2)
    mixed.train()
    assert all(e["cd_loss"] == 0 for e in mixed.state.log_history if "loss" in e)


def test_softmax_baseline_and_no_teacher_runs(tmp_path):
    teacher = label_query(hidden=32, seed=1)
    soft = make_trainer(tmp_path, label_query(), teacher, multilabel_kd_type="softmax", temperature=2.0)
    soft.train()
    logs = [e for e in soft.state.log_history if "loss" in e]
    assert all(e["kd_loss"] > 0 and e["cd_loss"] == 0 for e in logs)
    alone = MultiLabelKDTrainer(
        model=label_query(), args=config(tmp_path, distillation_type="none"), train_dataset=image_rows()
    )
    assert alone.teacher_model is None
    alone.train()
    logs = [e for e in alone.state.log_history if "loss" in e]
    assert all(e["kd_loss"] == 0 and e["loss"] == pytest.approx(e["bce_loss"], rel=1e-5) for e in logs)


def test_gradient_accumulation_reproduces_the_big_batch(tmp_path):
    """BCE (sum) and MLD are normalized by the images of the whole accumulated batch."""
    teacher = label_query(hidden=32, seed=1)
    results = []
    for batch, steps in ((8, 1), (4, 2)):
        trainer = make_trainer(
            tmp_path / f"b{batch}",
            label_query(seed=0),
            teacher,
            max_steps=1,
            lambda_le=0.0,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=steps,
            optim="sgd",
            learning_rate=1e-3,
        )
        trainer.train()
        results.append({k: v.detach().clone() for k, v in trainer.model.named_parameters()})
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_teacher_by_path_and_the_model_card(tmp_path):
    label_query(hidden=32, seed=1).save_pretrained(tmp_path / "teacher")
    trainer = MultiLabelKDTrainer(
        model=label_query(),
        args=config(tmp_path / "run", max_steps=1),
        train_dataset=image_rows(),
        teacher_model=str(tmp_path / "teacher"),
    )
    assert isinstance(trainer.teacher_model, LabelQueryForMultiLabelClassification)
    assert not trainer.teacher_model.training and trainer.teacher_ref == str(tmp_path / "teacher")
    trainer.create_model_card()
    text = (tmp_path / "run" / "README.md").read_text()
    assert "L2D" in text and "MLD" in text and "softmax" not in text and str(tmp_path / "teacher") in text


# ---------------------------------------------------------------- 6. two processes
def test_ddp_with_a_projection_matches_one_process_with_gradient_accumulation(tmp_path):
    """2 ranks x 4 rows = one process with 2 accumulated micro-batches of the same 4 rows: BCE and MLD are
    normalized by the 8 images, the embedding terms are per micro-batch in both, the projection is shared."""
    label_query(hidden=16, d_model=8, seed=0).save_pretrained(tmp_path / "student")
    label_query(hidden=32, d_model=16, seed=1).save_pretrained(tmp_path / "teacher")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
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
        str(HERE / "multilabel_ddp_script.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["num_processes"] == 2
    assert {"model.safetensors", PROJECTION_FILE} <= set(result["final_files"])

    student = LabelQueryForMultiLabelClassification.from_pretrained(tmp_path / "student")
    teacher = LabelQueryForMultiLabelClassification.from_pretrained(tmp_path / "teacher")
    args = MultiLabelKDConfig(**ddp_script.config_kwargs(str(tmp_path / "single"), gradient_accumulation_steps=2))
    single = MultiLabelKDTrainer(model=student, args=args, train_dataset=ddp_script.image_rows(), teacher_model=teacher)
    torch.testing.assert_close(single.embedding_projection.weight, torch.tensor(result["initial_projection"]))
    single.train()
    ddp = LabelQueryForMultiLabelClassification.from_pretrained(tmp_path / "final").state_dict()
    for key, value in student.state_dict().items():
        if not key.startswith(PROJECTION_NAME):
            torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-6, msg=key)
    ddp_projection = load_file(tmp_path / "final" / PROJECTION_FILE)
    torch.testing.assert_close(
        ddp_projection["weight"], single.embedding_projection.weight.detach(), rtol=1e-4, atol=1e-6
    )
    assert not torch.equal(ddp_projection["weight"], torch.tensor(result["initial_projection"]))


# ---------------------------------------------------------------- 7. config errors name the field
@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"temperature": 2.0}, "temperature"),
        ({"distillation_type": "hard"}, "distillation_type"),
        ({"multilabel_kd_type": "bce"}, "multilabel_kd_type"),
        ({"bce_reduction": "avg"}, "bce_reduction"),
        ({"embedding_projection": "mlp"}, "embedding_projection"),
        ({"lambda_cd": -1.0}, "lambda_cd"),
        ({"lambda_logits": float("nan")}, "lambda_logits"),
    ],
)
def test_bad_config_values_raise_errors_naming_the_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        config(tmp_path, **overrides)


def test_alpha_is_not_a_field_the_lambdas_weigh_the_terms(tmp_path):
    with pytest.raises(TypeError, match="alpha"):
        config(tmp_path, alpha=0.5)


def test_config_defaults_are_the_official_ones(tmp_path):
    args = config(tmp_path)
    assert (args.lambda_logits, args.lambda_le, args.lambda_cd, args.lambda_id) == (10.0, 1.0, 100.0, 1000.0)
    assert args.bce_reduction == "sum" and args.multilabel_kd_type == "l2d" and not hasattr(args, "alpha")
    assert args.ddp_find_unused_parameters is False
    assert config(tmp_path, multilabel_kd_type="softmax", temperature=4.0).temperature == 4.0
    with pytest.raises(TypeError, match="MultiLabelKDConfig"):
        MultiLabelKDTrainer(
            model=label_query(),
            args=__import__("transformers").TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none"),
        )
    with pytest.raises(ValueError, match="ddp_find_unused_parameters"):
        make_trainer(
            tmp_path,
            label_query(d_model=8),
            label_query(hidden=32, d_model=16, seed=1),
            ddp_find_unused_parameters=True,
        )
