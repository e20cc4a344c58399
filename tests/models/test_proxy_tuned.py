"""ProxyTunedForCausalLM / ProxyTunedForSequenceClassification: logit arithmetic, generation, saving by reference."""

import json
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

from hf_methods.compat import output_cache
from hf_methods.models.proxy_tuned import (
    ProxyTunedCache,
    ProxyTunedConfig,
    ProxyTunedForCausalLM,
    ProxyTunedForSequenceClassification,
    combine_logits,
    proxy_from_small,
)

AutoConfig.register(ProxyTunedConfig.model_type, ProxyTunedConfig, exist_ok=True)
AutoModelForCausalLM.register(ProxyTunedConfig, ProxyTunedForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(ProxyTunedConfig, ProxyTunedForSequenceClassification, exist_ok=True)

VOCAB = 40


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest, and does not contend with other work on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gpt2(n_embd, seed, vocab=VOCAB, n_layer=2):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(
        GPT2Config(
            n_embd=n_embd,
            n_layer=n_layer,
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


def bert(hidden, seed, num_labels=3):
    torch.manual_seed(seed)
    return BertForSequenceClassification(
        BertConfig(
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            vocab_size=VOCAB,
            max_position_embeddings=32,
            num_labels=num_labels,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )


def saved(model, folder):
    """`model` saved and reloaded, so it has a name_or_path to be referenced by."""
    model.save_pretrained(folder)
    return type(model).from_pretrained(folder)


@pytest.fixture
def lm(tmp_path):
    large = saved(gpt2(32, 0), tmp_path / "large")
    small = saved(gpt2(16, 1), tmp_path / "small")
    return large, small


def perturbed(model, scale=0.05, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def ids(n=2, seq=6, seed=0):
    return torch.randint(2, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- logit arithmetic
def test_at_init_combined_logits_equal_the_large_models_exactly(lm):
    large, small = lm
    model = ProxyTunedForCausalLM.from_models(large, small, alpha_test=0.7).eval()
    x = ids()
    with torch.no_grad():
        out = model(input_ids=x)
        expected = large(input_ids=x).logits
    assert torch.equal(out.logits, expected.float())
    assert not any(p.requires_grad for p in model.large.parameters())
    assert not any(p.requires_grad for p in model.small.parameters())
    assert all(p.requires_grad for p in model.proxy.parameters())


def test_combined_logits_and_loss_match_a_hand_computation(lm):
    large, small = lm
    proxy = perturbed(proxy_from_small(small))
    model = ProxyTunedForCausalLM.from_models(large, small, proxy, alpha_test=0.5).eval()
    x = ids(seed=1)
    labels = x.clone()
    labels[0, 2] = labels[1, 4] = -100
    with torch.no_grad():
        out = model(input_ids=x, labels=labels)
        zl, zs, zp = (m(input_ids=x).logits.double() for m in (large, small, proxy))
    z = zl + 0.5 * (zp - zs)
    torch.testing.assert_close(out.logits.double(), z, rtol=1e-5, atol=1e-5)
    total, count = 0.0, 0
    for b in range(2):
        for j in range(5):  # position j predicts token j + 1
            y = labels[b, j + 1].item()
            if y != -100:
                total -= torch.log_softmax(z[b, j], -1)[y].item()
                count += 1
    assert count == 8
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)
    with torch.no_grad():  # num_items_in_batch (Trainer, gradient accumulation) replaces the local count
        assert model(input_ids=x, labels=labels, num_items_in_batch=20).loss.item() == pytest.approx(
            total / 20, rel=1e-5
        )


def test_combine_logits_is_float32_and_checks_shapes():
    a = torch.randn(2, 3, dtype=torch.bfloat16)
    assert combine_logits(a, a, a, 2.0).dtype == torch.float32
    with pytest.raises(ValueError, match="share the vocabulary"):
        combine_logits(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 3), 1.0)


def test_only_the_proxy_gets_gradients(lm):
    large, small = lm
    model = ProxyTunedForCausalLM.from_models(large, small, perturbed(proxy_from_small(small))).train()
    assert not model.large.training and not model.small.training  # train() leaves the frozen models in eval
    x = ids()
    model(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is None for p in model.large.parameters())
    assert all(p.grad is None for p in model.small.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.proxy.parameters())


def test_vocabulary_mismatch_is_a_clear_error(tmp_path):
    large = saved(gpt2(32, 0, vocab=VOCAB), tmp_path / "large")
    small = saved(gpt2(16, 1, vocab=VOCAB + 2), tmp_path / "small")
    with pytest.raises(ValueError, match=r"large 40, small 42.*same tokenizer"):
        ProxyTunedForCausalLM.from_models(large, small)


def test_from_models_needs_references():
    with pytest.raises(ValueError, match="large model has no name_or_path.*save it first"):
        ProxyTunedForCausalLM.from_models(gpt2(32, 0), gpt2(16, 1))
    model = ProxyTunedForCausalLM.from_models(
        gpt2(32, 0), gpt2(16, 1), large_model_name_or_path="org/large", small_model_name_or_path="org/small"
    )
    assert model.config.large_model_name_or_path == "org/large"


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="`task`"):
        ProxyTunedConfig(task="translation")
    for bad in (float("nan"), math.inf, True, "1.0"):
        with pytest.raises(ValueError, match="`alpha_test`"):
            ProxyTunedConfig(alpha_test=bad)
    with pytest.raises(ValueError, match="`large_model_name_or_path`"):
        ProxyTunedConfig(large_model_name_or_path="  ")
    with pytest.raises(ValueError, match="`proxy_config`"):
        ProxyTunedConfig(proxy_config={"n_embd": 3})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['alpha_tset'\]"):
        ProxyTunedConfig(alpha_tset=1.0)
    with pytest.raises(ValueError, match="`vocab_size`"):
        ProxyTunedConfig(vocab_size=0)


# ---------------------------------------------------------------- generation
def test_generate_equals_a_hand_rolled_greedy_loop(lm):
    large, small = lm
    model = ProxyTunedForCausalLM.from_models(large, small, perturbed(proxy_from_small(small), 0.2)).eval()
    x = ids(seed=2)
    mask = torch.ones_like(x)
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(x, **kwargs)
    uncached = model.generate(x, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached) and torch.equal(cached, model.generate(x, **kwargs))
    seq = x
    with torch.no_grad():
        for _ in range(6):
            zl, zs, zp = (m(input_ids=seq).logits[:, -1] for m in (model.large, model.small, model.proxy))
            seq = torch.cat([seq, (zl + (zp - zs)).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)
    # not the large model's own continuation: the proxy steers decoding
    assert not torch.equal(cached, large.generate(x, **kwargs))

    out = model(input_ids=x, use_cache=True)
    cache = output_cache(out)
    assert isinstance(cache, ProxyTunedCache) and cache.get_seq_length() == x.shape[1]

    torch.manual_seed(0)
    sampled = model.generate(x, attention_mask=mask, max_new_tokens=5, do_sample=True, top_k=10, pad_token_id=0)
    torch.manual_seed(0)
    again = model.generate(x, attention_mask=mask, max_new_tokens=5, do_sample=True, top_k=10, pad_token_id=0)
    assert sampled.shape == (2, 11) and torch.equal(sampled, again)
    beams = model.generate(x, attention_mask=mask, max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=0)
    assert beams.shape == (2, 10)


def test_generate_with_left_padding_matches_unpadded(lm):
    large, small = lm
    model = ProxyTunedForCausalLM.from_models(large, small, perturbed(proxy_from_small(small), 0.2)).eval()
    short = ids(n=1, seq=4, seed=5)
    alone = model.generate(
        short,
        attention_mask=torch.ones_like(short),
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), short], dim=1)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones_like(short)], dim=1)
    batched = model.generate(
        padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    assert torch.equal(batched[:, 2:], alone)


# ---------------------------------------------------------------- saving by reference
def _tensor_names(folder):
    names = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(root, f), framework="pt") as st:
                    names[os.path.relpath(os.path.join(root, f), folder)] = set(st.keys())
    return names


