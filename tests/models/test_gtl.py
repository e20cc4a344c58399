import math

import pytest
import torch
import transformers as T
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import hf_methods  # noqa: F401  (registers the Auto classes)
from hf_methods.models.gtl import (
    GTLConfig,
    GTLModel,
    conv_layers,
    match_layers,
    mutate_mask,
    sample_mask,
)
from hf_methods.models.gtl.genes import ConvLayer


def resnet(hidden=(8, 16), depths=(1, 1), labels=5, embedding=8, seed=0):
    torch.manual_seed(seed)
    config = T.ResNetConfig(
        embedding_size=embedding,
        hidden_sizes=list(hidden),
        depths=list(depths),
        num_channels=1,
        num_labels=labels,
        layer_type="basic",
    )
    return T.ResNetForImageClassification(config)


def trained(net):
    """Make every tensor distinctive (as training would), BatchNorm statistics included."""
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t).abs() + 0.1)
    return net


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- budget ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["channel", "kernel"])
@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 1.0])
def test_channel_and_kernel_masks_hold_exactly_the_budget_of_every_layer(granularity, fraction):
    layers = conv_layers(resnet())
    mask = sample_mask(layers, fraction, granularity, gen(1))
    expected = 0
    for layer in layers:
        units = layer.shape[0] if granularity == "channel" else layer.shape[0] * layer.shape[1]
        quota = max(1, math.floor(fraction * units + 0.5))
        assert int(mask.units[layer.name].sum()) == quota, layer.name
        expected += quota * math.prod(layer.shape[1:] if granularity == "channel" else layer.shape[2:])
    assert mask.num_parameters(layers) == expected
    total = sum(layer.numel for layer in layers)
    assert abs(expected / total - fraction) < 0.06  # per-layer rounding only


def test_layer_masks_never_exceed_the_budget_and_refuse_an_impossible_one():
    layers = conv_layers(resnet())
    total = sum(layer.numel for layer in layers)
    for seed in range(20):
        mask = sample_mask(layers, 0.4, "layer", gen(seed))
        used = mask.num_parameters(layers)
        assert 0 < used <= 0.4 * total
        assert mutate_mask(mask, layers, 0.5, gen(seed)).num_parameters(layers) <= 0.4 * total
    with pytest.raises(ValueError, match="smallest layer"):
        sample_mask(layers, 1e-4, "layer", gen(0))


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, True, "0.2"])
def test_budget_outside_0_1_is_a_clear_error(bad):
    layers = conv_layers(resnet())
    with pytest.raises(ValueError, match=r"gene_fraction must be in \(0, 1\]"):
        sample_mask(layers, bad, "channel", gen(0))
    with pytest.raises(ValueError, match="gene_fraction"):
        GTLConfig(gene_fraction=bad)


def test_unknown_granularity_and_unknown_config_fields_are_clear_errors():
    with pytest.raises(ValueError, match="granularity must be one of"):
        sample_mask(conv_layers(resnet()), 0.2, "neuron", gen(0))
    with pytest.raises(ValueError, match="granularity must be one of"):
        GTLConfig(granularity="neuron")
    with pytest.raises(ValueError, match="unknown field"):
        GTLConfig(gene_fractoin=0.2)


# --- mutation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["channel", "kernel"])
@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_mutation_swaps_the_expected_fraction_and_keeps_the_budget(granularity, rate):
    net = resnet(hidden=(32, 64))
    layers = conv_layers(net)
    mask = sample_mask(layers, 0.25, granularity, gen(0))
    changed = []
    for seed in range(40):
        child = mutate_mask(mask, layers, rate, gen(seed))
        for layer in layers:
            assert int(child.units[layer.name].sum()) == int(mask.units[layer.name].sum())
        changed.append(child.changed_fraction(mask))
    mean = sum(changed) / len(changed)
    assert abs(mean - rate) < 0.25 * rate, mean
    assert mutate_mask(mask, layers, 0.0, gen(0)).changed_fraction(mask) == 0
    assert mutate_mask(mask, layers, rate, gen(7)).units.keys() == mask.units.keys()
    a, b = mutate_mask(mask, layers, rate, gen(3)), mutate_mask(mask, layers, rate, gen(3))
    assert all(torch.equal(a.units[n], b.units[n]) for n in a.units)  # seeded


def test_mutation_rate_outside_0_1_is_an_error():
    layers = conv_layers(resnet())
    with pytest.raises(ValueError, match="mutation_rate"):
        mutate_mask(sample_mask(layers), layers, 1.5)


# --- taking and placing a gene ------------------------------------------------------------------------------------
def test_conv_layers_pair_each_convolution_with_its_batchnorm():
    layers = conv_layers(resnet())
    assert [layer.kernel for layer in layers] == [(7, 7), (3, 3), (3, 3), (1, 1), (3, 3), (3, 3)]
    assert all(layer.norm and layer.norm.rsplit(".", 1)[0] == layer.name.rsplit(".", 1)[0] for layer in layers)


