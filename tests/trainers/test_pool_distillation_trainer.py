"""Learngene Pool stage 1: the loss against a hand computation, matched blocks, hooks, training, saving, resuming."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from hf_methods.trainers import (
    DistillationConfig,
    LearngenePoolDistillationTrainer,
    PoolDistillationConfig,
    load_feature_projectors,
    matched_layers,
    pool_distillation_loss,
)
from hf_methods.trainers.pool_distillation_trainer import capture_features

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from tiny import ARCHS  # noqa: E402


# ---------------------------------------------------------------- tiny models and data
def vit(hidden=16, layers=3, patch=4, num_labels=4, seed=0):
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        image_size=8,
        patch_size=patch,
        num_channels=1,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def teacher(**kw):
    return vit(hidden=32, layers=4, seed=1, **kw)


def image_rows(n=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]


def config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
        "per_device_train_batch_size": 4,
        "max_steps": 3,
        "optim": "adamw_torch",
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
    }
    return PoolDistillationConfig(**{**kwargs, **overrides})


def make_trainer(tmp_path, student, teacher_model, rows=None, **overrides):
    return LearngenePoolDistillationTrainer(
        model=student,
        args=config(tmp_path, **overrides),
        train_dataset=rows or image_rows(),
        teacher_model=teacher_model,
    )


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- 1. the loss against a hand computation
def _softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def _linear(W, b, x):  # y_o = sum_i W[o, i] x_i + b_o
    return [sum(W[o][i] * x[i] for i in range(len(x))) + b[o] for o in range(len(b))]


def _mse(student, teacher, W, b):  # mean over all elements of (student - P(teacher))^2
    total, count = 0.0, 0
    for s_seq, t_seq in zip(student, teacher):
        for s_tok, t_tok in zip(s_seq, t_seq):
            for s_v, p_v in zip(s_tok, _linear(W, b, t_tok)):
                total += (s_v - p_v) ** 2
                count += 1
    return total / count


@pytest.mark.parametrize("feature_loss", ["all", "logits", "logits+rep"])
def test_loss_matches_hand_computation(feature_loss):
    g = torch.Generator().manual_seed(0)
    B, C, S, d_t, d_s, pairs, T, alpha = 3, 4, 2, 5, 3, 2, 2.0, 0.7
    zs, zt = torch.randn(B, C, generator=g), torch.randn(B, C, generator=g)
    y = torch.tensor([0, 3, 1])
    hs, ht = (
        [torch.randn(B, S, d_s, generator=g) for _ in range(pairs)],
        [torch.randn(B, S, d_t, generator=g) for _ in range(pairs)],
    )
    as_, at = (
        [torch.randn(B, S, d_s, generator=g) for _ in range(pairs)],
        [torch.randn(B, S, d_t, generator=g) for _ in range(pairs)],
    )
    torch.manual_seed(0)
    p_hid, p_att = [nn.Linear(d_t, d_s) for _ in range(pairs)], [nn.Linear(d_t, d_s) for _ in range(pairs)]

    def L(t):
        return t.tolist()

    cls = sum(-math.log(_softmax(L(zs[b]))[y[b]]) for b in range(B)) / B
    log = 0.0
    for b in range(B):
        q, p = _softmax(L(zt[b] / T)), _softmax(L(zs[b] / T))
        log += sum(-q[c] * math.log(p[c]) for c in range(C))
    log /= B * C  # a mean over batch x classes, as the official SCE
    rep = sum(_mse(L(hs[k]), L(ht[k]), L(p_hid[k].weight), L(p_hid[k].bias)) for k in range(pairs))
    att = sum(_mse(L(as_[k]), L(at[k]), L(p_att[k].weight), L(p_att[k].bias)) for k in range(pairs))
    expected = {
        "all": (1 - alpha) * cls + alpha * (log + rep + att),
        "logits": 0.5 * cls + 0.5 * log,
        "logits+rep": 0.5 * cls + 0.5 * (log + rep),
    }[feature_loss]

    loss, parts = pool_distillation_loss(
        zs,
        zt,
        y,
        hs,
        ht,
        as_,
        at,
        hidden_projectors=p_hid,
        attention_projectors=p_att,
        feature_loss=feature_loss,
        alpha=alpha,
        temperature=T,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["ce"].item() == pytest.approx(cls, rel=1e-5)
    assert parts["kd"].item() == pytest.approx(log, rel=1e-5)
    assert parts["rep"].item() == pytest.approx(rep if feature_loss != "logits" else 0.0, rel=1e-5, abs=1e-7)
    assert parts["att"].item() == pytest.approx(att if feature_loss == "all" else 0.0, rel=1e-5, abs=1e-7)

    # normalized by a count over the whole accumulated batch: every term scales by B / n
    loss6, _ = pool_distillation_loss(
        zs,
        zt,
        y,
        hs,
        ht,
        as_,
        at,
        hidden_projectors=p_hid,
        attention_projectors=p_att,
        feature_loss=feature_loss,
        alpha=alpha,
        temperature=T,
        num_items_in_batch=6,
    )
    assert loss6.item() == pytest.approx(expected * B / 6, rel=1e-5)


def test_loss_errors():
    z, y, h = torch.randn(2, 3), torch.tensor([0, 1]), [torch.randn(2, 5, 4)]
    with pytest.raises(ValueError, match="token counts"):
        pool_distillation_loss(z, z, y, h, [torch.randn(2, 6, 4)], h, h)
    with pytest.raises(ValueError, match="d_teacher -> d_student"):
        pool_distillation_loss(z, z, y, h, [torch.randn(2, 5, 8)], h, h)
    with pytest.raises(ValueError, match="needs the matched hidden states"):
        pool_distillation_loss(z, z, y)
    with pytest.raises(ValueError, match="no `labels`"):
        pool_distillation_loss(z, z, None, h, h, h, h, alpha=0.9)
    with pytest.raises(ValueError, match="per-example logits"):
        pool_distillation_loss(torch.randn(2, 4, 3), torch.randn(2, 4, 3), y, feature_loss="logits")
    with pytest.raises(ValueError, match="feature_loss"):
        pool_distillation_loss(z, z, y, feature_loss="rep")
    loss, _ = pool_distillation_loss(z, z, None, h, h, h, h, alpha=1.0)  # pure distillation needs no labels
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- 2. matched positions
@pytest.mark.parametrize(
    "layers, expected",
    [
        (12, {"[end]": [11], "[mid,end]": [7, 11], "[front,end]": [3, 7, 11]}),
        (9, {"[end]": [8], "[mid,end]": [5, 8], "[front,end]": [2, 5, 8]}),
        (6, {"[end]": [5], "[mid,end]": [3, 5], "[front,end]": [1, 3, 5]}),
        (3, {"[end]": [2], "[mid,end]": [1, 2], "[front,end]": [0, 1, 2]}),
        (1, {"[end]": [0], "[mid,end]": [0, 0], "[front,end]": [0, 0, 0]}),
    ],
)
def test_matched_layers(layers, expected):
    for positions, ids in expected.items():
        assert matched_layers(layers, positions) == ids
    with pytest.raises(ValueError, match="feature_positions"):
        matched_layers(layers, "[front]")
    with pytest.raises(ValueError, match="num_layers"):
        matched_layers(0, "[end]")


# ---------------------------------------------------------------- 3. config
def test_config_defaults_and_validation(tmp_path):
    c = PoolDistillationConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert (c.alpha, c.temperature) == (0.9, 1.0) and not hasattr(c, "distillation_type")  # always soft
    assert (c.feature_positions, c.feature_loss, c.ddp_find_unused_parameters) == ("[front,end]", "all", False)
    for bad in (
        {"feature_positions": "[front]"},
        {"feature_loss": "rep"},
        {"ddp_find_unused_parameters": True},
        {"alpha": 1.5},
        {"temperature": 0.0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PoolDistillationConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **bad)
    for unused in ({"distillation_type": "hard"}, {"kd_normalization": "numel"}):
        with pytest.raises(TypeError, match=next(iter(unused))):
            PoolDistillationConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **unused)
    with pytest.raises(TypeError, match="PoolDistillationConfig"):
        LearngenePoolDistillationTrainer(
            model=vit(), args=DistillationConfig(output_dir=str(tmp_path)), teacher_model=teacher()
        )


# ---------------------------------------------------------------- 4. hooks capture the attention branch
def test_hooks_capture_attention_branch_of_vit():
    model = vit(hidden=16, layers=2).eval()
    layer, x = model.vit.layers[1], torch.randn(2, 1, 8, 8)
    model(pixel_values=x, output_hidden_states=True)  # transformers installs its own output-capturing hooks once
    hooks_before = (len(layer._forward_hooks), len(layer.attention._forward_hooks))
    with torch.no_grad(), capture_features(model, [1]) as (hidden, attn):
        out = model(pixel_values=x, output_hidden_states=True)
    h_in = out.hidden_states[1]  # input of block 1 = output of block 0
    with torch.no_grad():  # the attention branch written out by hand: o_proj(softmax(q k^T / sqrt(d)) v) on LN(x)
        n = layer.layernorm_before(h_in)
        B, S, D = n.shape
        heads, hd = 2, D // 2
        q, k, v = (
            proj(n).view(B, S, heads, hd).transpose(1, 2)
            for proj in (layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj)
        )
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        manual = layer.attention.o_proj((weights @ v).transpose(1, 2).reshape(B, S, D))
        mid = h_in + manual  # residual add after the branch
        block_out = mid + layer.mlp(layer.layernorm_after(mid))
    torch.testing.assert_close(attn[1], manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hidden[1], block_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hidden[1], out.hidden_states[2])
    assert set(hidden) == set(attn) == {1}
    # our hooks live only inside the `with`
    assert (len(layer._forward_hooks), len(layer.attention._forward_hooks)) == hooks_before


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_hooks_resolve_on_every_registered_architecture(arch):
    make_config, class_name, make_inputs = ARCHS[arch]
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(make_config()).eval()
    inputs = make_inputs()
    inputs.pop("labels")
    with torch.no_grad(), capture_features(model, [0, 1]) as (hidden, attn):
        model(**inputs)
    d = model.config.hidden_size
    for store in (hidden, attn):
        assert set(store) == {0, 1}
        assert all(t.dim() == 3 and t.shape[0] == 3 and t.shape[-1] == d for t in store.values())
    assert not torch.equal(hidden[1], attn[1])


# ---------------------------------------------------------------- 5. training a narrower, shallower student
def test_train_save_and_reload(tmp_path):
    student, big = vit(hidden=16, layers=3), teacher()
    student.save_pretrained(tmp_path / "stock")  # the keys a stock student checkpoint has
    stock_keys = set(load_file(str(tmp_path / "stock/model.safetensors")))
    teacher_before = params(big)
    trainer = make_trainer(tmp_path / "run", student, big)
    projectors = trainer.feature_projectors
    assert len(projectors.hidden) == len(projectors.attention) == 3
    assert projectors.student_layers == [0, 1, 2] and projectors.teacher_layers == [0, 2, 3]
    proj_before, student_before = params(projectors), params(student)
    trainer.train()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for h in logs:
        assert all(math.isfinite(h[k]) for k in ("loss", "ce_loss", "kd_loss", "rep_loss", "att_loss"))
        assert h["rep_loss"] > 0 and h["att_loss"] > 0
        assert h["loss"] == pytest.approx(
            0.1 * h["ce_loss"] + 0.9 * (h["kd_loss"] + h["rep_loss"] + h["att_loss"]), rel=1e-4
        )
    for k, v in params(projectors).items():
        assert not torch.equal(v, proj_before[k]), k  # every projector trains with the student
    assert any(not torch.equal(v, student_before[k]) for k, v in params(student).items())
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher_model.parameters())
    for k, v in trainer.teacher_model.state_dict().items():
        torch.testing.assert_close(v, teacher_before[k], rtol=0, atol=0)

    metrics = trainer.evaluate(image_rows())  # the eval loss is the same Learngene Pool loss
    assert math.isfinite(metrics["eval_loss"]) and trainer.predict(image_rows()).predictions.shape == (8, 4)

    out = tmp_path / "final"
    trainer.save_model(str(out))
    assert set(load_file(str(out / "model.safetensors"))) == stock_keys  # no projector keys
    reloaded, info = ViTForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    trained = {k: v for k, v in student.state_dict().items() if not k.startswith("pool_feature_projectors.")}
    for k, v in reloaded.state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0)
    assert trainer.feature_projectors is projectors  # still attached after saving

    saved = load_feature_projectors(out)
    assert saved["student_layers"] == [0, 1, 2] and saved["teacher_layers"] == [0, 2, 3]
    assert saved["feature_positions"] == "[front,end]"
    assert len(saved["hidden"]) == len(saved["attention"]) == 3
    for kind in ("hidden", "attention"):
        for k, p in enumerate(saved[kind]):
            assert p["weight"].shape == (16, 32) and p["bias"].shape == (16,)
            torch.testing.assert_close(p["weight"], getattr(projectors, kind)[k].weight.detach())
    with safe_open(str(out / "feature_projectors.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["teacher_layers"]) == [0, 2, 3]
    with pytest.raises(FileNotFoundError, match="feature_projectors.safetensors"):
        load_feature_projectors(tmp_path / "stock")


def test_resume_restores_student_and_projectors(tmp_path):
    kw = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}  # resuming needs checkpoints
    full = make_trainer(tmp_path / "full", vit(), teacher(), **kw)
    full.train()
    assert (tmp_path / "full/checkpoint-2/feature_projectors.safetensors").is_file()
    resumed = make_trainer(tmp_path / "resumed", vit(seed=5), teacher(), **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full/checkpoint-2"))
    for k, v in params(full.model).items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=1e-6)


def test_gradient_accumulation_is_exact(tmp_path):
    def run(folder, batch, ga):
        trainer = make_trainer(
            tmp_path / folder,
            vit(),
            teacher(),
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=ga,
            max_steps=1,
            optim="sgd",
            learning_rate=0.1,
        )
        trainer.train()
        return params(trainer.model)

    full, accum = run("a", 8, 1), run("b", 4, 2)
    for k in full:
        torch.testing.assert_close(accum[k], full[k], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- 6. modes and mismatches
def test_logits_modes_train_only_what_they_use(tmp_path):
    trainer = make_trainer(tmp_path / "rep", vit(), teacher(), feature_loss="logits+rep", feature_positions="[end]")
    assert len(trainer.feature_projectors.hidden) == 1 and len(trainer.feature_projectors.attention) == 0

    student, big = vit(), teacher()
    trainer = make_trainer(tmp_path / "logits", student, big, feature_loss="logits")
    assert trainer.feature_projectors is None
    rows = image_rows(4)
    batch = {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        zs, zt = student(pixel_values=batch["pixel_values"]).logits, big(pixel_values=batch["pixel_values"]).logits
    ce = nn.functional.cross_entropy(zs, batch["labels"])
    sce = (-(zt.softmax(-1) * zs.log_softmax(-1))).mean()
    assert loss.item() == pytest.approx((0.5 * ce + 0.5 * sce).item(), rel=1e-5)
    trainer.save_model(str(tmp_path / "logits_final"))
    assert not (tmp_path / "logits_final/feature_projectors.safetensors").exists()


def test_mismatched_token_counts_raise(tmp_path):
    student = vit(patch=4)  # 8x8 image: 4 patches + CLS
    trainer = make_trainer(tmp_path, student, teacher(patch=2))  # 16 patches + CLS
    batch = {"pixel_values": torch.randn(2, 1, 8, 8), "labels": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match=r"token counts differ.*image_size and patch_size"):
        trainer.compute_loss(student, batch)


def test_model_card_describes_the_stage_1_loss(tmp_path):
    trainer = make_trainer(tmp_path, vit(), teacher(), alpha=0.8)
    trainer.create_model_card()
    text = (tmp_path / "README.md").read_text()
    assert "0.2 x CE + 0.8 x (soft CE of the logits (T=1) + block-output MSE + attention-output MSE" in text
    assert "learngene-pool" in text