def test_saved_folder_holds_only_the_proxy_and_reloads_bit_exactly(lm, tmp_path):
    large, small = lm
    model = ProxyTunedForCausalLM.from_models(large, small, perturbed(proxy_from_small(small)), alpha_test=0.8).eval()
    folder = tmp_path / "tuned"
    model.save_pretrained(folder)

    tensors = _tensor_names(folder)
    assert list(tensors) == [os.path.join("proxy", "model.safetensors")]
    assert tensors[os.path.join("proxy", "model.safetensors")] <= set(small.state_dict())
    large_bytes = sum(p.numel() * p.element_size() for p in large.parameters())
    stored = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
    assert stored < large_bytes  # the large weights are not in the folder
    config = json.loads((folder / "config.json").read_text())
    assert config["large_model_name_or_path"] == os.path.join("..", "large")  # relative: the tree moves as one
    assert config["alpha_test"] == 0.8 and config["auto_map"]["AutoModelForCausalLM"].endswith("ProxyTunedForCausalLM")

    x = ids(seed=4)
    with torch.no_grad():
        expected = model(input_ids=x).logits
    for loader in (ProxyTunedForCausalLM, AutoModelForCausalLM):
        again = loader.from_pretrained(folder)
        assert type(again) is ProxyTunedForCausalLM and again.config.alpha_test == 0.8
        with torch.no_grad():
            assert torch.equal(again(input_ids=x).logits, expected)
        for k, v in model.proxy.state_dict().items():
            assert torch.equal(again.proxy.state_dict()[k], v)
    # the tuned proxy alone is a plain transformers model
    assert type(AutoModelForCausalLM.from_pretrained(folder, subfolder="proxy")) is GPT2LMHeadModel

    # moving the whole tree keeps the references valid
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    try:
        again = ProxyTunedForCausalLM.from_pretrained(moved / "tuned")
        assert os.path.samefile(again.config.large_model_name_or_path, moved / "large")
        with torch.no_grad():
            assert torch.equal(again(input_ids=x).logits, expected)
        # and a missing reference is a clear error naming the field
        shutil.rmtree(moved / "large")
        with pytest.raises(FileNotFoundError, match="large_model_name_or_path"):
            ProxyTunedForCausalLM.from_pretrained(moved / "tuned")
        again = ProxyTunedForCausalLM.from_pretrained(moved / "tuned", large_model=large)  # or pass it loaded
        with torch.no_grad():
            assert torch.equal(again(input_ids=x).logits, expected)
    finally:
        shutil.rmtree(moved, ignore_errors=True)

    with pytest.raises(ValueError, match="ProxyTunedForCausalLM"):
        ProxyTunedForSequenceClassification.from_pretrained(folder)