@pytest.mark.parametrize("granularity", ["channel", "kernel", "layer"])
def test_inherit_places_gene_weights_bit_exactly_and_leaves_the_rest_freshly_initialized(granularity):
    ancestor = trained(resnet(seed=1))
    layers = conv_layers(ancestor)
    mask = sample_mask(layers, 0.3 if granularity != "layer" else 0.5, granularity, gen(2))
    gene = GTLModel.from_network(ancestor, mask)
    fresh = resnet(seed=9)
    child = gene.inherit(resnet(seed=9))
    state_a, state_f, state_c = ancestor.state_dict(), fresh.state_dict(), child.state_dict()
    for layer in layers:
        em = mask.element_mask(layer)
        w = f"{layer.name}.weight"
        assert torch.equal(state_c[w][em], state_a[w][em])
        assert torch.equal(state_c[w][~em], state_f[w][~em])
        assert torch.equal(child.inheritance_masks[w], em)
        units = mask.units[layer.name]
        if granularity == "channel":
            channels = units
        elif granularity == "layer":
            channels = units.expand(layer.shape[0])
        else:  # kernel genes carry no per-channel tensors
            channels = torch.zeros(layer.shape[0], dtype=torch.bool)
        for t in ("weight", "bias", "running_mean", "running_var"):
            key = f"{layer.norm}.{t}"
            assert torch.equal(state_c[key][channels], state_a[key][channels])
            assert torch.equal(state_c[key][~channels], state_f[key][~channels])
    for key in ("classifier.1.weight", "classifier.1.bias"):
        assert torch.equal(state_c[key], state_f[key])  # the head is never in a gene
    report = child.expansion_report
    assert report.num_parameters("learngene") >= gene.num_gene_parameters
    head = next(r for r in report.rows if r.name == "classifier.1.weight")
    assert head.source == "new" and "never in a gene" in head.detail
    assert gene.num_gene_parameters == mask.num_parameters(layers)


def test_match_layers_spreads_a_gene_over_a_deeper_target_and_subsamples_for_a_shallower_one():
    def stack(n, kernel=3, prefix="c"):
        return [ConvLayer(f"{prefix}{i}", (4, 4, kernel, kernel)) for i in range(n)]

    assert match_layers(stack(4), stack(4)) == {f"c{i}": f"c{i}" for i in range(4)}
    assert match_layers(stack(3), stack(5)) == {"c0": "c0", "c2": "c1", "c4": "c2"}
    assert match_layers(stack(5), stack(3)) == {"c0": "c0", "c1": "c2", "c2": "c4"}
    assert match_layers(stack(2), stack(1)) == {"c0": "c0"}
    # kernel sizes are matched separately: 1x1 shortcuts go to 1x1 shortcuts only
    src = stack(2) + stack(1, 1, "s")
    tgt = stack(4) + stack(2, 1, "s")
    assert match_layers(src, tgt) == {"c0": "c0", "c3": "c1", "s0": "s0"}


def test_a_saved_and_loaded_gene_inherited_into_a_wider_deeper_descendant_keeps_its_weights(tmp_path):
    ancestor = trained(resnet(seed=1))
    layers = conv_layers(ancestor)
    mask = sample_mask(layers, 0.2, "channel", gen(4))
    GTLModel.from_network(ancestor, mask, lineage=[{"id": "g0-i1", "generation": 0, "fitness": 0.5}]).save_pretrained(
        tmp_path
    )
    assert (tmp_path / "hf_methods_learngene.py").exists()
    gene = T.AutoModel.from_pretrained(tmp_path)
    assert type(gene) is GTLModel and gene.config.lineage[0]["id"] == "g0-i1"
    wide = gene.expand(hidden_sizes=[16, 32], depths=[2, 2], embedding_size=16, num_labels=3)
    assert wide.config.num_labels == 3 and wide.classifier[1].out_features == 3
    placement = match_layers(layers, conv_layers(wide))
    by_name = {layer.name: layer for layer in layers}
    kept = 0
    for target_name, source_name in placement.items():
        src = by_name[source_name]
        channels = mask.units[source_name].nonzero().flatten()
        w_src = ancestor.get_submodule(source_name).weight[channels]
        w_dst = wide.get_submodule(target_name).weight[channels, : src.shape[1]]
        assert torch.equal(w_dst, w_src)
        kept += w_src.numel()
    assert kept == gene.num_gene_parameters  # every gene weight made it into the wider network
    assert "units beyond" not in " ".join(wide.expansion_report.unused)
    assert wide.config.learngene_ancestry["method"] == "GTL"


