"""RDD: difficulty weights, OHEM against brute force, the XOR guard, the stage switch, aux-head extraction from stock
transformers models, teacher isolation, config validation, a tiny training run."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import (
    ConvNextConfig,
    HfArgumentParser,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from hf_methods.trainers.rdd_config import CITYSCAPES_CLASS_WEIGHTS, RDDConfig
from hf_methods.trainers.rdd_trainer import (
    RDDTrainer,
    auxiliary_head,
    difficulty_weights,
    ohem_hard_mask,
    ohem_threshold,
    pixel_kd_loss,
    rdd_task_loss,
    segmentation_forward,
)

NUM_LABELS = 3


# ---------------------------------------------------------------- tiny models and data
def upernet(widths=(4, 8, 12, 16), head=8, aux=True, seed=0, num_labels=NUM_LABELS):
    torch.manual_seed(seed)
    backbone = ConvNextConfig(
        num_channels=1,
        patch_size=2,
        hidden_sizes=list(widths),
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return UperNetForSemanticSegmentation(
        UperNetConfig(
            backbone_config=backbone,
            hidden_size=head,
            auxiliary_channels=head,
            use_auxiliary_head=aux,
            num_labels=num_labels,
            pool_scales=[1, 2],
        )
    )


def teacher_upernet(**kw):
    return upernet(widths=(8, 16, 24, 32), head=16, seed=1, **kw)


def segformer(seed=2):
    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(
        SegformerConfig(
            num_channels=1,
            num_labels=NUM_LABELS,
            hidden_sizes=[8, 16, 16, 16],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 1, 1],
            sr_ratios=[4, 2, 1, 1],
            decoder_hidden_size=16,
        )
    )


def seg_rows(n=8, size=32):
    """Blocks of 2 foreground classes on background, a few ignored (255) pixels."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        labels = torch.zeros(size, size, dtype=torch.long)
        for cls in (1, 2):
            y, x = torch.randint(0, size - 10, (2,), generator=g).tolist()
            labels[y : y + 10, x : x + 10] = cls
        image = labels.float().unsqueeze(0) / 2 + 0.3 * torch.randn(1, size, size, generator=g)
        labels[0, :4] = 255
        rows.append({"pixel_values": image, "labels": labels})
    return rows


def batch(n=4):
    rows = seg_rows(n)
    return {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }


def config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
        "per_device_train_batch_size": 4,
        "max_steps": 4,
        "optim": "adamw_torch",
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
        "rdd_warmup_steps": 2,
        "min_kept": 200,
    }
    return RDDConfig(**{**kwargs, **overrides})


def trainer(tmp_path, student=None, teacher=None, rows=None, **overrides):
    return RDDTrainer(
        model=student if student is not None else upernet(),
        args=config(tmp_path, **overrides),
        train_dataset=rows if rows is not None else seg_rows(),
        teacher_model=teacher if teacher is not None else teacher_upernet(),
    )


# ---------------------------------------------------------------- pure functions
def test_difficulty_weights_are_one_when_heads_agree_and_in_unit_interval():
    z = torch.randn(2, 5, 6, 7) * 3
    assert torch.equal(difficulty_weights(z, z.clone()), torch.ones(2, 6, 7))
    for scale in (0.1, 1.0, 5.0):
        a = torch.randn(2, 5, 6, 7) * scale
        w = difficulty_weights(z, a)
        assert w.shape == (2, 6, 7) and bool((w > 0).all()) and bool((w <= 1).all())
        # the official expression: KLDivLoss(reduction='none')(log_softmax(main), softmax(aux)).sum(1)
        variance = torch.nn.KLDivLoss(reduction="none")(F.log_softmax(z, 1), F.softmax(a, 1)).sum(1)
        torch.testing.assert_close(w, torch.exp(-variance))
        assert bool((w < 1).any())


