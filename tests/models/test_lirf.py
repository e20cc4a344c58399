"""LIRF's models: the split composes back to the classifier, at init the target, deposit and original logits are equal
(brief test 1), the metrics on a hand example and the official figures, the deposit module and the recover network
save, load with the Auto classes and push with cards, withdrawal from saved parts equals the in-memory recover
network, and bad inputs are named."""

import pytest
import torch
import transformers as T
from huggingface_hub import ModelCard

from hf_methods.models.convnets import ResNet12Config, ResNet12ForImageClassification
from hf_methods.models.lirf import (
    LIRFConfig,
    LIRFDepositModule,
    LIRFModel,
    LIRFRecoverModel,
    harmonic_mean,
    lirf_metrics,
    split_model,
    split_points,
)
from hf_methods.recipe import digits_vgg

LOAD = {"trust_remote_code": False}


def vgg():
    return digits_vgg([4, 8, 8], [1, 1, 1]).eval()


def perturbed(model, seed=1):
    """`model` with every parameter and BatchNorm statistic moved a little (a trained-looking model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
                if t.dim() == 1:  # BatchNorm: keep the running variances positive
                    t.abs_()
    return model


def test_the_parts_compose_back_to_the_classifier_at_every_split_point():
    resnet = ResNet12ForImageClassification(ResNet12Config(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1],
                                                           num_labels=5)).eval()  # fmt: skip
    vit = T.ViTForImageClassification(T.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8,
                                                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                                                  num_labels=5)).eval()  # fmt: skip
    x = torch.randn(3, 1, 8, 8)
    for model in (perturbed(vgg()), resnet, vit):
        for name in split_points(model):
            lower, upper = split_model(model, name)
            torch.testing.assert_close(upper(lower(x)), model(pixel_values=x).logits)
    assert split_points(vit) == ["vit.embeddings", "vit.layers.0", "vit.layers.1"]
    with pytest.raises(ValueError, match=r"not a split point .* one of \['stages.0', 'stages.1', 'stages.2'\]"):
        split_model(vgg(), "stages.3")
    with pytest.raises(ValueError, match="split_model splits the project's VGG"):
        split_model(torch.nn.Linear(2, 2), "stages.0")


def test_at_init_target_deposit_and_original_logits_are_equal():
    model = perturbed(vgg())
    lirf = LIRFModel.from_original(model, "stages.1", [0, 1, 2]).eval()
    x = torch.randn(4, 1, 8, 8)
    out = lirf(pixel_values=x)
    z0 = model(pixel_values=x).logits
    for logits in (out.logits, out.deposit_logits, out.original_logits, out.recover_logits):
        torch.testing.assert_close(logits, z0)
    torch.testing.assert_close(lirf.recover_logits(x, "sum"), 2 * z0)
    assert [p.requires_grad for p in lirf.upper.parameters()] == [False] * len(list(lirf.upper.parameters()))
    assert not any(p.requires_grad for p in lirf.lower_original.parameters())
    assert all(p.requires_grad for p in (*lirf.lower_target.parameters(), *lirf.lower_deposit.parameters()))
    lirf.train()  # the frozen parts stay in eval mode (their BatchNorm statistics never move)
    assert lirf.lower_target.training and lirf.lower_deposit.training
    assert not lirf.upper.training and not lirf.lower_original.training


def test_the_metrics_on_a_hand_example_and_the_official_figures():
    labels = [0, 0, 1, 2, 3, 3, 3, 4]  # deposit {0, 1}: images 0-2; preserved: images 3-7
    original = [0, 0, 1, 2, 3, 3, 0, 4]  # deposit 3/3, preserved 4/5, all 7/8
    target = [2, 0, 3, 2, 3, 3, 3, 1]  # deposit 1/3, preserved 4/5
    recover = [0, 0, 1, 2, 3, 3, 3, 1]  # deposit 3/3, preserved 4/5, all 7/8
    m = lirf_metrics(labels, [1, 0], original=original, target=target, recover=recover)
    assert m["original_dep_acc"] == 1.0 and m["original_pre_acc"] == 0.8 and m["original_avg_acc"] == 7 / 8
    assert m["pre_acc"] == 0.8 and m["dep_acc"] == pytest.approx(1 / 3)
    assert m["forgetting"] == pytest.approx(2 / 3)
    assert m["h_mean"] == pytest.approx(2 * 0.8 * (2 / 3) / (0.8 + 2 / 3))
    assert m["avg_acc"] == 7 / 8 and m["recover_dep_acc"] == 1.0 and m["target_avg_acc"] == 5 / 8
    logits = torch.nn.functional.one_hot(torch.tensor(target), 5).float()  # logits give the same figures
    assert lirf_metrics(labels, [0, 1], original=original, target=logits)["h_mean"] == m["h_mean"]
    # the official README's CIFAR-10 row: Pre 93.41, Dep 94.60 -> 15.00 => F 79.60, H-mean 85.95
    assert round(100 * harmonic_mean(0.9341, 0.9460 - 0.1500), 2) == 85.95
    assert harmonic_mean(0.9, -0.1) == 0.0  # a target that forgot nothing
    with pytest.raises(ValueError, match="both deposit and preserved classes"):
        lirf_metrics([0, 1], [0, 1], original=[0, 1], target=[0, 1])


def test_deposit_module_and_recover_network_save_load_and_push_with_cards(tmp_path, fake_hub):
    lirf = LIRFModel.from_original(perturbed(vgg()), "stages.1", ["0", "1", "2"])
    with torch.no_grad():  # a deposit that moved both lower parts
        for p in (*lirf.lower_target.parameters(), *lirf.lower_deposit.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(5, 1, 8, 8)
    expected = lirf.eval().recover_logits(x)
    target, deposit = lirf.export_target(), lirf.export_deposit()
    assert type(target).__name__ == "VGGForImageClassification"
    assert not any("original" in k or "deposit" in k for k in target.state_dict())
    torch.testing.assert_close(target(pixel_values=x).logits, lirf.target_logits(x))
    target.save_pretrained(tmp_path / "target")
    deposit.save_pretrained(tmp_path / "deposit")
    loaded_deposit = T.AutoModel.from_pretrained(tmp_path / "deposit", **LOAD)
    assert type(loaded_deposit) is LIRFDepositModule and loaded_deposit.config.deposit_classes == [0, 1, 2]
    for key, value in deposit.state_dict().items():
        assert torch.equal(loaded_deposit.state_dict()[key], value), key
    loaded_target = T.AutoModelForImageClassification.from_pretrained(tmp_path / "target", **LOAD)
    recover = LIRFRecoverModel.from_parts(loaded_target, loaded_deposit)  # withdrawal from the saved parts
    torch.testing.assert_close(recover(pixel_values=x).logits, expected, rtol=0, atol=0)
    recover.save_pretrained(tmp_path / "recover")
    loaded = T.AutoModelForImageClassification.from_pretrained(tmp_path / "recover", **LOAD)
    assert type(loaded) is LIRFRecoverModel
    out = loaded(pixel_values=x, labels=torch.tensor([0, 1, 2, 3, 4]))
    assert torch.equal(out.logits, expected) and out.loss is not None
    torch.testing.assert_close(LIRFRecoverModel.from_parts(loaded_target, loaded_deposit, recover_mode="sum")(
        pixel_values=x).logits, out.target_logits + out.deposit_logits)  # fmt: skip
    lirf.save_pretrained(tmp_path / "lirf")  # the training state (holds the original): loads bit-exact, frozen
    again = T.AutoModel.from_pretrained(tmp_path / "lirf", **LOAD)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in lirf.state_dict().items())
    assert not any(p.requires_grad for p in again.upper.parameters())

    deposit.push_to_hub("tester/lirf-deposit", results={"metrics": {"Avg Acc": 0.97}, "target_ref": "tester/t"})
    card = ModelCard.load("tester/lirf-deposit")
    assert "lirf" in card.data.tags and "| Avg Acc | 0.97 |" in card.text
    assert 'from_pretrained("tester/t")' in card.text and "LIRFRecoverModel.from_parts" in card.text
    recover.push_to_hub("tester/lirf-recover")
    assert "LIRF recover network (replace)" in ModelCard.load("tester/lirf-recover").text
    target.push_to_hub("tester/lirf-target")  # a stock classifier with an LIRF card
    card = ModelCard.load("tester/lirf-target")
    assert "forget the classes ['0', '1', '2']" in card.text and card.data.pipeline_tag == "image-classification"
    pulled = T.AutoModel.from_pretrained("tester/lirf-deposit", **LOAD)
    assert torch.equal(pulled.lower_deposit.stages[0][0].conv.weight, deposit.lower_deposit.stages[0][0].conv.weight)


def test_bad_inputs_are_named():
    model = vgg()
    with pytest.raises(ValueError, match=r"class 10 is outside the label space \(num_labels=10: ids 0..9\)"):
        LIRFModel.from_original(model, "stages.1", [2, 10])
    with pytest.raises(ValueError, match="'ten' is not a label of the original model"):
        LIRFModel.from_original(model, "stages.1", ["ten"])
    with pytest.raises(ValueError, match="holds all 10 classes: nothing would be preserved"):
        LIRFModel.from_original(model, "stages.1", list(range(10)))
    with pytest.raises(ValueError, match="lists a class twice"):
        LIRFModel.from_original(model, "stages.1", [1, 1])
    with pytest.raises(ValueError, match="non-empty list of label ids"):
        LIRFModel.from_original(model, "stages.1", [])
    with pytest.raises(ValueError, match="not a split point"):
        LIRFModel.from_original(model, "classifier", [0])
    with pytest.raises(ValueError, match="recover_mode` must be one of"):
        LIRFModel.from_original(model, "stages.1", [0], recover_mode="average")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['deposit_class'\]"):
        LIRFConfig(backbone_config=model.config.to_dict(), deposit_class=[0])
    with pytest.raises(ValueError, match="outside the label space"):
        LIRFConfig(backbone_config=model.config.to_dict(), deposit_classes=[12], num_labels=10)
    lirf = LIRFModel.from_original(model, "stages.1", [0])
    deposit = lirf.export_deposit()
    other = perturbed(vgg(), seed=3)  # same architecture, another upper part
    with pytest.raises(ValueError, match="upper part is not the one this deposit module was made with"):
        LIRFRecoverModel.from_parts(other, deposit)
    LIRFRecoverModel.from_parts(other, deposit, check_upper=False)  # allowed when asked for
    with pytest.raises(ValueError, match="not the architecture the deposit module was made with"):
        LIRFRecoverModel.from_parts(digits_vgg([4, 8, 16], [1, 1, 1]), deposit)
    with pytest.raises(TypeError, match="deposit must be an LIRFDepositModule"):
        LIRFRecoverModel.from_parts(model, lirf)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 1, height, width\)"):
        lirf(pixel_values=torch.randn(2, 3, 8, 8))