def test_sequence_classification(tmp_path):
    large = saved(bert(32, 0), tmp_path / "large")
    small = saved(bert(16, 1), tmp_path / "small")
    model = ProxyTunedForSequenceClassification.from_models(large, small).eval()
    x = ids(n=4, seq=5)
    labels = torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, large(input_ids=x).logits.float())
    perturbed(model.proxy)
    with torch.no_grad():
        out = model(input_ids=x, labels=labels)
        z = large(input_ids=x).logits + (model.proxy(input_ids=x).logits - small(input_ids=x).logits)
    torch.testing.assert_close(out.logits, z)
    assert out.loss.item() == pytest.approx(F.cross_entropy(z, labels).item(), rel=1e-5)
    assert not model.can_generate()

    model.save_pretrained(tmp_path / "tuned")
    assert list(_tensor_names(tmp_path / "tuned")) == [os.path.join("proxy", "model.safetensors")]
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "tuned")
    assert type(again) is ProxyTunedForSequenceClassification
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, out.logits)
    with pytest.raises(ValueError, match="num_labels|label set"):
        ProxyTunedForSequenceClassification.from_models(large, saved(bert(16, 1, num_labels=4), tmp_path / "s4"))


def test_push_to_hub_by_reference(lm, tmp_path, fake_hub):
    from huggingface_hub import HfApi, ModelCard

    large, small = lm
    local = ProxyTunedForCausalLM.from_models(large, small)
    with pytest.raises(ValueError, match="not a Hub id.*Push the large model first"):
        local.push_to_hub("tester/tuned")
    large.push_to_hub("tester/large")
    small.push_to_hub("tester/small")
    hub_large = GPT2LMHeadModel.from_pretrained("tester/large")
    hub_small = GPT2LMHeadModel.from_pretrained("tester/small")
    model = ProxyTunedForCausalLM.from_models(hub_large, hub_small, perturbed(proxy_from_small(hub_small))).eval()
    model.push_to_hub("tester/tuned")

    files = set(HfApi().list_repo_files("tester/tuned"))
    assert {"config.json", "README.md", "proxy/model.safetensors", "proxy/config.json"} <= files
    assert not any(f.endswith(".safetensors") and not f.startswith("proxy/") for f in files)
    card = ModelCard.load("tester/tuned")
    assert card.data.base_model == "tester/large" and "proxy-tuning" in card.data.tags
    assert 'subfolder="proxy"' in card.text
    again = AutoModelForCausalLM.from_pretrained("tester/tuned")
    assert again.config.large_model_name_or_path == "tester/large"
    x = ids()
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, model(input_ids=x).logits)


