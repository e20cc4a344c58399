"""VGG and ResNet-12 as transformers models: shapes, layout, parameter counts, init,
save/load, Auto classes, config validation and the Trainer."""

import math
import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import ImageClassifierOutput

from hf_methods.models.convnets import (
    ResNet12Config,
    ResNet12ForImageClassification,
    VGGConfig,
    VGGForImageClassification,
)

for _config, _model in [
    (VGGConfig, VGGForImageClassification),
    (ResNet12Config, ResNet12ForImageClassification),
]:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)


def tiny_vgg(num_channels=3, **kwargs):
    kwargs = {
        "hidden_sizes": [4, 8, 8, 8, 8],
        "depths": [1, 1, 2, 1, 1],
        "num_labels": 5,
        **kwargs,
    }
    return VGGForImageClassification(VGGConfig(num_channels=num_channels, **kwargs))


def tiny_resnet12(num_channels=3, **kwargs):
    kwargs = {
        "hidden_sizes": [4, 8, 8, 16],
        "depths": [1, 1, 1, 1],
        "num_labels": 5,
        **kwargs,
    }
    return ResNet12ForImageClassification(ResNet12Config(num_channels=num_channels, **kwargs))


MODELS = {"vgg": tiny_vgg, "resnet12": tiny_resnet12}


def _shrink(size, stages):
    for _ in range(stages):
        size = math.ceil(size / 2)
    return size


