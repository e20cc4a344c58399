"""LoRA fine-tuning of stock models through the real peft library: defaults per architecture, training with a HF
Trainer, atomic adapter folders that reload bit-for-bit, the adapter card, and the Hub round trip (loopback Hub)."""

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

peft = pytest.importorskip("peft")

from hf_methods.cards import adapter_card  # noqa: E402
from hf_methods.lora import (  # noqa: E402
    default_target_modules,
    head_modules,
    lora_model,
    push_adapter,
    save_adapter,
    trainable_parameters,
)

sys.path.insert(0, str(Path(__file__).parent / "models"))
from tiny import ARCHS, bert_config, stock_model, vit_config  # noqa: E402


def _model(arch):
    config_fn, cls, _ = ARCHS[arch]
    return getattr(T, cls)(config_fn())


def _adapted(model):
    """`model` (a classifier) LoRA-wrapped, as if trained: the LoRA B matrices and the classifier differ from their
    init (a fresh adapter is a no-op, which would let a round trip that drops its weights pass)."""
    peft_model = lora_model(model, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or ".classifier." in name:
                p.normal_(0, 0.3)
    return peft_model.eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def _assert_adapter_folder(folder: Path, base_ref: str):
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == base_ref
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


@pytest.mark.parametrize("arch", ["bert", "vit", "gpt2", "llama"])
def test_default_targets_exist_in_the_model(arch):
    model = _model(arch)
    targets = default_target_modules(model)
    names = [n for n, _ in model.named_modules()]
    assert targets
    for target in targets:
        assert any(n == target or n.endswith("." + target) for n in names), target


def test_unknown_model_type_names_the_recipe_field():
    model = _model("bert")
    model.config.model_type = "not-a-model"
    with pytest.raises(ValueError, match="lora_target_modules") as err:
        default_target_modules(model)
    assert "not-a-model" in str(err.value) and "target_modules=" in str(err.value)


def test_head_modules_are_read_from_the_model_and_skip_tied_heads():
    assert head_modules(_model("bert")) == ["classifier"]  # not the parameter-free dropout
    assert head_modules(_model("vit")) == ["classifier"]
    assert head_modules(T.LlamaForSequenceClassification(ARCHS["llama"][0]())) == ["score"]
    gpt2 = _model("gpt2")
    assert gpt2.lm_head.weight is gpt2.get_input_embeddings().weight
    assert head_modules(gpt2) == []
    assert head_modules(gpt2.transformer) == []  # a bare base model has no head


def test_bert_trains_only_lora_and_head_with_a_trainer(tmp_path):
    r = 4
    model = stock_model("bert", 2)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = lora_model(model, r=r, alpha=8, dropout=0.0)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".modules_to_save." in n for n in trainable)
    assert any("classifier.modules_to_save" in n for n in trainable)

    targeted = [m for n, m in model.named_modules() if n.endswith((".query", ".value"))]
    assert len(targeted) == 4  # 2 layers x (query, value)
    lora = sum(r * (m.in_features + m.out_features) for m in targeted)  # A: r x in, B: out x r
    head = sum(p.numel() for p in peft_model.get_base_model().classifier.original_module.parameters())
    assert trainable_parameters(peft_model)[0] == lora + head == 4 * r * 64 + 32 * 3 + 3

    rows = [
        {"input_ids": torch.randint(0, 100, (10,)), "attention_mask": torch.ones(10, dtype=torch.long), "labels": i % 3}
        for i in range(8)
    ]
    args = T.TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    T.Trainer(model=peft_model, args=args, train_dataset=rows).train()
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.detach().abs().sum() > 0 for p in lora_b)  # B starts at zero
    for key, value in peft_model.get_base_model().state_dict().items():
        if "lora_" in key or "modules_to_save" in key:
            continue
        original = key.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(value, base_before[original]), key


