"""LabelQueryForMultiLabelClassification: outputs, loss, ViT / BERT / CNN backbones, bit-exact save/load, config
errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import BertConfig, ResNetConfig, ViTConfig

from hf_methods.models.label_query import (
    LabelQueryConfig,
    LabelQueryForMultiLabelClassification,
    MultiLabelOutput,
)

VIT = ViTConfig(
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    image_size=8,
    patch_size=4,
    num_channels=1,
)
BERT = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny ops: on a shared 2-core machine two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


HEAD = {"num_labels": 5, "d_model": 8, "num_attention_heads": 2, "dim_feedforward": 16}


def model(backbone=VIT, **overrides):
    torch.manual_seed(0)
    return LabelQueryForMultiLabelClassification(
        LabelQueryConfig(backbone_config=backbone.to_dict(), **{**HEAD, **overrides})
    )


def pixels(n=3):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_outputs_and_bce_loss():
    m = model().eval()
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.float)
    out = m(pixel_values=pixels(), labels=labels)
    assert isinstance(out, MultiLabelOutput)
    assert out.logits.shape == (3, 5) and out.label_embeddings.shape == (3, 5, 8)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))  # mean by default
    summed = model(loss_reduction="sum").eval()(pixel_values=pixels(), labels=labels)
    torch.testing.assert_close(summed.loss, F.binary_cross_entropy_with_logits(summed.logits, labels, reduction="sum"))
    assert m(pixel_values=pixels()).loss is None
    # the logit of class c is the group FC of its label embedding
    head = m.head
    torch.testing.assert_close(
        out.logits, torch.einsum("ncd,cd->nc", out.label_embeddings, head.class_weight) + head.class_bias
    )
    with pytest.raises(ValueError, match="multi-hot labels of shape"):
        m(pixel_values=pixels(), labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="needs pixel_values, input_ids or inputs_embeds"):
        m()
    assert m.config.problem_type == "multi_label_classification" and m.label_embedding_dim == 8


def test_fixed_queries_are_a_saved_buffer_and_learnable_ones_a_parameter():
    fixed = model()
    assert "head.query_embed" in dict(fixed.named_buffers())
    assert "head.query_embed" not in dict(fixed.named_parameters())
    assert fixed.head.query_embed.std() > 0.5  # N(0, 1): well spread, not 0.02
    learnable = model(learnable_queries=True)
    assert dict(learnable.named_parameters())["head.query_embed"].requires_grad
    learnable(pixel_values=pixels(), labels=torch.ones(3, 5)).loss.backward()
    assert learnable.head.query_embed.grad is not None
    assert model(backbone=VIT).backbone.pooler is None  # the head reads tokens; no unused pooler


@pytest.mark.parametrize("learnable", [False, True])
def test_vit_save_load_round_trip_is_bit_exact(tmp_path, learnable):
    m = model(learnable_queries=learnable)
    with torch.no_grad():  # move every weight off its init, so a re-initialized tensor would show
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    m.eval()
    m.save_pretrained(tmp_path)
    loaded = LabelQueryForMultiLabelClassification.from_pretrained(tmp_path).eval()
    assert_same_weights(m, loaded)
    out, again = m(pixel_values=pixels()), loaded(pixel_values=pixels())
    assert torch.equal(out.logits, again.logits) and torch.equal(out.label_embeddings, again.label_embeddings)
    assert loaded.head.query_embed.requires_grad == learnable
    assert loaded.config.backbone_config == m.config.backbone_config
    for name in (
        "backbone_model_type",
        "d_model",
        "num_attention_heads",
        "dim_feedforward",
        "learnable_queries",
        "num_labels",
        "loss_reduction",
    ):
        assert getattr(loaded.config, name) == getattr(m.config, name), name
    # the head's tensors keep their own names on disk; the backbone's are stock ViT checkpoint names
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    assert {k for k in keys if k.startswith("head.")} == {k for k in m.state_dict() if k.startswith("head.")}
    assert "backbone.encoder.layer.0.attention.attention.query.weight" in keys
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "hf_methods_label_query" and config["backbone_model_type"] == "vit"


def test_bert_backbone_masks_padding_and_round_trips(tmp_path):
    m = model(backbone=BERT, learnable_queries=True).eval()
    assert m.main_input_name == "input_ids"
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    out = m(input_ids=ids, attention_mask=mask, labels=torch.ones(2, 5))
    assert out.logits.shape == (2, 5) and out.label_embeddings.shape == (2, 5, 8) and out.loss > 0
    # what sits on the padded positions cannot change the prediction
    other = ids.clone()
    other[1, 4:] = (other[1, 4:] + 7) % 50
    torch.testing.assert_close(m(input_ids=other, attention_mask=mask).logits, out.logits)
    m.save_pretrained(tmp_path)
    loaded = LabelQueryForMultiLabelClassification.from_pretrained(tmp_path).eval()
    assert_same_weights(m, loaded)
    assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits, out.logits)
    assert loaded.get_input_embeddings() is loaded.backbone.embeddings.word_embeddings


def test_activation_checkpointing_reaches_the_backbone():
    m = model(backbone=ViTConfig(**{**VIT.to_dict(), "num_hidden_layers": 2})).train()
    m.activation_checkpointing_enable()
    assert m.backbone.is_activation_checkpointing
    m(pixel_values=pixels(), labels=torch.ones(3, 5)).loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_cnn_backbone_feature_map_becomes_tokens():
    resnet = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic")
    m = model(backbone=resnet).eval()
    out = m(pixel_values=torch.randn(2, 1, 32, 32))
    assert out.logits.shape == (2, 5) and m.head.input_proj.in_features == 12


def test_config_accepts_a_config_object_and_fills_the_model_type():
    config = LabelQueryConfig(backbone_config=VIT, **HEAD)
    assert config.backbone_model_type == "vit" and isinstance(config.backbone_config, dict)
    assert config.token_feature_size == 16
    assert LabelQueryConfig(backbone_config=VIT.to_dict(), backbone_hidden_size=32, **HEAD).token_feature_size == 32
    no_type = {k: v for k, v in BERT.to_dict().items() if k != "model_type"}
    assert (
        LabelQueryConfig(backbone_config=no_type, backbone_model_type="bert", **HEAD).backbone_config["vocab_size"]
        == 50
    )
    with pytest.raises(ValueError, match="backbone_config is empty"):
        LabelQueryForMultiLabelClassification(LabelQueryConfig(**HEAD))


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"d_model": 0}, "d_model"),
        ({"num_decoder_layers": 1.5}, "num_decoder_layers"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"dim_feedforward": -4}, "dim_feedforward"),
        ({"decoder_dropout": 1.0}, "decoder_dropout"),
        ({"learnable_queries": "yes"}, "learnable_queries"),
        ({"loss_reduction": "avg"}, "loss_reduction"),
        ({"backbone_model_type": "not_a_model"}, "backbone_model_type"),
        ({"backbone_model_type": "bert"}, "backbone_model_type"),  # disagrees with the dict's 'vit'
        ({"backbone_hidden_size": 0}, "backbone_hidden_size"),
        ({"problem_type": "single_label_classification"}, "problem_type"),
        ({"d_modle": 8}, "d_modle"),  # a typo is an unknown field, not a silent attribute
    ],
)
def test_bad_config_values_raise_errors_naming_the_field(overrides, field):
    with pytest.raises((ValueError, TypeError), match=field):
        LabelQueryConfig(backbone_config=VIT.to_dict(), **{**HEAD, **overrides})


def test_missing_backbone_model_type_is_explained():
    no_type = {k: v for k, v in VIT.to_dict().items() if k != "model_type"}
    with pytest.raises(ValueError, match="backbone_model_type"):
        LabelQueryConfig(backbone_config=no_type, **HEAD)
    with pytest.raises(TypeError, match="backbone_config"):
        LabelQueryConfig(backbone_config="vit", **HEAD)