def test_a_narrower_descendant_drops_and_reports_the_units_it_has_no_room_for():
    ancestor = trained(resnet(hidden=(16, 32), embedding=16, seed=1))
    gene = GTLModel.from_network(ancestor, sample_mask(conv_layers(ancestor), 0.5, "channel", gen(0)))
    narrow = gene.expand(hidden_sizes=[8, 16], embedding_size=8)
    assert any("units beyond the target's width" in u for u in narrow.expansion_report.unused)


def test_a_transformers_resnet_target_from_a_config():
    ancestor = trained(resnet(seed=1))
    gene = GTLModel.from_network(ancestor, sample_mask(conv_layers(ancestor), 0.2, "channel", gen(0)))
    target = T.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1], num_channels=1, num_labels=4, layer_type="basic"
    )
    model = gene.expand(target)
    assert type(model) is T.ResNetForImageClassification
    out = model(pixel_values=torch.randn(2, 1, 16, 16)).logits
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="not both"):
        gene.expand(target, num_labels=3)


def test_loading_a_tampered_gene_is_an_error(tmp_path):
    ancestor = trained(resnet(seed=1))
    gene = GTLModel.from_network(ancestor, sample_mask(conv_layers(ancestor), 0.2, "channel", gen(0)))
    gene.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = next(k for k in state if k.endswith(".units"))
    state[key] = torch.zeros_like(state[key])  # a mask that no longer matches the stored weights
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="mask holds 0 units"):
        GTLModel.from_pretrained(tmp_path)


def test_gene_has_no_forward_and_counts_its_budget():
    ancestor = trained(resnet(seed=1))
    layers = conv_layers(ancestor)
    gene = GTLModel.from_network(ancestor, sample_mask(layers, 0.2, "channel", gen(0)))
    with pytest.raises(TypeError, match="no forward"):
        gene(torch.zeros(1))
    assert gene.stored_fraction == pytest.approx(gene.num_gene_parameters / sum(la.numel for la in layers))
    assert gene.learngene_num_parameters() > gene.num_gene_parameters  # + BatchNorm tensors of the channels
    assert gene.descendant_num_parameters(num_labels=5) == sum(p.numel() for p in ancestor.parameters())


def test_gene_and_descendant_push_with_their_cards(fake_hub):
    ancestor = trained(resnet(seed=1))
    lineage = [{"id": "g0-i3", "generation": 0, "fitness": 0.41}, {"id": "g1-i0", "generation": 1, "fitness": 0.62}]
    gene = GTLModel.from_network(ancestor, sample_mask(conv_layers(ancestor), 0.2, "channel", gen(0)), lineage=lineage)
    gene.push_to_hub("tester/gtl-gene")
    assert {"config.json", "model.safetensors", "README.md", "hf_methods_learngene.py"} <= set(
        fake_hub.files("tester/gtl-gene")
    )
    card = ModelCard.load("tester/gtl-gene")
    assert card.data.library_name == "hf-methods" and "gtl" in card.data.tags
    assert "| g1-i0 | 1 | 0.620 |" in card.text and "pip install hf-methods" in card.text
    loaded = T.AutoModel.from_pretrained("tester/gtl-gene")
    for key, value in gene.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    child = loaded.expand(num_labels=3)
    child.push_to_hub("tester/gtl-child")
    assert "GTL" in ModelCard.load("tester/gtl-child").text
    assert type(T.AutoModelForImageClassification.from_pretrained("tester/gtl-child")) is T.ResNetForImageClassification


@pytest.mark.parametrize("backbone", ["vgg", "resnet12"])
def test_hf_methods_backbones_expand_deeper_and_wider_keeping_every_gene_weight(backbone, tmp_path):
    from hf_methods import (
        ResNet12Config,
        ResNet12ForImageClassification,
        VGGConfig,
        VGGForImageClassification,
    )

    config_cls, model_cls = {
        "vgg": (VGGConfig, VGGForImageClassification),
        "resnet12": (ResNet12Config, ResNet12ForImageClassification),
    }[backbone]
    torch.manual_seed(0)
    ancestor = trained(model_cls(config_cls(num_channels=1, hidden_sizes=[8, 16, 16], depths=[1, 1, 1], num_labels=5)))
    layers = conv_layers(ancestor)
    gene = GTLModel.from_network(ancestor, sample_mask(layers, 0.2, "channel", gen(1)))
    gene.save_pretrained(tmp_path)
    gene = T.AutoModel.from_pretrained(tmp_path)
    child = gene.expand(hidden_sizes=[16, 32, 32], depths=[2, 2, 2], num_labels=3)
    assert type(child) is model_cls and child.config.depths == [2, 2, 2]
    kept = sum(
        r.inherited or 0
        for r in child.expansion_report.rows
        if r.name.endswith("conv.weight") or r.name.endswith(("conv1.weight", "conv2.weight", "conv3.weight"))
    )
    assert kept == gene.num_gene_parameters
    out = child(pixel_values=torch.randn(2, 1, 16, 16)).logits
    assert out.shape == (2, 3) and torch.isfinite(out).all()