def _bn_stats_moved(model, steps=3, channels=3):
    """Train-mode forwards so the BatchNorm running stats are not their init."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(pixel_values=torch.randn(4, channels, 16, 16) * 2 + 1)
    model.eval()
    return model


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32])
def test_output_shapes(kind, channels, size):
    model = MODELS[kind](num_channels=channels).eval()
    labels = torch.tensor([0, 4])
    out = model(
        pixel_values=torch.randn(2, channels, size, size),
        labels=labels,
        output_hidden_states=True,
    )
    assert isinstance(out, ImageClassifierOutput)
    assert out.logits.shape == (2, 5)
    assert out.loss.ndim == 0
    assert torch.isfinite(out.loss)
    widths = model.config.hidden_sizes
    assert len(out.hidden_states) == len(widths)
    for stage, (state, width) in enumerate(zip(out.hidden_states, widths), start=1):
        side = _shrink(size, stage)
        assert state.shape == (2, width, side, side)
    # the head pools the last stage output
    pooled = out.hidden_states[-1].mean((2, 3))
    torch.testing.assert_close(model.classifier(pooled), out.logits)
    # default: no hidden states; return_dict=False gives a tuple
    assert model(pixel_values=torch.randn(2, channels, size, size)).hidden_states is None
    loss, logits = model(
        pixel_values=torch.randn(2, channels, size, size),
        labels=labels,
        return_dict=False,
    )
    assert logits.shape == (2, 5)
    assert loss.ndim == 0


@pytest.mark.parametrize("kind", MODELS)
def test_wrong_channels_raise(kind):
    model = MODELS[kind](num_channels=1)
    with pytest.raises(ValueError, match="num_channels=1"):
        model(pixel_values=torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=torch.randn(1, 16, 16))


def _conv_norm_pairs(model):
    modules = list(model.named_modules())
    pairs = []
    for i, (name, module) in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            next_name, nxt = modules[i + 1]
            assert isinstance(nxt, nn.BatchNorm2d), f"{name} is followed by {next_name}"
            assert nxt.num_features == module.out_channels
            pairs.append((name, next_name))
    return pairs


def test_vgg_conv_then_norm_in_module_order():
    model = tiny_vgg()
    pairs = _conv_norm_pairs(model)
    assert len(pairs) == sum(model.config.depths) == 6
    assert pairs[0] == ("stages.0.0.conv", "stages.0.0.norm")
    assert pairs[3] == ("stages.2.1.conv", "stages.2.1.norm")
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))

    plain = tiny_vgg(batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    assert all(c.bias is not None for c in convs)
    assert isinstance(plain.stages[0][0].norm, nn.Identity)


def test_resnet12_conv_then_norm_in_module_order():
    model = tiny_resnet12(depths=[2, 1, 1, 1], hidden_sizes=[4, 8, 8, 16])
    pairs = _conv_norm_pairs(model)
    block = [
        (f"stages.0.0.{c}", f"stages.0.0.{n}")
        for c, n in [
            ("conv1", "norm1"),
            ("conv2", "norm2"),
            ("conv3", "norm3"),
            ("shortcut.conv", "shortcut.norm"),
        ]
    ]
    assert pairs[:4] == block
    # second block of stage 0 keeps the width: identity shortcut, three convs only
    assert [p[0] for p in pairs[4:7]] == [f"stages.0.1.conv{i}" for i in (1, 2, 3)]
    assert isinstance(model.stages[0][1].shortcut, nn.Identity)
    # stage 2 keeps width 8 -> identity shortcut; the others project
    assert isinstance(model.stages[2][0].shortcut, nn.Identity)
    assert isinstance(model.stages[3][0].shortcut.conv, nn.Conv2d)
    assert len(pairs) == 5 * 3 + 3  # 5 blocks x 3 convs + 3 projection shortcuts
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def _count(model, skip_classifier=False):
    return sum(p.numel() for n, p in model.named_parameters() if not (skip_classifier and n.startswith("classifier.")))


def test_parameter_counts_small_configs_by_hand():
    # VGG: 3 -> 4 (1 conv), 4 -> 8 -> 8 (2 convs), 5 labels
    config = {"hidden_sizes": [4, 8], "depths": [1, 2], "num_labels": 5}
    with_bn = VGGForImageClassification(VGGConfig(**config))
    head = 8 * 5 + 5
    convs = 3 * 4 * 9 + 4 * 8 * 9 + 8 * 8 * 9
    assert _count(with_bn) == convs + 2 * (4 + 8 + 8) + head  # no conv bias; BN w+b
    plain = VGGForImageClassification(VGGConfig(batch_norm=False, **config))
    assert _count(plain) == convs + (4 + 8 + 8) + head  # conv biases only

    # ResNet-12 block 3 -> 4 (projection) and 4 -> 4 (identity), 5 labels
    config = {"hidden_sizes": [4, 4], "depths": [1, 1], "num_labels": 5}
    model = ResNet12ForImageClassification(ResNet12Config(**config))
    first = 3 * 4 * 9 + 2 * 4 * 4 * 9 + 3 * 2 * 4 + (3 * 4 + 2 * 4)
    second = 3 * 4 * 4 * 9 + 3 * 2 * 4
    assert _count(model) == first + second + 4 * 5 + 5


def test_parameter_counts_default_architectures():
    # torchvision's vgg11 `features` have 9,220,480 parameters (conv weights+biases);
    # our head is GAP + Linear(512, 1000) = 513,000 instead of the 4096-wide FCs.
    plain = VGGForImageClassification(VGGConfig(batch_norm=False, num_labels=1000))
    assert _count(plain, skip_classifier=True) == 9_220_480
    assert _count(plain) == 9_220_480 + 513_000
    bn = VGGForImageClassification(VGGConfig(num_labels=1000))
    biases = 64 + 128 + 2 * 256 + 4 * 512
    assert _count(bn, skip_classifier=True) == 9_220_480 - biases + 2 * biases
    del plain, bn
    # the few-shot ResNet-12 (64-160-320-640) backbone: 12.4M parameters
    resnet = ResNet12ForImageClassification(ResNet12Config(num_labels=64))
    assert _count(resnet, skip_classifier=True) == 12_424_320
    assert _count(resnet) == 12_424_320 + 640 * 64 + 64


@pytest.mark.parametrize("kind", MODELS)
def test_init_is_seeded_and_as_documented(kind):
    torch.manual_seed(1)
    a = MODELS[kind]().state_dict()
    torch.manual_seed(1)
    b = MODELS[kind]().state_dict()
    torch.manual_seed(2)
    c = MODELS[kind]().state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])
    conv_key = next(k for k in a if k.endswith(("conv.weight", "conv1.weight")))
    assert not torch.equal(a[conv_key], c[conv_key])

    # the documented init on a wider model, where statistics are meaningful
    torch.manual_seed(0)
    model = MODELS[kind](hidden_sizes=[64] * 4, depths=[1] * 4, num_labels=400)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            expected = math.sqrt(2 / (module.out_channels * 9))  # fan_out, ReLU gain
            assert module.weight.std().item() == pytest.approx(expected, rel=0.1), name
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.equal(model.classifier.bias, torch.zeros(400))


@pytest.mark.parametrize("kind", MODELS)
def test_save_load_is_exact_including_batchnorm_buffers(kind, tmp_path):
    model = _bn_stats_moved(MODELS[kind]())
    state = model.state_dict()
    norm = "norm1" if kind == "resnet12" else "norm"
    assert int(state[f"stages.0.0.{norm}.num_batches_tracked"]) == 3
    model.save_pretrained(tmp_path)
    saved = load_file(os.path.join(tmp_path, "model.safetensors"))
    assert saved.keys() == state.keys()  # running stats and counters are in the file

    cls = type(model)
    reloaded = cls.from_pretrained(tmp_path).eval()
    again = reloaded.state_dict()
    assert again.keys() == state.keys()
    for key, value in state.items():
        assert again[key].dtype == value.dtype, key
        assert torch.equal(again[key], value), key
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, reloaded(pixel_values=x).logits)
    skip = {"_name_or_path", "transformers_version"}
    saved_config = {k: v for k, v in model.config.to_dict().items() if k not in skip}
    loaded_config = {k: v for k, v in reloaded.config.to_dict().items() if k not in skip}
    assert loaded_config == saved_config


@pytest.mark.parametrize("kind", MODELS)
def test_auto_classes_round_trip(kind, tmp_path):
    model = _bn_stats_moved(MODELS[kind]())
    model.config.id2label = {i: f"class_{i}" for i in range(5)}
    model.config.label2id = {f"class_{i}": i for i in range(5)}
    model.save_pretrained(tmp_path)

    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is type(model.config)
    assert config.hidden_sizes == model.config.hidden_sizes
    assert config.depths == model.config.depths
    assert config.id2label[4] == "class_4"

    for auto in (AutoModelForImageClassification, AutoModel):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert type(loaded) is type(model)
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(model(pixel_values=x).logits, loaded(pixel_values=x).logits)

    fresh = AutoModelForImageClassification.from_config(config)
    assert type(fresh) is type(model)


@pytest.mark.parametrize(
    ("config_cls", "kwargs", "field"),
    [
        (VGGConfig, {"hidden_sizes": [4, 8], "depths": [1]}, "depths"),
        (ResNet12Config, {"hidden_sizes": [4, 8, 16], "depths": [1, 1]}, "depths"),
        (VGGConfig, {"hidden_sizes": [4, 0], "depths": [1, 1]}, "hidden_sizes"),
        (ResNet12Config, {"hidden_sizes": [4, -8], "depths": [1, 1]}, "hidden_sizes"),
        (ResNet12Config, {"hidden_sizes": [4, 8], "depths": [1, 0]}, "depths"),
        (VGGConfig, {"hidden_sizes": []}, "hidden_sizes"),
        (VGGConfig, {"hidden_sizes": [4, 8.0], "depths": [1, 1]}, "hidden_sizes"),
        (VGGConfig, {"num_channels": 0}, "num_channels"),
        (VGGConfig, {"classifier_dropout": 1.0}, "classifier_dropout"),
        (VGGConfig, {"batch_norm": "yes"}, "batch_norm"),
        (ResNet12Config, {"leaky_relu_slope": -0.1}, "leaky_relu_slope"),
        (ResNet12Config, {"num_labels": 1}, "num_labels"),
        (VGGConfig, {"problem_type": "multi_label_classification"}, "problem_type"),
        (VGGConfig, {"hidden_size": 64}, "unknown field"),
    ],
)
def test_bad_configs_raise_naming_the_field(config_cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        config_cls(**kwargs)


def test_mismatched_lengths_message_names_both_fields():
    with pytest.raises(ValueError, match="`hidden_sizes` has 2 entries but `depths` has 5"):
        VGGConfig(hidden_sizes=[4, 8])


@pytest.mark.parametrize("kind", MODELS)
def test_trainer_runs_and_reload_matches(kind, tmp_path):
    torch.manual_seed(0)
    model = MODELS[kind]()
    data = [{"pixel_values": torch.randn(3, 16, 16), "labels": torch.tensor(i % 5)} for i in range(12)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=args, train_dataset=data)
    result = trainer.train()
    assert result.global_step == 3
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3
    assert all(math.isfinite(v) for v in losses)
    after = model.state_dict()
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    bn_mean = next(k for k in after if k.endswith("running_mean"))
    assert not torch.equal(before[bn_mean], after[bn_mean])

    trainer.save_model(str(tmp_path / "final"))
    reloaded = type(model).from_pretrained(tmp_path / "final").eval()
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, reloaded(pixel_values=x).logits)


@pytest.mark.parametrize(
    ("kind", "kwargs", "num_convs"),
    [
        (
            "resnet12",
            {"depths": [2, 2, 2, 2], "hidden_sizes": [8, 16, 32, 64]},
            8 * 3 + 4,
        ),
        (
            "resnet12",
            {"depths": [1, 1, 1, 1], "hidden_sizes": [32, 64, 96, 128]},
            4 * 3 + 4,
        ),
        (
            "vgg",
            {"depths": [2, 2, 3, 3, 3], "hidden_sizes": [8, 16, 32, 64, 64]},
            13,
        ),  # VGG-16
        (
            "vgg",
            {"depths": [2, 2, 4, 4, 4], "hidden_sizes": [16, 32, 64, 96, 96]},
            16,
        ),  # VGG-19
        ("vgg", {"depths": [3], "hidden_sizes": [128]}, 3),
    ],
)
def test_deeper_and_wider_configs_build(kind, kwargs, num_convs):
    model = MODELS[kind](**kwargs).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == num_convs
    assert len(_conv_norm_pairs(model)) == num_convs
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, 32, 32), output_hidden_states=True)
    assert out.logits.shape == (2, 5)
    assert out.hidden_states[-1].shape[1] == kwargs["hidden_sizes"][-1]


@pytest.mark.parametrize("kind", MODELS)
def test_new_head_on_loaded_body(kind, tmp_path):
    """Transfer to a new label space: the body loads exactly, the head is re-drawn
    by `_init_weights` (zero bias)."""
    model = _bn_stats_moved(MODELS[kind]())
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, num_labels=7, ignore_mismatched_sizes=True)
    assert loaded.classifier.weight.shape == (7, model.config.hidden_sizes[-1])
    assert torch.equal(loaded.classifier.bias, torch.zeros(7))
    state = model.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(value, state[key]), key