def _brute_threshold(q, valid, thresh, min_kept):
    values = sorted(q.masked_fill(~valid, 1.0).reshape(-1).tolist())
    if min_kept <= 0 or not bool(valid.any()):
        return thresh, False
    q_k = values[min(len(values), min_kept) - 1]
    return (q_k, True) if q_k > thresh else (thresh, False)


@pytest.mark.parametrize("seed", range(4))
def test_ohem_threshold_and_mask_match_a_brute_force_sort(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 6, generator=g) * 2
    labels = torch.randint(0, 4, (2, 10, 12), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.2] = 255
    valid = labels != 255
    up = F.interpolate(logits, size=(10, 12), mode="bilinear", align_corners=True)
    q = F.softmax(up, 1).gather(1, labels.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
    branches = set()
    for thresh in (0.0, 0.2, 0.7, 1.0):
        for min_kept in (0, 1, 10, 60, int(valid.sum()), 10_000):
            expected, raised = _brute_threshold(q, valid, thresh, min_kept)
            branches.add(raised)
            got = ohem_threshold(q, valid, thresh, min_kept)
            assert math.isclose(float(got), expected, rel_tol=0, abs_tol=1e-7)
            mask = ohem_hard_mask(logits, labels, thresh, min_kept, ignore_index=255)
            assert torch.equal(mask, valid & (q.masked_fill(~valid, 1.0) <= got))
            if raised:  # min_kept branch: at least min_kept valid pixels are hard
                assert int(mask.sum()) >= min(min_kept, int(valid.sum()))
            if min_kept >= int(valid.sum()):  # every valid pixel is hard
                assert torch.equal(mask, valid)
    assert branches == {True, False}


def test_identical_teacher_and_student_give_an_empty_mask_and_a_zero_finite_loss():
    labels = batch()["labels"]
    teacher = torch.randn(4, NUM_LABELS, 32, 32)
    teacher_aux = torch.randn(4, NUM_LABELS, 32, 32)
    student = teacher.clone().requires_grad_(True)
    student_aux = teacher_aux.clone().requires_grad_(True)
    mask = ohem_hard_mask(student, labels, 0.7, 100) ^ ohem_hard_mask(teacher, labels, 0.7, 100)
    assert not mask.any()
    loss, stats = rdd_task_loss(
        student,
        labels,
        stage=2,
        teacher_logits=teacher,
        teacher_aux_logits=teacher_aux,
        student_aux_logits=student_aux,
        min_kept=100,
        class_weights=[1.0, 2.0, 0.5],
    )
    assert float(loss.detach()) == 0.0 and float(stats["mask_fraction"]) == 0.0
    loss.backward()
    assert torch.isfinite(student.grad).all() and torch.isfinite(student_aux.grad).all()
    assert float(student.grad.abs().sum()) == 0.0


def test_stage_losses_match_the_official_formulas():
    torch.manual_seed(3)
    labels = batch()["labels"]
    s, s_aux = torch.randn(4, NUM_LABELS, 16, 16), torch.randn(4, NUM_LABELS, 16, 16)  # half resolution
    t, t_aux = torch.randn(4, NUM_LABELS, 32, 32), torch.randn(4, NUM_LABELS, 32, 32)

    def up(x):
        return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=True)

    # stage 1: mean over all pixels of w * (CE + 0.4 CE_aux), ignored pixels 0 but counted
    ce = torch.nn.CrossEntropyLoss(ignore_index=255, reduction="none")
    w = torch.exp(-torch.nn.KLDivLoss(reduction="none")(F.log_softmax(t, 1), F.softmax(t_aux, 1)).sum(1))
    expected = torch.mean(w * (ce(up(s), labels) + 0.4 * ce(up(s_aux), labels)))
    got, stats = rdd_task_loss(s, labels, stage=1, teacher_logits=t, teacher_aux_logits=t_aux, student_aux_logits=s_aux)
    torch.testing.assert_close(got, expected)
    assert 0 < float(stats["mean_weight"]) <= 1

    # stage 2: class-weighted mean CE on the XOR pixels, per head (aux masks from the aux heads)
    weights = torch.tensor([0.5, 1.0, 2.0])
    crit = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=255)

    def masked(student, teacher):
        m = ohem_hard_mask(student, labels, 0.7, 500, 255) ^ ohem_hard_mask(teacher, labels, 0.7, 500, 255)
        assert m.any()
        return crit(up(student), labels.masked_fill(~m, 255))

    expected = masked(s, t) + 0.4 * masked(s_aux, t_aux)
    got, _ = rdd_task_loss(
        s,
        labels,
        stage=2,
        teacher_logits=t,
        teacher_aux_logits=t_aux,
        student_aux_logits=s_aux,
        min_kept=500,
        class_weights=weights.tolist(),
    )
    torch.testing.assert_close(got, expected)

    # no student aux head: its terms vanish; kd_only (stage 0): plain class-weighted CE
    got, _ = rdd_task_loss(s, labels, stage=1, teacher_logits=t, teacher_aux_logits=t_aux)
    torch.testing.assert_close(got, torch.mean(w * ce(up(s), labels)))
    got, _ = rdd_task_loss(s, labels, stage=0, student_aux_logits=s_aux, class_weights=weights.tolist())
    torch.testing.assert_close(got, crit(up(s), labels) + 0.4 * crit(up(s_aux), labels))
    # no teacher aux head in stage 1: uniform weights
    got, _ = rdd_task_loss(s, labels, stage=1, teacher_logits=t)
    torch.testing.assert_close(got, torch.mean(ce(up(s), labels)))


