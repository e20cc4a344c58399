"""DeRy: linear CKA's invariances, the zoo partition's cover and bounds, NASWOT on dead units, and reassembled models
sliced out of tiny CNN / ViT sources (forward, budget, save -> load without the sources, push with a card, frozen
blocks, clear errors)."""

import shutil

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from hf_methods.models.convnets import (
    ResNet12Config,
    ResNet12ForImageClassification,
    VGGConfig,
    VGGForImageClassification,
)
from hf_methods.models.dery import (
    Block,
    BlockSimilarity,
    DeRyConfig,
    DeRyForImageClassification,
    DeRyModel,
    block_nodes,
    collect_node_features,
    linear_cka,
    lr_similarity,
    naswot_score,
    partition_zoo,
    rbf_cka,
    reassembly_num_parameters,
    search_reassembly,
    similarity_matrix,
    zoo_similarities,
)
from hf_methods.models.dery.partition import size_bounds


def tiny_vgg():
    return VGGForImageClassification(VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 2], num_labels=3))


def tiny_vit(layers=3):
    config = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=8, num_hidden_layers=layers,
                       num_attention_heads=2, intermediate_size=16, num_labels=3)  # fmt: skip
    return ViTForImageClassification(config)


def tiny_resnet():
    return ResNet12ForImageClassification(ResNet12Config(num_channels=1, hidden_sizes=[4, 4, 8], depths=[1, 1, 1]))


@pytest.fixture
def sources(tmp_path):
    """Two tiny source models saved as local folders: {name: folder}."""
    folders = {"vgg": tmp_path / "vgg", "vit": tmp_path / "vit"}
    tiny_vgg().save_pretrained(folders["vgg"])
    tiny_vit().save_pretrained(folders["vit"])
    return {k: str(v) for k, v in folders.items()}


def hybrid_blocks(sources):
    return [
        {"source": sources["vgg"], "start": "stages.0.0", "end": "stages.1.0", "type": "cnn"},
        {"source": sources["vit"], "start": "layers.1", "end": "layers.2", "type": "vit"},
    ]


# --- similarity -------------------------------------------------------------------------------------------------------
def test_linear_cka_is_one_on_identical_features_and_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0)
    assert rbf_cka(x, x @ q) == pytest.approx(1.0)  # distances kept, so the RBF kernel is too
    for _ in range(5):
        value = linear_cka(x, torch.randn(64, 7, generator=g))
        assert 0.0 <= value <= 1.0
    big_x, big_y = torch.randn(1000, 3, generator=g), torch.randn(1000, 3, generator=g)
    assert linear_cka(big_x, big_y) < 0.02  # independent features: ~0 for many examples
    assert lr_similarity(x, x) == pytest.approx(1.0) and 0.0 <= lr_similarity(x, x[:, :3]) <= 1.0
    matrix = similarity_matrix({"a": x, "b": x[:, :4]}, {"c": x @ q})
    torch.testing.assert_close(matrix[:, 0], torch.tensor([1.0, linear_cka(x[:, :4], x)], dtype=torch.float64))
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:10])


def test_node_features_are_collected_from_the_live_models_nodes():
    vit, vgg = tiny_vit(), tiny_vgg()
    assert block_nodes(vit) == ["layers.0", "layers.1", "layers.2"]  # transformers 5.x: vit.layers.<i>
    assert block_nodes(vgg) == ["stages.0.0", "stages.1.0", "stages.1.1"]
    x = torch.randn(12, 1, 8, 8)
    features = collect_node_features(vit, x, batch_size=5)
    assert list(features) == block_nodes(vit) and features["layers.0"].shape == (12, 17 * 8)  # 16 patches + CLS
    assert collect_node_features(vgg, x, ["stages.1.1"])["stages.1.1"].shape == (12, 8 * 4 * 4)
    assert collect_node_features(vit, x, ["vit.layers.2"], max_samples=7)["vit.layers.2"].shape[0] == 7
    with pytest.raises(ValueError, match="no module 'layers.9'.*block nodes are"):
        collect_node_features(vit, x, ["layers.9"])


