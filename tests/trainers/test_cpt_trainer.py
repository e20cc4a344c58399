"""ConsistentProxyTuningTrainer: CPT's loss, frozen large/small models, cached logits, the plain baseline."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_methods.models.proxy_tuned import ProxyTunedForCausalLM, proxy_from_small
from hf_methods.trainers.cpt_config import ConsistentProxyTuningConfig
from hf_methods.trainers.cpt_trainer import (
    CachedLogitsCollator,
    ConsistentProxyTuningTrainer,
    cache_logits,
    proxy_tuning_loss,
)

VOCAB = 40


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest, and does not contend with other work on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gpt2(n_embd, seed, vocab=VOCAB):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(
        GPT2Config(
            n_embd=n_embd,
            n_layer=2,
            n_head=2,
            vocab_size=vocab,
            n_positions=32,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=0,
        )
    )


def lm_rows(n=8, seed=0):
    """Token rows of unequal length (labels = inputs); a collator pads them."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        tokens = torch.randint(2, VOCAB, (5 + i % 3,), generator=g).tolist()
        rows.append({"input_ids": tokens, "labels": tokens})
    return Dataset.from_list(rows)


def pad_collator(features):
    width = max(len(f["input_ids"]) for f in features)
    pad = [width - len(f["input_ids"]) for f in features]
    return {
        "input_ids": torch.tensor([f["input_ids"] + [0] * p for f, p in zip(features, pad)]),
        "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * p for f, p in zip(features, pad)]),
        "labels": torch.tensor([f["labels"] + [-100] * p for f, p in zip(features, pad)]),
    }