def test_pixel_kd_loss_official_batchmean_and_resizing():
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    T = 2.0
    rows_s, rows_t = s.permute(0, 2, 3, 1).reshape(-1, 4), t.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = F.kl_div(F.log_softmax(rows_s / T, 1), F.softmax(rows_t / T, 1), reduction="batchmean") * T * T
    torch.testing.assert_close(pixel_kd_loss(s, t, T), expected)
    assert float(pixel_kd_loss(t, t.clone())) == 0.0
    # a student at another resolution is resized to the teacher's
    small = torch.randn(2, 4, 4, 4)
    resized = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(pixel_kd_loss(small, t), pixel_kd_loss(resized, t))
    big = torch.randn(2, 4, 16, 16, requires_grad=True)
    pixel_kd_loss(big, t).backward()
    assert torch.isfinite(big.grad).all()
    with pytest.raises(ValueError, match="same batch and classes"):
        pixel_kd_loss(torch.randn(2, 3, 8, 8), t)


# ---------------------------------------------------------------- stock transformers models
def test_upernet_aux_logits_are_what_upernets_own_loss_uses():
    model = upernet().eval()
    b = batch()
    with torch.no_grad():
        own = model(**b)
        outputs, logits, aux = segmentation_forward(model, {"pixel_values": b["pixel_values"]})
    assert aux is not None and aux.shape == logits.shape == (4, NUM_LABELS, 32, 32)
    torch.testing.assert_close(logits, own.logits)
    ce = torch.nn.CrossEntropyLoss(ignore_index=model.config.loss_ignore_index)
    torch.testing.assert_close(ce(logits, b["labels"]) + 0.4 * ce(aux, b["labels"]), own.loss)
    # the plain baseline's task loss is exactly UperNet's own loss
    task, _ = rdd_task_loss(logits, b["labels"], stage=0, student_aux_logits=aux)
    torch.testing.assert_close(task, own.loss)
    # no auxiliary head: None, and the hook is gone after the call
    assert segmentation_forward(upernet(aux=False), {"pixel_values": b["pixel_values"]})[2] is None
    assert not auxiliary_head(model)._forward_hooks
    _, seg_logits, seg_aux = segmentation_forward(segformer(), {"pixel_values": b["pixel_values"]})
    assert seg_aux is None and seg_logits.shape == (4, NUM_LABELS, 8, 8)