# --- partition --------------------------------------------------------------------------------------------------------
def random_similarities(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {(a, b): torch.rand(counts[a], counts[b], generator=g, dtype=torch.float64) for a in counts for b in counts}


@pytest.mark.parametrize("across", [False, True])
def test_partition_covers_every_model_with_k_contiguous_blocks_within_bounds(across):
    counts = {"a": 5, "b": 7, "c": 9}
    sims = random_similarities(counts)
    partition = partition_zoo(sims, counts, 3, eps=0.2, trials=15, compare_across_positions=across)
    for model, n in counts.items():
        blocks = partition.blocks[model]
        low, high = size_bounds(n, 3, 0.2)
        assert [b.index for b in blocks] == [0, 1, 2]
        assert blocks[0].start == 0 and blocks[-1].end == n - 1
        assert all(b.start == a.end + 1 for a, b in zip(blocks, blocks[1:]))  # contiguous, no overlap
        assert all(low <= len(b) <= high for b in blocks)
        assert all(0 <= partition.group(b) < 3 for b in blocks)
    history = partition.history
    assert all(b >= a for a, b in zip(history, history[1:])) and partition.objective == history[-1]
    again = partition_zoo(random_similarities(counts), counts, 3, trials=15, compare_across_positions=across)
    assert again.blocks == partition.blocks  # seeded


def test_the_official_block_comparison_ignores_other_positions_unless_the_flag_fixes_it():
    sims = {("a", "b"): torch.full((4, 4), 0.4), ("b", "a"): torch.full((4, 4), 0.4), ("a", "a"): torch.eye(4)}
    a0, a1, b1 = Block("a", 0, 0, 1), Block("a", 1, 2, 3), Block("b", 1, 2, 3)
    official, fixed = BlockSimilarity(sims), BlockSimilarity(sims, compare_across_positions=True)
    assert official(a0, b1) == 0.0 and fixed(a0, b1) == pytest.approx(0.8)  # different models, different positions
    assert official(a1, b1) == pytest.approx(0.8) == fixed(a1, b1)  # same position
    assert official(a0, a1) == 0.0 == fixed(a0, a1)  # two blocks of one model
    assert official(a0, a0) == 1.0


def test_partition_refuses_k_larger_than_a_models_block_count_and_missing_pairs():
    counts = {"a": 5, "small": 2}
    with pytest.raises(ValueError, match=r"K=3 blocks is larger than model 'small''s block count \(2 nodes\)"):
        partition_zoo(random_similarities(counts), counts, 3)
    sims = random_similarities(counts)
    del sims[("small", "a")]
    with pytest.raises(ValueError, match=r"no matrix for the pair \('small', 'a'\)"):
        partition_zoo(sims, counts, 2)


# --- NASWOT -----------------------------------------------------------------------------------------------------------
class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 64, 4),
        )  # fmt: skip

    def forward(self, pixel_values):
        return self.body(pixel_values)


def test_naswot_scores_a_net_with_dead_relus_below_the_same_net_with_random_weights():
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    net = SmallNet()
    alive = naswot_score(net, x, batch_size=32)
    stats = net.body[1].running_mean.clone()
    with torch.no_grad():
        net.body[3].bias.fill_(-1e3)  # the second ReLU never fires: every image gets the same code
    assert naswot_score(net, x, batch_size=32) < alive
    assert torch.equal(net.body[1].running_mean, stats) and net.training  # scoring leaves no trace


# --- the reassembled model --------------------------------------------------------------------------------------------
def test_a_cnn_to_vit_reassembly_loads_without_its_sources_bit_exact_and_pushes_its_card(sources, tmp_path, fake_hub):
    from huggingface_hub import ModelCard

    model = DeRyForImageClassification.assemble(hybrid_blocks(sources), num_channels=1, image_size=8, num_labels=5)
    vgg = VGGForImageClassification.from_pretrained(sources["vgg"], trust_remote_code=False)
    torch.testing.assert_close(model.dery.blocks[0].layers[1].conv.weight, vgg.stages[1][0].conv.weight)
    assert [a.mode for a in model.dery.adapters] == ["cnn2vit"]
    x = torch.randn(6, 1, 8, 8)
    out = model(pixel_values=x, labels=torch.arange(6) % 5)
    assert out.logits.shape == (6, 5) and out.loss.isfinite()
    loaded_sources = {s: AutoModel.from_pretrained(s, trust_remote_code=False) for s in sources.values()}
    assert reassembly_num_parameters(model.config, loaded_sources) == sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp_path / "dery")
    for folder in sources.values():
        shutil.rmtree(folder)  # the saved model needs no source
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "dery", trust_remote_code=False)
    assert type(loaded) is DeRyForImageClassification
    state, again = model.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    model.eval(), loaded.eval()
    assert torch.equal(model(pixel_values=x).logits, loaded(pixel_values=x).logits)
    body = AutoModel.from_pretrained(tmp_path / "dery", trust_remote_code=False)
    assert type(body) is DeRyModel and body(pixel_values=x).pooler_output.shape == (6, 8)
    model.push_to_hub("tester/dery", results={"metrics": {"accuracy": 0.9}})
    card = ModelCard.load("tester/dery")
    assert "dery" in card.data.tags and "| accuracy | 0.9 |" in card.text
    for block in hybrid_blocks(sources):
        assert block["source"] in card.text and f"`{block['start']}`" in card.text and f"`{block['end']}`" in card.text