def args(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    return ConsistentProxyTuningConfig(**kwargs)


@pytest.fixture
def models(tmp_path):
    large, small = gpt2(32, 0), gpt2(16, 1)
    large.save_pretrained(tmp_path / "large")
    small.save_pretrained(tmp_path / "small")
    return GPT2LMHeadModel.from_pretrained(tmp_path / "large"), GPT2LMHeadModel.from_pretrained(tmp_path / "small")


def trainer_for(tmp_path, large, small, proxy=None, data=None, **overrides):
    return ConsistentProxyTuningTrainer(
        model=proxy if proxy is not None else proxy_from_small(small),
        args=args(tmp_path, **overrides),
        train_dataset=data if data is not None else lm_rows(),
        eval_dataset=data if data is not None else lm_rows(),
        data_collator=pad_collator,
        large_model=large,
        small_model=small,
    )


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def perturb(model, scale=0.1):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------- the loss
def test_loss_shifts_masks_and_normalizes_like_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    zl, zs, zp = (torch.randn(2, 5, 6, generator=g) for _ in range(3))
    labels = torch.tensor([[1, 2, -100, 4, -100], [-100, 0, 5, 5, 3]])
    alpha = 0.7
    total = plain_total = 0.0
    count = 0
    for b in range(2):
        for j in range(4):  # the logits at j predict the label at j + 1
            y = labels[b, j + 1].item()
            if y == -100:
                continue
            count += 1
            z = zl[b, j].double() + alpha * (zp[b, j].double() - zs[b, j].double())
            total -= torch.log_softmax(z, -1)[y].item()
            plain_total -= torch.log_softmax(zp[b, j].double(), -1)[y].item()
    assert count == 6
    for n_items in (None, 9):
        n = count if n_items is None else n_items
        loss, logits = proxy_tuning_loss(zp, labels, zl, zs, alpha=alpha, shift_labels=True, num_items_in_batch=n_items)
        assert loss.item() == pytest.approx(total / n, rel=1e-5)
        torch.testing.assert_close(logits, zl + alpha * (zp - zs))
        loss, _ = proxy_tuning_loss(zp, labels, plain=True, shift_labels=True, num_items_in_batch=n_items)
        assert loss.item() == pytest.approx(plain_total / n, rel=1e-5)
    with pytest.raises(ValueError, match="large and the small model's logits"):
        proxy_tuning_loss(zp, labels)


def test_at_init_the_combination_is_the_large_model_exactly(tmp_path, models):
    large, small = models
    trainer = trainer_for(tmp_path, large, small)
    batch = pad_collator([lm_rows()[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        z_large = large(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(out["logits"], z_large.float())
    expected = F.cross_entropy(z_large[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_alpha_zero_gives_the_proxy_no_gradient(tmp_path, models):
    large, small = models
    trainer = trainer_for(tmp_path, large, small, proxy=perturb(proxy_from_small(small)), alpha_train=0.0)
    batch = pad_collator([lm_rows()[i] for i in range(4)])
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch).backward()
    grads = [p.grad for p in trainer.model.parameters()]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_only_the_proxy_trains_and_the_frozen_models_stay_out_of_checkpoints(tmp_path, models):
    large, small = models
    before_large, before_small = params(large), params(small)
    trainer = trainer_for(tmp_path, large, small, save_strategy="steps", save_steps=1, save_only_model=True)
    proxy_before = params(trainer.model)
    trainer.train()
    assert trainer.large_model is large and trainer.small_model is small
    for model, before in ((large, before_large), (small, before_small)):
        assert all(p.grad is None and not p.requires_grad for p in model.parameters())
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert not model.training
    assert any(not torch.equal(v, proxy_before[k]) for k, v in trainer.model.state_dict().items())
    assert large not in trainer.accelerator._models and small not in trainer.accelerator._models
    proxy_keys = set(trainer.model.state_dict())
    for step in (1, 2):
        folder = tmp_path / "out" / f"checkpoint-{step}"
        files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        assert files == ["model.safetensors"]
        assert set(load_file(folder / "model.safetensors")) <= proxy_keys
        assert GPT2LMHeadModel.from_pretrained(folder).config.n_embd == 16  # the proxy, not the large model


def test_gradient_accumulation_equals_one_big_batch(tmp_path, models):
    large, small = models
    one = trainer_for(tmp_path / "a", large, small, max_steps=1, per_device_train_batch_size=4)
    one.train()
    acc = trainer_for(
        tmp_path / "b", large, small, max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2
    )
    acc.train()
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(acc.model.state_dict()[k], v, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- cached logits
def test_cached_logits_give_the_loss_and_updates_of_the_live_models(tmp_path, models):
    large, small = models
    data = lm_rows()
    cached = cache_logits(cache_logits(data, large, "z_large", batch_size=3), small, "z_small", batch_size=5)
    assert len(cached[0]["z_large"]) == len(data[0]["input_ids"]) and len(cached[0]["z_large"][0]) == VOCAB

    live = trainer_for(tmp_path / "live", large, small, proxy=perturb(proxy_from_small(small)))
    offline = ConsistentProxyTuningTrainer(
        model=perturb(proxy_from_small(small)),
        train_dataset=cached,
        eval_dataset=cached,
        data_collator=pad_collator,
        args=args(tmp_path / "offline", large_logits_column="z_large", small_logits_column="z_small"),
    )
    assert offline.large_model is None and offline.small_model is None  # the black boxes are not needed
    torch.testing.assert_close(offline.evaluate()["eval_loss"], live.evaluate()["eval_loss"], rtol=1e-5, atol=1e-6)
    live.train()
    offline.train()
    for k, v in live.model.state_dict().items():
        torch.testing.assert_close(offline.model.state_dict()[k], v, rtol=1e-4, atol=1e-5)

    # a cached row from another tokenization is refused
    collate = CachedLogitsCollator(pad_collator, ["z_large"])
    bad = dict(cached[0])
    bad["z_large"] = bad["z_large"] + bad["z_large"]
    with pytest.raises(ValueError, match="same tokenization"):
        collate([bad, dict(cached[1])])
    # left padding puts the zeros first
    left = CachedLogitsCollator(pad_collator, ["z_large"], padding_side="left")([dict(cached[0]), dict(cached[1])])
    width = left["input_ids"].shape[1]
    gap = width - len(cached[0]["input_ids"])
    assert gap > 0 and torch.count_nonzero(left["z_large"][0, :gap]) == 0


def test_cached_columns_without_models_and_without_the_column_fail_clearly(tmp_path, models):
    _, small = models
    trainer = ConsistentProxyTuningTrainer(
        model=proxy_from_small(small),
        train_dataset=lm_rows(),
        data_collator=pad_collator,
        small_model=small,
        args=args(tmp_path, large_logits_column="z_large"),
    )
    with pytest.raises(ValueError, match="no large model and no cached large-model logits.*cache_logits"):
        trainer.train()


# ---------------------------------------------------------------- plain Proxy-tuning
def test_plain_proxy_tuning_trains_the_proxy_alone_and_evaluates_the_combination(tmp_path, models):
    large, small = models
    proxy = perturb(proxy_from_small(small))
    trainer = trainer_for(tmp_path, large, small, proxy=proxy, plain_proxy_tuning=True, alpha_test=0.5)
    batch = pad_collator([lm_rows()[i] for i in range(4)])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    expected = proxy(**inputs).logits[:, :-1]
    ce = F.cross_entropy(expected.reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    trainer.model.eval()
    with torch.no_grad():
        loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        z = large(**inputs).logits + 0.5 * (proxy(**inputs).logits - small(**inputs).logits)
    torch.testing.assert_close(out["logits"], z)
    # without the frozen models, plain mode needs nothing but the proxy
    alone = ConsistentProxyTuningTrainer(
        model=proxy, train_dataset=lm_rows(), data_collator=pad_collator, args=args(tmp_path, plain_proxy_tuning=True)
    )
    alone.train()


# ---------------------------------------------------------------- set-up errors
def test_vocabulary_mismatch_is_a_clear_error(tmp_path, models):
    large, _ = models
    small = gpt2(16, 1, vocab=VOCAB + 1)
    with pytest.raises(ValueError, match="do not share an output space.*same tokenizer"):
        trainer_for(tmp_path, large, small)

    class TinyTokenizer:
        def convert_tokens_to_ids(self, tokens):
            return 0

        def __len__(self):
            return VOCAB + 5

    with pytest.raises(ValueError, match="tokenizer has 45 tokens"):
        ConsistentProxyTuningTrainer(
            model=proxy_from_small(models[1]),
            args=args(tmp_path),
            large_model=large,
            small_model=models[1],
            processing_class=TinyTokenizer(),
        )


def test_models_given_by_name_and_the_proxy_made_from_the_small_model(tmp_path, models):
    trainer = ConsistentProxyTuningTrainer(
        args=args(
            tmp_path,
            large_model_name_or_path=str(tmp_path / "large"),
            small_model_name_or_path=str(tmp_path / "small"),
            small_dtype="bfloat16",
        ),
        train_dataset=lm_rows(),
        data_collator=pad_collator,
    )
    assert trainer.model.config.n_embd == 16 and trainer.model is not trainer.small_model
    assert trainer.small_model.dtype == torch.bfloat16 and trainer.large_model.dtype == torch.float32
    assert all(p.requires_grad for p in trainer.model.parameters())
    trainer.train()
    deployed = trainer.proxy_tuned_model()
    assert isinstance(deployed, ProxyTunedForCausalLM)
    assert deployed.config.large_model_name_or_path == str(tmp_path / "large")
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Consistent Proxy Tuning" in card and "proxy-tuning" in card and "from_models" in card
    with pytest.raises(ValueError, match="CPT needs the frozen large model"):
        ConsistentProxyTuningTrainer(model=gpt2(16, 1), args=args(tmp_path), small_model=models[1])
    with pytest.raises(TypeError, match="ConsistentProxyTuningConfig"):
        from hf_methods.trainers.distillation_config import DistillationConfig

        ConsistentProxyTuningTrainer(model=gpt2(16, 1), args=DistillationConfig(output_dir=str(tmp_path)))


def test_bad_config_values_name_the_field(tmp_path):
    base = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    cases = [
        ({"alpha_train": float("nan")}, "`alpha_train`"),
        ({"alpha_train": True}, "`alpha_train`"),
        ({"alpha_test": math.inf}, "`alpha_test`"),
        ({"alpha_test": "one"}, "`alpha_test`"),
        ({"large_dtype": "int8"}, "`large_dtype`"),
        ({"small_dtype": "fp16"}, "`small_dtype`"),
        ({"large_logits_column": ""}, "`large_logits_column`"),
        ({"large_logits_column": "z", "small_logits_column": "z"}, "their own columns"),
        ({"large_model_init_kwargs": "dtype=bfloat16"}, "`large_model_init_kwargs`"),
        ({"plain_proxy_tuning": "yes"}, "`plain_proxy_tuning`"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            ConsistentProxyTuningConfig(**base, **overrides)
    # no teacher and no distillation term: the large model is part of the model, not a teacher
    for unused in ("distillation_type", "teacher_model_name_or_path", "alpha", "temperature"):
        with pytest.raises(TypeError, match=unused):
            ConsistentProxyTuningConfig(**base, **{unused: "soft" if unused == "distillation_type" else 1.0})
    parsed = ConsistentProxyTuningConfig(**base, small_model_init_kwargs='{"revision": "main"}')
    assert parsed.small_model_init_kwargs == {"revision": "main"}


# ---------------------------------------------------------------- the consistency effect (research CPU test 4)
class Linear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(weight)

    def forward(self, x, labels=None):
        return SequenceClassifierOutput(logits=self.linear(x))


def _combined_train_ce(seed, plain, tmp_path):
    g = torch.Generator().manual_seed(seed)
    d, k, n = 8, 4, 256
    truth = torch.randn(k, d, generator=g) * 2
    x = torch.randn(n, d, generator=g)
    y = (x @ truth.T).argmax(-1)
    large_w = truth.clone()
    large_w[[0, 1]] = truth[[1, 0]]  # the black box is confidently wrong on classes 0 and 1
    small_w = 0.3 * truth + torch.randn(k, d, generator=g)  # a weaker model
    large, small = Linear(large_w), Linear(small_w)
    data = Dataset.from_dict({"x": x.tolist(), "labels": y.tolist()})
    trainer = ConsistentProxyTuningTrainer(
        model=Linear(small_w),
        train_dataset=data,
        large_model=large,
        small_model=small,
        args=args(
            tmp_path / f"{seed}-{plain}",
            max_steps=10,
            per_device_train_batch_size=64,
            learning_rate=0.1,
            train_sampling_strategy="random",
            plain_proxy_tuning=plain,
            seed=seed,
        ),
    )
    trainer.train()
    with torch.no_grad():
        z = large(x).logits + (trainer.model(x).logits - small(x).logits)
    return F.cross_entropy(z, y).item()


def test_cpt_combined_train_loss_is_no_worse_than_plain_proxy_tuning(tmp_path):
    cpt = [_combined_train_ce(seed, False, tmp_path) for seed in range(3)]
    plain = [_combined_train_ce(seed, True, tmp_path) for seed in range(3)]
    assert sum(cpt) / 3 <= sum(plain) / 3, (cpt, plain)


# ---------------------------------------------------------------- tiny GPT-2 end to end (research CPU test 5)
def test_tiny_gpt2_trains_and_the_deployed_model_generates(tmp_path, models):
    large, small = models
    trainer = trainer_for(
        tmp_path,
        large,
        small,
        max_steps=10,
        optim="adamw_torch",
        learning_rate=1e-2,
        logging_steps=1,
        train_sampling_strategy="random",
    )
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 10 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    deployed = trainer.proxy_tuned_model().eval()
    prompt = torch.tensor([[2, 3, 4]])
    out = deployed.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False, pad_token_id=0
    )
    assert out.shape == (1, 8)
    deployed.save_pretrained(tmp_path / "deployed")
    assert not (tmp_path / "deployed" / "model.safetensors").exists()