def test_segformer_teacher_errors_at_init_or_uses_uniform_weights(tmp_path, caplog):
    with pytest.raises(ValueError, match="stage1_without_aux_head"):
        trainer(tmp_path, teacher=segformer())
    trainer(tmp_path, teacher=segformer(), rdd_warmup_steps=0)  # stage 2 only: no aux head needed
    with caplog.at_level("WARNING", logger="hf_methods.trainers.rdd_trainer"):
        tr = trainer(tmp_path, teacher=segformer(), stage1_without_aux_head="uniform_weights")
    assert sum("no auxiliary head" in r.message for r in caplog.records) == 1
    tr.train()
    losses = [e["loss"] for e in tr.state.log_history if "loss" in e]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)


def test_segformer_student_logits_are_resized(tmp_path):
    tr = trainer(tmp_path, student=segformer(), rdd_warmup_steps=1, max_steps=2)
    tr.train()
    assert all(math.isfinite(e["loss"]) for e in tr.state.log_history if "loss" in e)


# ---------------------------------------------------------------- the trainer
def test_stage_switch_happens_exactly_at_rdd_warmup_steps(tmp_path):
    tr = trainer(tmp_path, rdd_warmup_steps=3, max_steps=6)
    seen = []
    compute = tr.compute_loss

    def recording(*args, **kwargs):
        loss = compute(*args, **kwargs)
        seen.append((tr.state.global_step, tr.last_rdd_stats["stage"]))
        return loss

    tr.compute_loss = recording
    tr.train()
    assert seen == [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]

    # compute_loss at a set global_step uses that stage's formula
    model = tr.model.eval()
    b = batch()
    with torch.no_grad():
        _, s, s_aux = segmentation_forward(model, {"pixel_values": b["pixel_values"]})
        _, t, t_aux = segmentation_forward(tr.teacher_model, {"pixel_values": b["pixel_values"]})
        kd = pixel_kd_loss(s, t)
        for step, stage in ((2, 1), (3, 2)):
            tr.state.global_step = step
            expected, _ = rdd_task_loss(
                s,
                b["labels"],
                stage=stage,
                teacher_logits=t,
                teacher_aux_logits=t_aux,
                student_aux_logits=s_aux,
                min_kept=200,
            )
            torch.testing.assert_close(tr.compute_loss(model, dict(b)), expected + kd)


def test_tiny_training_run_is_finite_teacher_frozen_and_not_saved(tmp_path):
    teacher = teacher_upernet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    tr = trainer(
        tmp_path,
        teacher=teacher,
        rows=seg_rows(16),
        max_steps=20,
        rdd_warmup_steps=10,
        save_strategy="steps",
        save_steps=20,
        lambda_logits=0.5,
    )
    tr.train()
    logs = [e for e in tr.state.log_history if "loss" in e]
    assert len(logs) == 20
    assert all(math.isfinite(e[k]) for e in logs for k in ("loss", "task_loss", "kd_loss"))
    assert tr.last_rdd_stats["stage"] == 2 and 0 <= float(tr.last_rdd_stats["mask_fraction"]) <= 1
    # the teacher: no gradient, unchanged, still in eval mode
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    # the checkpoint holds the student only
    student_state = tr.model.state_dict()
    with safe_open(str(tmp_path / "checkpoint-20" / "model.safetensors"), framework="pt") as f:
        saved = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert set(saved) == set(student_state)
    assert all(list(student_state[k].shape) == shape for k, shape in saved.items())
    assert sum(math.prod(s) for s in saved.values()) < sum(p.numel() for p in teacher.parameters())


def test_gradient_accumulation_averages_micro_batch_losses(tmp_path):
    rows = seg_rows(4)
    tr = trainer(
        tmp_path,
        rows=rows,
        rdd_method="kd_only",
        max_steps=1,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=2,
        learning_rate=0.0,
    )
    assert tr.model_accepts_loss_kwargs is False  # per-batch means: the Trainer divides by the accumulation steps
    tr.model.train()
    with torch.no_grad():
        micro = [
            float(tr.compute_loss(tr.model, {k: torch.stack([r[k] for r in rows[i : i + 2]]) for k in rows[0]}))
            for i in (0, 2)
        ]
    tr.train()
    assert tr.last_rdd_stats["stage"] == 0
    logged = next(e for e in tr.state.log_history if "loss" in e)
    assert math.isclose(logged["loss"], sum(micro) / 2, rel_tol=1e-4)