@pytest.mark.parametrize("change", ["int64", "nan"])
def test_loading_refuses_a_proxy_with_integer_or_non_finite_weights(lm, tmp_path, change):
    """As every hf-methods model: an integer tensor stored for a floating one would be cast silently, NaN weights
    come from a diverged run; both are errors naming the tensor (NaN loads with allow_non_finite=True)."""
    from safetensors.torch import load_file, save_file

    large, small = lm
    ProxyTunedForCausalLM.from_models(large, small, perturbed(small), alpha_test=1.0).save_pretrained(tmp_path / "pt")
    path = tmp_path / "pt" / "proxy" / "model.safetensors"
    state = load_file(path)
    key = sorted(k for k in state if k.endswith("attn.c_attn.weight"))[0]
    state[key] = (state[key] > 0).long() if change == "int64" else state[key].index_fill(0, torch.tensor([0]), math.nan)
    save_file(state, path, metadata={"format": "pt"})
    message = f"stores {key} as I64" if change == "int64" else f"{key} holds NaN or inf values"
    with pytest.raises(ValueError, match=rf"^the proxy of checkpoint .*{message}"):
        ProxyTunedForCausalLM.from_pretrained(tmp_path / "pt")
    if change == "nan":
        assert ProxyTunedForCausalLM.from_pretrained(tmp_path / "pt", allow_non_finite=True).proxy is not None


def test_a_pickled_proxy_is_not_read(lm, tmp_path):
    large, small = lm
    ProxyTunedForCausalLM.from_models(large, small, perturbed(small), alpha_test=1.0).save_pretrained(tmp_path / "pt")
    proxy = tmp_path / "pt" / "proxy"
    torch.save(load_file_for(proxy), proxy / "pytorch_model.bin")
    (proxy / "model.safetensors").unlink()
    with pytest.raises(OSError, match="has no readable proxy in proxy/.*model.safetensors"):
        ProxyTunedForCausalLM.from_pretrained(tmp_path / "pt")


def load_file_for(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")
