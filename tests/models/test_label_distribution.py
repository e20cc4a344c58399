"""LabelDistributionModel: a distribution from any classifier backbone (ViT, BERT, VGG), the KL loss, bit-exact
save/load through the Auto classes, push with a card, a pipeline that answers the distribution, and bad targets
named by row."""

import pytest
import torch
import transformers as T
from huggingface_hub import ModelCard

from hf_methods.models.convnets import VGGConfig
from hf_methods.models.label_distribution import LabelDistributionConfig, LabelDistributionModel
from hf_methods.trainers.ldl_losses import label_distribution_kl

VIT = T.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                  patch_size=4, num_channels=1)  # fmt: skip
BERT = T.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=16)  # fmt: skip
VGG = VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=2)
LABELS = {0: "a", 1: "b", 2: "c"}


def model(backbone=VIT):
    torch.manual_seed(0)
    config = LabelDistributionConfig(backbone_config=backbone.to_dict(), id2label=LABELS)
    return LabelDistributionModel(config).eval()


def inputs(backbone):
    if backbone is BERT:
        return {"input_ids": torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(1))}
    return {"pixel_values": torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))}


TARGET = torch.tensor([[0.2, 0.8, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("backbone", [VIT, BERT, VGG], ids=["vit", "bert", "vgg"])
def test_a_distribution_and_its_kl_loss_on_any_backbone(backbone, tmp_path):
    m = model(backbone)
    out = m(**inputs(backbone), label_distribution=TARGET)
    assert out.distribution.shape == (3, 3)
    torch.testing.assert_close(out.distribution.sum(-1), torch.ones(3))
    torch.testing.assert_close(out.loss, label_distribution_kl(out.logits, TARGET).mean())
    m.save_pretrained(tmp_path)
    loaded = T.AutoModel.from_pretrained(tmp_path, trust_remote_code=False).eval()
    assert type(loaded) is LabelDistributionModel
    for key, value in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded(**inputs(backbone)).logits, out.logits)


def test_push_with_its_card(fake_hub):
    m = model()
    m.push_to_hub("tester/ldl", results={"metrics": {"cosine": 0.93}})
    card = ModelCard.load("tester/ldl")
    assert "label-distribution-learning" in card.data.tags and "| cosine | 0.93 |" in card.text
    loaded = T.AutoModelForImageClassification.from_pretrained("tester/ldl", trust_remote_code=False)
    assert type(loaded) is LabelDistributionModel


def test_bad_targets_name_the_row():
    m = model()
    bad = TARGET.clone()
    bad[2] = torch.tensor([0.5, 0.6, 0.0])
    with pytest.raises(ValueError, match="label_distribution row 2 sums to 1.1"):
        m(**inputs(VIT), label_distribution=bad)
    with pytest.raises(ValueError, match="one distribution over the 3 labels"):
        m(**inputs(VIT), label_distribution=TARGET[:, :2])
    with pytest.raises(ValueError, match="num_labels` must be at least 2"):
        LabelDistributionConfig(backbone_config=VIT.to_dict(), num_labels=1)