def test_min_kept_too_large_warns_once(tmp_path, caplog):
    tr = trainer(tmp_path, rdd_warmup_steps=0, min_kept=100_000, max_steps=2)
    with caplog.at_level("WARNING", logger="hf_methods.trainers.rdd_trainer"):
        tr.train()
    assert sum("XOR mask is empty" in r.message for r in caplog.records) == 1


# ---------------------------------------------------------------- config validation
@pytest.mark.parametrize(
    "field, value, match",
    [
        ("rdd_method", "rkd", "rdd_method"),
        ("stage1_without_aux_head", "ignore", "stage1_without_aux_head"),
        ("rdd_warmup_steps", -1, "rdd_warmup_steps"),
        ("rdd_warmup_steps", 1.5, "rdd_warmup_steps"),
        ("min_kept", -5, "min_kept"),
        ("ohem_thresh", 1.5, "ohem_thresh"),
        ("aux_weight", -0.1, "aux_weight"),
        ("lambda_logits", float("nan"), "lambda_logits"),
        ("class_weights", [1.0, -1.0], "class_weights"),
        ("class_weights", [], "class_weights"),
        ("temperature", 0.0, "temperature"),
    ],
)
def test_bad_config_values_raise(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        RDDConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **{field: value})


@pytest.mark.parametrize(
    "field, value", [("distillation_type", "hard"), ("alpha", 0.5), ("kd_normalization", "numel"), ("kd_weight", 1.0)]
)
def test_fields_rdd_does_not_use_are_not_there(tmp_path, field, value):
    """RDD's KD term is always the soft pixel KL, weighted by lambda_logits (no alpha, no other normalization)."""
    with pytest.raises(TypeError, match=field):
        RDDConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **{field: value})


def test_config_defaults_command_line_and_trainer_checks(tmp_path):
    args = RDDConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert (
        args.rdd_warmup_steps,
        args.ohem_thresh,
        args.min_kept,
        args.aux_weight,
        args.lambda_logits,
        args.temperature,
        args.ignore_index,
        args.class_weights,
    ) == (4000, 0.7, 100000, 0.4, 1.0, 1.0, 255, None)
    assert len(CITYSCAPES_CLASS_WEIGHTS) == 19
    (parsed,) = HfArgumentParser(RDDConfig).parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "true",
            "--class_weights",
            "1",
            "2",
            "0.5",
            "--rdd_method",
            "kd_only",
            "--rdd_warmup_steps",
            "7",
        ]
    )
    assert parsed.class_weights == [1.0, 2.0, 0.5] and parsed.rdd_method == "kd_only" and parsed.rdd_warmup_steps == 7
    with pytest.raises(ValueError, match="class_weights"):
        trainer(tmp_path, class_weights=[1.0, 1.0])
    with pytest.raises(TypeError, match="RDDConfig"):
        RDDTrainer(
            model=upernet(),
            args=RDDConfig.__mro__[1](output_dir=str(tmp_path), use_cpu=True, report_to="none"),
            teacher_model=teacher_upernet(),
        )


def test_model_card_describes_the_rdd_loss(tmp_path):
    tr = trainer(tmp_path, lambda_logits=0.5, temperature=2.0)
    tr.create_model_card()
    text = (tmp_path / "README.md").read_text()
    assert "`RDDTrainer` (rdd)" in text and "0.5 x pixel-wise soft KD (KL x T^2, T=2)" in text
    assert "2 stage-1 steps" in text and "alpha" not in text and "semantic-segmentation" in text