def test_vit_trains_with_a_trainer(tmp_path):
    peft_model = lora_model(stock_model("vit", 2), r=2, alpha=4)
    rows = [{"pixel_values": torch.randn(1, 16, 16), "labels": i % 10} for i in range(4)]
    args = T.TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, report_to="none", use_cpu=True, save_strategy="no"
    )
    T.Trainer(model=peft_model, args=args, train_dataset=rows).train()
    assert all(p.detach().abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize(
    "arch, auto", [("bert", T.AutoModelForSequenceClassification), ("vit", T.AutoModelForImageClassification)]
)
def test_saved_adapter_reloads_onto_the_saved_base(arch, auto, tmp_path):
    descendant = stock_model(arch, 2)
    descendant.save_pretrained(tmp_path / "base")
    peft_model = _adapted(descendant)
    batch = ARCHS[arch][2](4)
    expected = _logits(peft_model, batch)
    with peft_model.disable_adapter():  # the adapter changes the output (else the check below proves nothing)
        assert not torch.allclose(_logits(peft_model, batch), expected)

    adapters = tmp_path / "adapters"
    folder = save_adapter(peft_model, adapters / "lora", "tester/descendant")
    _assert_adapter_folder(folder, "tester/descendant")
    saved = load_file(folder / "adapter_model.safetensors")
    assert any("lora_B" in k for k in saved) and any("classifier" in k for k in saved)  # the trained head too
    save_adapter(peft_model, folder, "tester/descendant")  # saving over an existing adapter swaps it in
    _assert_adapter_folder(folder, "tester/descendant")

    loaded = peft.PeftModel.from_pretrained(auto.from_pretrained(tmp_path / "base"), folder).eval()
    torch.testing.assert_close(_logits(loaded, batch), expected)


def test_adapter_card_metadata_and_load_snippet():
    peft_model = _adapted(stock_model("bert", 2))
    card = adapter_card(peft_model, "tester/descendant", "tester/descendant-lora", {"accuracy": 0.9, "step": 3})
    assert card.data.library_name == "peft"
    assert card.data.base_model == "tester/descendant"
    assert {"lora", "hf-methods"} <= set(card.data.tags)
    assert 'AutoModelForSequenceClassification.from_pretrained("tester/descendant")' in card.text
    assert 'PeftModel.from_pretrained(base, "tester/descendant-lora")' in card.text
    assert "| accuracy | 0.9 |" in card.text and "`query`, `value`" in card.text and "`classifier`" in card.text
    local = adapter_card(peft_model, "/some/local/descendant", "out/lora")
    assert local.data.base_model is None and "Results" not in local.text


def test_push_adapter_and_load_it_through_the_hub(fake_hub):
    descendant = stock_model("vit", 2)
    descendant.push_to_hub("tester/descendant")
    peft_model = _adapted(descendant)
    push_adapter(peft_model, "tester/descendant-lora", "tester/descendant")
    files = fake_hub.files("tester/descendant-lora")
    assert set(files) - {".gitattributes"} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "tester/descendant"

    base = T.AutoModelForImageClassification.from_pretrained("tester/descendant")
    loaded = peft.PeftModel.from_pretrained(base, "tester/descendant-lora").eval()
    batch = ARCHS["vit"][2](3)
    torch.testing.assert_close(_logits(loaded, batch), _logits(peft_model, batch))
    assert 'PeftModel.from_pretrained(base, "tester/descendant-lora")' in files["README.md"].decode()


def test_push_a_saved_adapter_folder(fake_hub, tmp_path):
    folder = save_adapter(_adapted(stock_model("bert", 2)), tmp_path / "lora", str(tmp_path / "base"))
    push_adapter(folder, "tester/folder-lora", "tester/descendant")
    config = json.loads(fake_hub.files("tester/folder-lora")["adapter_config.json"])
    assert config["base_model_name_or_path"] == "tester/descendant"
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tmp_path / "base"
    )  # the folder on disk is not changed
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        push_adapter(tmp_path, "tester/nothing", "tester/descendant")


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(r=0), "r "),
        (dict(r=2.5), "r "),
        (dict(alpha=0), "alpha"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(target_modules=["query", "no_such_layer"]), "target_modules"),
        (dict(target_modules=[]), "target_modules"),
        (dict(target_modules=r".*\.nothing"), "target_modules"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument) as err:
        lora_model(T.BertForSequenceClassification(bert_config()), **kwargs)
    if "no_such_layer" in str(kwargs):
        assert "['no_such_layer'] match no module" in str(err.value)


def test_wrapping_twice_is_refused():
    model = lora_model(T.ViTForImageClassification(vit_config()))
    with pytest.raises(ValueError, match="already"):
        lora_model(model)