def test_vit_first_and_vit_to_cnn_reassemblies_run_and_frozen_blocks_stay_put(sources):
    blocks = [
        {"source": sources["vit"], "start": "layers.0", "end": "layers.0", "type": "vit"},
        {"source": sources["vgg"], "start": "stages.1.0", "end": "stages.1.1", "type": "cnn"},
    ]
    model = DeRyForImageClassification.assemble(blocks, num_channels=1, image_size=8, num_labels=3, block_fixed=True)
    assert model.dery.stem_kind == "patch" and [a.mode for a in model.dery.adapters] == ["vit2cnn"]
    assert not any(p.requires_grad for p in model.dery.blocks.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(pixel_values=torch.randn(4, 1, 8, 8), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("dery.blocks") and "running" not in k
               and "num_batches" not in k)  # fmt: skip
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_the_search_keeps_the_budget_and_refuses_one_no_reassembly_fits(sources):
    zoo = {"vgg": tiny_vgg(), "vit": tiny_vit(), "res": tiny_resnet()}
    names = {"vgg": sources["vgg"], "vit": sources["vit"], "res": "local/resnet"}
    x = torch.randn(16, 1, 8, 8)
    features = {name: collect_node_features(model, x) for name, model in zoo.items()}
    partition = partition_zoo(zoo_similarities(features), {n: list(f) for n, f in features.items()}, 2, trials=5)
    kw = dict(source_models=zoo, num_channels=1, image_size=8, num_labels=3, trials=2, batch_size=8, num_batches=2)
    found = search_reassembly(partition, names, x, min_params=0, max_params=3000, **kw)
    assert 0 < found.num_parameters <= 3000 and found.candidates_scored >= 1
    model = DeRyForImageClassification.from_sources(found.config, source_models={names[k]: m for k, m in zoo.items()})
    assert sum(p.numel() for p in model.parameters()) == found.num_parameters
    assert found.config.reassembly["max_params"] == 3000
    kinds = [b["type"] for b in found.config.blocks]
    assert kinds == sorted(kinds)  # CNN blocks before ViT blocks
    with pytest.raises(ValueError, match=r"no reassembly fits the parameter budget \(0, 50\]: the \d+ valid"):
        search_reassembly(partition, names, x, min_params=0, max_params=50, **kw)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"start": "stages.7.0"}, r"blocks\[0\]\['start'\] = 'stages.7.0' is not a node of source .*its nodes are"),
        ({"start": "stages.1.1", "end": "stages.0.0"}, r"blocks\[0\] starts at 'stages.1.1', after its end"),
        ({"type": "vit"}, r"blocks\[0\] has type 'vit' but the nodes .* are 'cnn' nodes"),
        ({"kind": "cnn"}, r"exactly the keys .*unknown \['kind'\]"),
    ],  # fmt: skip
)
def test_bad_blocks_are_named(sources, change, match):
    blocks = hybrid_blocks(sources)
    blocks[0] = {**blocks[0], **change}
    with pytest.raises(ValueError, match=match):
        DeRyForImageClassification.assemble(blocks, num_channels=1, image_size=8)


def test_bad_configs_are_named(sources):
    config = DeRyConfig.from_blocks(hybrid_blocks(sources), num_channels=1, image_size=8)
    with pytest.raises(ValueError, match="no config for source"):
        DeRyConfig(blocks=config.blocks, source_configs={})
    with pytest.raises(ValueError, match="adapter_strides` must hold 1 positive"):
        DeRyConfig(blocks=config.blocks, source_configs=config.source_configs, adapter_strides=[1, 2])
    with pytest.raises(ValueError, match="unknown field"):
        DeRyConfig(blokcs=[])
    with pytest.raises(ValueError, match="does not fit a first block of type 'cnn'"):
        DeRyForImageClassification(DeRyConfig(blocks=config.blocks, source_configs=config.source_configs, stem="patch"))
    with pytest.raises(ValueError, match="has no blocks"):
        DeRyModel(DeRyConfig())
