"""DPCForImageClassification: two networks with DPC's two heads, the summed prediction, any image classifier as the
network (VGG, ViT), bit-exact save/load through the Auto classes, push with a card, config errors."""

import pytest
import torch
import transformers as T
from huggingface_hub import ModelCard

from hf_methods.models.convnets import VGGConfig
from hf_methods.models.dpc import DPCForImageClassification, DPCModelConfig

VGG = VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=3)
VIT = T.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                  patch_size=4, num_channels=1)  # fmt: skip
LABELS = {0: "a", 1: "b", 2: "c"}


def model(backbone=VGG, **overrides):
    torch.manual_seed(0)
    config = DPCModelConfig(backbone_config=backbone.to_dict(), id2label=LABELS, aux_hidden_size=8, **overrides)
    return DPCForImageClassification(config).eval()


def pixels(n=3):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("backbone", [VGG, VIT], ids=["vgg", "vit"])
def test_the_prediction_is_the_sum_of_both_networks_head_1(backbone):
    m, x = model(backbone), pixels()
    out = m(pixel_values=x, labels=torch.tensor([0, 1, 2]))
    one, two = m(pixel_values=x, network=0), m(pixel_values=x, network=1)
    torch.testing.assert_close(out.logits, one.logits + two.logits)
    torch.testing.assert_close(out.aux_logits, one.aux_logits + two.aux_logits)
    assert out.logits.shape == out.aux_logits.shape == (3, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2])))
    assert not torch.equal(one.logits, two.logits)  # two independently initialized networks
    each = m(pixel_values=torch.stack([x, x.flip(0)]), per_network=True)
    torch.testing.assert_close(each.logits[0], one.logits)
    torch.testing.assert_close(each.logits[1], two.logits.flip(0))
    assert m.networks[0].backbone.config.id2label == LABELS  # the network's own head carries the labels


def test_head_2_reads_the_input_of_head_1():
    m, x = model(), pixels()
    net = m.networks[0]
    seen = []
    net.classifier.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    _, aux = net(x)
    torch.testing.assert_close(aux, net.aux_classifier(seen[0]))


@pytest.mark.parametrize("backbone", [VGG, VIT], ids=["vgg", "vit"])
def test_save_load_round_trip_is_bit_exact(tmp_path, backbone):
    m = model(backbone)
    m.save_pretrained(tmp_path)
    loaded = T.AutoModelForImageClassification.from_pretrained(tmp_path, trust_remote_code=False).eval()
    assert type(loaded) is DPCForImageClassification and loaded.config.num_networks == 2
    assert_same_weights(m, loaded)
    torch.testing.assert_close(loaded(pixel_values=pixels()).logits, m(pixel_values=pixels()).logits)


def test_single_network_is_dpc_lite():
    m = model(num_networks=1)
    assert len(m.networks) == 1
    torch.testing.assert_close(m(pixel_values=pixels()).logits, m.networks[0](pixels())[0])


def test_push_with_its_card(fake_hub):
    m = model()
    m.push_to_hub("tester/dpc", results={"metrics": {"test accuracy": 0.9}, "dataset": "digits"})
    assert {"config.json", "model.safetensors", "README.md"} <= set(fake_hub.files("tester/dpc"))
    card = ModelCard.load("tester/dpc")
    assert card.data.library_name == "hf-methods" and "dpc" in card.data.tags
    assert "| test accuracy | 0.9 |" in card.text and "Dirichlet" in card.text
    assert_same_weights(m, T.AutoModelForImageClassification.from_pretrained("tester/dpc", trust_remote_code=False))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_networks": 3}, "num_networks"),
        ({"aux_hidden_size": 0}, "aux_hidden_size"),
        ({"aux_dropout": 1.0}, "aux_dropout"),
        ({"backbone_model_type": "no_such_model"}, "backbone_model_type"),
        ({"typo_field": 1}, "typo_field"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        DPCModelConfig(backbone_config=VGG.to_dict(), id2label=LABELS, **overrides)


def test_a_network_without_the_named_classifier_is_refused():
    with pytest.raises(ValueError, match="classifier_name='head'"):
        model(classifier_name="head")


def test_per_network_inputs_need_one_batch_per_network():
    with pytest.raises(ValueError, match="num_networks=2"):
        model()(pixel_values=pixels(), per_network=True)
