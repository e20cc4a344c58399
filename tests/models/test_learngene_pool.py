import json
import os

import pytest
import torch
import transformers as T
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from torch import nn

from hf_methods.engine.counting import count_flops, count_parameters
from hf_methods.models.learngene_pool import (
    LearngenePoolConfig,
    LearngenePoolModel,
    StitchedViTConfig,
    StitchedViTForImageClassification,
    enumerate_stitch_configs,
    least_squares_stitch,
    paired_stitching,
)

for _config, _model in (
    (LearngenePoolConfig, LearngenePoolModel),
    (StitchedViTConfig, StitchedViTForImageClassification),
):
    T.AutoConfig.register(_config.model_type, _config, exist_ok=True)
    T.AutoModel.register(_config, _model, exist_ok=True)
    T.AutoModelForImageClassification.register(_config, _model, exist_ok=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared machine two spinning OpenMP threads make
    each backward pass take a second instead of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


N_LAYERS = 3
WIDTHS = ((16, 2), (16, 4), (32, 2))  # (hidden_size, heads): tiny, same-width with other heads, wide


def vit(hidden=16, heads=2, layers=N_LAYERS, num_labels=5, image_size=16):
    return T.ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        image_size=image_size,
        patch_size=4,
        num_channels=1,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def instances(widths=WIDTHS):
    models = [T.ViTForImageClassification(vit(h, heads)).eval() for h, heads in widths]
    with torch.no_grad():  # trained-looking, distinct norms and biases so every module matters
        for model in models:
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return models


def pool_of(widths=WIDTHS, **kw):
    kw.setdefault("stitch_init", "random")
    return LearngenePoolModel.from_instances(instances(widths), **kw).eval()


def images(n=4):
    return torch.randn(n, 1, 16, 16)


# --- enumeration ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, pairs, slots", [(6, 16, 5), (9, 25, 8), (12, 34, 11)])
def test_paired_stitching_counts(n, pairs, slots):
    positions, slot_ids = paired_stitching(n)
    assert len(positions) == 3 * n - 2 == pairs and len(set(positions)) == pairs
    assert sorted(set(slot_ids)) == list(range(slots)) == list(range(n - 1))
    assert all(abs(j - k) <= 1 for j, k in positions)


def test_paired_stitching_exact_lists():
    assert paired_stitching(3) == ([(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)], [0, 0, 0, 0, 1, 1, 1])
    # kernel 3: the second window brings the 5 pairs with block 3; the cut windows [2, 3] and [3] bring none
    positions, slots = paired_stitching(4, kernel=3, stride=1)
    assert slots == [0] * 9 + [1] * 5
    assert positions[9:] == [(1, 3), (2, 3), (3, 1), (3, 2), (3, 3)]
    assert paired_stitching(5, kernel=2, stride=2) == (
        [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (4, 4)],
        [0, 0, 0, 0, 1, 1, 1, 1, 2],
    )


@pytest.mark.parametrize(
    "directions, pairs",
    [
        ("small_to_large", [(0, 1), (0, 2), (1, 2)]),
        ("adjacent_small_to_large", [(0, 1), (1, 2)]),
        ("all", [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]),
    ],
)
def test_config_enumeration_per_direction(directions, pairs):
    configs = enumerate_stitch_configs(3, 6, directions=directions)
    assert len(configs) == 3 + 16 * len(pairs)
    assert [c["id"] for c in configs] == list(range(len(configs)))
    assert [(c["front"], c["end"]) for c in configs[:3]] == [(0, 0), (1, 1), (2, 2)]
    assert all(c["j"] is None and c["depth"] == 6 for c in configs[:3])
    stitched = [(c["front"], c["end"]) for c in configs[3:]]
    assert stitched == [p for p in pairs for _ in range(16)]
    assert all(c["depth"] == (c["j"] + 1) + (6 - c["k"]) for c in configs[3:])
    assert len(enumerate_stitch_configs(3, 6, directions=directions, include_singletons=False)) == 16 * len(pairs)
    if directions == "small_to_large":  # the released code's ids for n=6: tiny->base stitches are 19..34
        assert all((c["front"], c["end"]) == (0, 2) for c in configs[19:35])


@pytest.mark.parametrize("directions, num_pairs", [("small_to_large", 3), ("adjacent_small_to_large", 2), ("all", 6)])
def test_pool_builds_one_stitch_per_slot_per_pair(directions, num_pairs):
    pool = LearngenePoolModel(
        LearngenePoolConfig(instance_configs=[vit(h, a) for h, a in WIDTHS], stitch_directions=directions)
    )
    assert len(pool.stitch_configs) == 3 + num_pairs * (3 * N_LAYERS - 2)
    assert len(pool.stitch_layers) == num_pairs
    for key, slots in pool.stitch_layers.items():
        f, e = (int(i) for i in key.split("-"))
        assert len(slots) == N_LAYERS - 1
        same_width = WIDTHS[f][0] == WIDTHS[e][0]
        assert all(s.is_identity == same_width for s in slots)
        if not same_width:
            assert slots[0].linear.weight.shape == (WIDTHS[e][0], WIDTHS[f][0])
    assert [m.config.num_attention_heads for m in pool.instances] == [2, 4, 2]  # heads kept as given


# --- forward and export ------------------------------------------------------------------------------------------
def test_singleton_configs_are_the_stock_instances():
    models = instances()
    pool = LearngenePoolModel.from_instances(models, stitch_init="random").eval()
    x = images()
    with torch.no_grad():
        for i, model in enumerate(models):
            assert torch.equal(pool(pixel_values=x, stitch_config_id=i).logits, model(pixel_values=x).logits)
        labels = torch.tensor([0, 1, 2, 3])
        out = pool(pixel_values=x, labels=labels, stitch_config_id=2)
        torch.testing.assert_close(out.loss, models[2](pixel_values=x, labels=labels).loss)


def test_export_gives_the_pool_logits_and_survives_save_load(tmp_path):
    pool = pool_of()
    x = images()
    by_pair = {(c["front"], c["end"], c["j"], c["k"]): c["id"] for c in pool.stitch_configs}
    chosen = [
        by_pair[(0, 2, 1, 1)],
        by_pair[(0, 2, 2, 1)],
        by_pair[(1, 2, 0, 1)],
        by_pair[(0, 1, 1, 2)],
        len(pool.stitch_configs) - 1,
    ]
    for cid in chosen:
        c = pool.stitch_configs[cid]
        model = pool.export(cid).eval()
        assert type(model) is StitchedViTForImageClassification
        assert len(model.front_layers) == c["j"] + 1 and len(model.end_layers) == N_LAYERS - c["k"]
        assert model.config.num_hidden_layers == c["depth"]
        assert model.stitch.is_identity == (WIDTHS[c["front"]][0] == WIDTHS[c["end"]][0])
        assert count_parameters(model) == pool.config_num_parameters(cid)  # only the used modules
        assert {k: model.config.stitch_config[k] for k in c} == c
        with torch.no_grad():
            expected = pool(pixel_values=x, stitch_config_id=cid).logits
            assert torch.equal(model(pixel_values=x).logits, expected), cid
        folder = tmp_path / f"config-{cid}"
        model.save_pretrained(folder)
        assert sorted(os.listdir(folder)) == ["config.json", "hf_methods_learngene.py", "model.safetensors"]
        saved = json.loads((folder / "config.json").read_text())
        assert (
            saved["auto_map"]["AutoModelForImageClassification"]
            == "hf_methods_learngene.StitchedViTForImageClassification"
        )
        assert saved["model_type"] == "hf_methods_stitched_vit" and saved["front_layers"] == c["j"] + 1
        assert saved["end_start"] == c["k"] and saved["instance_num_layers"] == N_LAYERS
        for loaded in (
            StitchedViTForImageClassification.from_pretrained(folder),
            T.AutoModelForImageClassification.from_pretrained(folder),
        ):
            assert type(loaded) is StitchedViTForImageClassification
            assert loaded.config.stitch_config == model.config.stitch_config
            assert loaded.config.id2label == pool.config.id2label
            with torch.no_grad():
                assert torch.equal(loaded.eval()(pixel_values=x).logits, expected), cid


def test_export_of_a_singleton_is_a_stock_model(tmp_path):
    pool = pool_of()
    x = images()
    model = pool.export(1).eval()
    assert type(model) is T.ViTForImageClassification and model.config.num_attention_heads == 4
    model.save_pretrained(tmp_path)
    loaded = T.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is T.ViTForImageClassification and loaded.config.stitch_config["id"] == 1
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).logits, pool(pixel_values=x, stitch_config_id=1).logits)


def test_pool_save_load_round_trip(tmp_path):
    pool = pool_of(train_config_ids=[0, 2, 10])
    pool.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hf_methods_learngene_pool"
    for loaded in (LearngenePoolModel.from_pretrained(tmp_path), T.AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is LearngenePoolModel
        assert loaded.stitch_configs == pool.stitch_configs and loaded.config.train_config_ids == [0, 2, 10]
        assert loaded.config.stitch_init == "random"
        original = pool.state_dict()
        assert loaded.state_dict().keys() == original.keys()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, original[key]), key


def test_incomplete_pool_checkpoint_is_an_error(tmp_path):
    from safetensors.torch import load_file

    pool_of().save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    stored.pop("stitch_layers.0-2.1.linear.bias")
    save_file(stored, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="stitch_layers.0-2.1.linear.bias"):
        LearngenePoolModel.from_pretrained(tmp_path)


def test_exported_model_pushes_to_the_hub(fake_hub):
    pool = pool_of()
    cid = next(c["id"] for c in pool.stitch_configs if (c["front"], c["end"]) == (0, 2))
    model = pool.export(cid).eval()
    model.push_to_hub("tester/stitched")
    assert {"config.json", "model.safetensors"} <= set(fake_hub.files("tester/stitched"))
    loaded = T.AutoModelForImageClassification.from_pretrained("tester/stitched").eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).logits, model(pixel_values=x).logits)
    card = ModelCard.load("tester/stitched")
    assert card.data.library_name == "hf-methods" and "learngene-pool" in card.data.tags
    assert "pip install hf-methods" in card.text and "blocks 0.." in card.text


def test_pool_and_singleton_push_with_their_cards(fake_hub):
    pool = pool_of()
    pool.push_to_hub("tester/pool")
    assert {"config.json", "model.safetensors", "README.md", "hf_methods_learngene.py"} <= set(
        fake_hub.files("tester/pool")
    )
    card = ModelCard.load("tester/pool")
    assert "model-stitching" in card.data.tags and f"**{len(pool.stitch_configs)} networks**" in card.text
    loaded = T.AutoModel.from_pretrained("tester/pool")
    assert type(loaded) is LearngenePoolModel
    for key, value in pool.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    single = pool.export(0)  # an instance alone: a stock ViT, still with the pool card
    single.push_to_hub("tester/instance-0")
    assert "no extra package is needed" in ModelCard.load("tester/instance-0").text
    assert type(T.AutoModelForImageClassification.from_pretrained("tester/instance-0")) is T.ViTForImageClassification


# --- stitch initialization ---------------------------------------------------------------------------------------
def test_least_squares_recovers_a_planted_affine_map():
    x_front = torch.randn(2, 150, 16, dtype=torch.float64)  # (batch, tokens, width) like block outputs
    a = torch.randn(16, 24, dtype=torch.float64)
    b = torch.randn(24, dtype=torch.float64)
    weight, bias = least_squares_stitch(x_front, x_front @ a + b)
    assert weight.shape == (24, 16) and bias.shape == (24,) and weight.dtype == torch.float64
    torch.testing.assert_close(weight, a.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(bias, b, atol=1e-5, rtol=0)
    # float32 in, float32 out, still solved in float64
    w32, b32 = least_squares_stitch(x_front.float(), (x_front @ a + b).float())
    assert w32.dtype == torch.float32
    torch.testing.assert_close(w32, a.T.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(b32, b.float(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="paired activations"):
        least_squares_stitch(torch.randn(5, 16), torch.randn(6, 24))


def test_least_squares_init_fits_each_slot_on_the_instances_activations():
    models = instances(((16, 2), (32, 2)))
    calibration = images(12)  # 12 * 17 tokens, well over 17 unknowns per output
    pool = LearngenePoolModel.from_instances(models, stitch_init="least_squares", calibration_inputs=calibration)
    assert pool.config.stitch_init == "least_squares"
    with torch.no_grad():  # block outputs taken independently, from the stock forward
        front = models[0](pixel_values=calibration, output_hidden_states=True).hidden_states
        end = models[1](pixel_values=calibration, output_hidden_states=True).hidden_states
    for slot, layer in enumerate(pool.stitch_layers["0-1"]):  # slot s joins the outputs of block s
        x_f, x_e = front[slot + 1].double(), end[slot + 1].double()
        design = torch.cat([x_f.reshape(-1, 16), torch.ones(x_f.numel() // 16, 1, dtype=torch.float64)], 1)
        solution = torch.linalg.pinv(design) @ x_e.reshape(-1, 32)
        torch.testing.assert_close(layer.linear.weight.double(), solution[:16].T, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(layer.linear.bias.double(), solution[16], atol=1e-4, rtol=1e-4)
        # and it is the best affine map: a random one leaves a larger residual
        fitted = (layer.linear(front[slot + 1]) - end[slot + 1]).pow(2).mean()
        random = (nn.Linear(16, 32)(front[slot + 1]) - end[slot + 1]).pow(2).mean()
        assert fitted < random


def write_projectors(folder, d_student=16, d_teacher=32, points=(0, 2, 4)):
    tensors, weights = {}, []
    for k in points:
        w = torch.randn(d_student, d_teacher)
        weights.append(w)
        tensors[f"hidden.{k}.weight"] = w
        tensors[f"hidden.{k}.bias"] = torch.full((d_student,), 7.0)
        tensors[f"attention.{k}.weight"] = torch.randn(d_student, d_teacher) * 100
        tensors[f"attention.{k}.bias"] = torch.full((d_student,), 7.0)
    os.makedirs(folder, exist_ok=True)
    save_file(
        tensors,
        os.path.join(folder, "feature_projectors.safetensors"),
        metadata={"student_layers": "[0, 1, 2]", "teacher_layers": "[1, 3, 5]", "feature_positions": "front,end"},
    )
    return torch.stack(weights).mean(0).T


def test_projector_init_from_stage_one_projectors(tmp_path):
    expected = write_projectors(tmp_path / "tiny")
    models = instances(((16, 2), (32, 2)))
    torch.manual_seed(1)
    pool = LearngenePoolModel.from_instances(
        models, stitch_init="projector", projector_folders=[tmp_path / "tiny", None]
    )
    torch.manual_seed(1)
    default = LearngenePoolModel.from_instances(models, stitch_init="random")
    for slot, reference in zip(pool.stitch_layers["0-1"], default.stitch_layers["0-1"]):
        assert torch.equal(slot.linear.weight, expected)  # mean over matched points, transposed: 16 -> 32
        assert torch.equal(slot.linear.bias, reference.linear.bias)  # bias keeps its default init
    assert pool.config.stitch_init == "projector"
    # found on its own beside a saved student's weights
    models[0].save_pretrained(tmp_path / "student")
    expected = write_projectors(tmp_path / "student")
    student = T.ViTForImageClassification.from_pretrained(tmp_path / "student")
    pool = LearngenePoolModel.from_instances([student, models[1]])  # stitch_init defaults to "projector"
    assert torch.equal(pool.stitch_layers["0-1"][1].linear.weight, expected)


def test_projector_init_errors_explain_the_alternatives(tmp_path):
    with pytest.raises(FileNotFoundError, match="least_squares"):
        LearngenePoolModel.from_instances(instances(((16, 2), (32, 2))))  # no projector file anywhere
    write_projectors(tmp_path / "tiny", d_student=16, d_teacher=32)
    three = instances(((16, 2), (24, 2), (32, 2)))
    with pytest.raises(ValueError, match=r"end instance 1 has width 24.*least_squares"):
        LearngenePoolModel.from_instances(three, projector_folders={0: tmp_path / "tiny"})
    # per pair, as upstream: projector for tiny -> base, least squares for tiny -> small, small -> base random
    pool = LearngenePoolModel.from_instances(
        three,
        stitch_init={"0-2": "projector", "0-1": "least_squares"},
        projector_folders={0: tmp_path / "tiny"},
        calibration_inputs=images(12),
    )
    assert pool.config.stitch_init == {"0-1": "least_squares", "0-2": "projector", "1-2": "random"}
    assert pool.export(len(pool.stitch_configs) - 1).config.stitch_config["stitch_init"] == "random"
    write_projectors(tmp_path / "wrong", d_student=24, d_teacher=32)
    with pytest.raises(ValueError, match="belong to another student"):
        LearngenePoolModel.from_instances(three[::2], projector_folders=[tmp_path / "wrong", None])
    with pytest.raises(ValueError, match="calibration_inputs"):
        LearngenePoolModel.from_instances(three, stitch_init="least_squares")
    with pytest.raises(ValueError, match=r"pair\(s\) \['2-0'\]"):
        LearngenePoolModel.from_instances(three, stitch_init={"2-0": "random"})


def test_projectors_are_found_beside_a_student_on_the_hub(fake_hub, tmp_path):
    from hf_methods.hub import push_folder

    models = instances(((16, 2), (32, 2)))
    models[0].save_pretrained(tmp_path / "student")
    expected = write_projectors(tmp_path / "student")
    push_folder(tmp_path / "student", "tester/student")
    student = T.ViTForImageClassification.from_pretrained("tester/student")
    pool = LearngenePoolModel.from_instances([student, models[1]])
    assert all(torch.equal(s.linear.weight, expected) for s in pool.stitch_layers["0-1"])


# --- size, cost, accuracy -------------------------------------------------------------------------------------------
def vit_layer_params(d, inter):
    return 4 * (d * d + d) + 2 * 2 * d + (d * inter + inter) + (inter * d + d)


def test_config_num_parameters_by_hand():
    pool = pool_of()
    cid = next(c["id"] for c in pool.stitch_configs if (c["front"], c["end"], c["j"], c["k"]) == (0, 2, 1, 1))
    patches = (16 // 4) ** 2
    embeddings = (16 * 1 * 4 * 4 + 16) + 16 + (patches + 1) * 16  # patch projection, CLS, positions
    front = 2 * vit_layer_params(16, 32)  # blocks 0..1
    stitch = 16 * 32 + 32
    end = 2 * vit_layer_params(32, 64)  # blocks 1..2
    head = 2 * 32 + (32 * 5 + 5)  # final LayerNorm, classifier
    assert pool.config_num_parameters(cid) == embeddings + front + stitch + end + head
    assert pool.config_num_parameters(2) == count_parameters(pool.instances[2])
    identity = next(c["id"] for c in pool.stitch_configs if (c["front"], c["end"], c["j"], c["k"]) == (0, 1, 1, 1))
    assert pool.config_num_parameters(identity) == embeddings + 4 * vit_layer_params(16, 32) + 2 * 16 + 16 * 5 + 5


def test_flops_and_evaluation_per_config():
    pool = pool_of()
    x, labels = images(6), torch.tensor([0, 1, 2, 3, 4, 0])
    assert pool.config_flops(2, x[:1]) == count_flops(pool.instances[2], {"pixel_values": x[:1]})
    cid = len(pool.stitch_configs) - 1
    assert pool.config_flops(cid, {"pixel_values": x[:2]}) == count_flops(pool.export(cid), {"pixel_values": x[:2]})
    rows = pool.evaluate_configs(x, labels, batch_size=4, config_ids=[0, cid])
    assert [r["id"] for r in rows] == [0, cid]
    assert set(rows[0]) == {"id", "front", "end", "j", "k", "depth", "params", "flops", "accuracy"}
    with torch.no_grad():
        expected = (pool(pixel_values=x, stitch_config_id=cid).logits.argmax(-1) == labels).float().mean().item()
    assert rows[1]["accuracy"] == pytest.approx(expected)
    assert rows[1]["params"] == pool.config_num_parameters(cid) and rows[0]["flops"] > 0
    assert len(pool.evaluate_configs(x, labels)) == len(pool.stitch_configs)


# --- training ---------------------------------------------------------------------------------------------------------
def used_prefixes(c, n=N_LAYERS):
    f, e = c["front"], c["end"]
    j, k = (n - 1, n) if c["j"] is None else (c["j"], c["k"])
    prefixes = [f"instances.{f}.vit.embeddings."] + [f"instances.{f}.vit.layers.{i}." for i in range(j + 1)]
    prefixes += [f"instances.{e}.vit.layers.{i}." for i in range(k, n)]
    prefixes += [f"instances.{e}.vit.layernorm.", f"instances.{e}.classifier."]
    if c["j"] is not None and c["front"] != c["end"]:
        prefixes.append(f"stitch_layers.{f}-{e}.{c['slot']}.")
    return prefixes


def test_training_samples_configs_and_only_the_used_path_learns():
    pool = pool_of().train()
    x, labels = images(), torch.tensor([0, 1, 2, 3])

    def draws(count):
        T.set_seed(3)
        seen = []
        for _ in range(count):
            pool.zero_grad()
            pool(pixel_values=x, labels=labels).loss.backward()
            c = pool.stitch_configs[pool.last_stitch_config_id]
            with_grad = {name for name, p in pool.named_parameters() if p.grad is not None}
            expected = {name for name, _ in pool.named_parameters() if name.startswith(tuple(used_prefixes(c)))}
            assert with_grad == expected, c
            seen.append(c["id"])
        return seen

    seen = draws(12)
    assert len(set(seen)) >= 6  # 24 configs, uniform draws
    assert draws(12) == seen  # transformers.set_seed makes the sampling reproducible
    pool.config.train_config_ids = [0, 2, 10]
    T.set_seed(0)
    restricted = set()
    for _ in range(15):
        pool(pixel_values=x)
        restricted.add(pool.last_stitch_config_id)
    assert restricted == {0, 2, 10}
    pool.eval()
    with pytest.raises(ValueError, match="needs stitch_config_id"):
        pool(pixel_values=x)
    with pytest.raises(ValueError, match=r"0\.\.23"):
        pool(pixel_values=x, stitch_config_id=24)


def test_a_trainer_trains_the_pool_one_sampled_config_per_step(tmp_path):
    pool = pool_of(train_config_ids=[0, 2, 10]).train()
    data = [{"pixel_values": torch.randn(1, 16, 16), "labels": i % 5} for i in range(16)]
    args = T.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    before = {n: p.detach().clone() for n, p in pool.named_parameters()}
    trainer = T.Trainer(model=pool, args=args, train_dataset=data)
    assert trainer.train().training_loss > 0 and not trainer.model_accepts_loss_kwargs
    changed = {n for n, p in pool.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not any(n.startswith("instances.1.") for n in changed)  # never sampled: untouched


# --- validation -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "instance_configs, kwargs, message",
    [
        ([vit(layers=3), vit(32, layers=4)], {}, r"num_hidden_layers=4 .* same depth"),
        ([vit(), vit(32, image_size=32)], {}, "image_size"),
        ([vit(), vit(32, num_labels=7)], {}, "num_labels=7"),
        ([vit(32), vit(16)], {}, "small -> large"),
        ([vit()], {}, "at least two"),
        ([vit(), T.BertConfig().to_dict()], {}, "model_type='bert'"),
        ([vit(), vit(32)], {"stitch_directions": "large_to_small"}, "stitch_directions='large_to_small' is unknown"),
        ([vit(), vit(32)], {"stitch_init": "pinv"}, "stitch_init='pinv' is unknown"),
        ([vit(), vit(32)], {"stitch_init": {"0-5": "random"}}, r"unknown pair\(s\) \['0-5'\]"),
        ([vit(), vit(32)], {"stitch_kernel_size": 0}, "stitch_kernel_size must be a positive integer"),
        ([vit(), vit(32)], {"stitch_kernels": 2}, r"unknown field\(s\) \['stitch_kernels'\]"),
    ],
)
def test_bad_pool_configs_are_rejected(instance_configs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearngenePoolConfig(instance_configs=instance_configs, **kwargs)


def test_bad_pool_models_are_rejected():
    with pytest.raises(ValueError, match="train_config_ids"):
        LearngenePoolModel(LearngenePoolConfig(instance_configs=[vit(), vit(32)], train_config_ids=[0, 99]))
    with pytest.raises(ValueError, match="instance_configs is empty"):
        LearngenePoolModel(LearngenePoolConfig())
    with pytest.raises(TypeError, match="stock ViTForImageClassification"):
        LearngenePoolModel.from_instances([T.ViTModel(vit()), T.ViTModel(vit(32))], stitch_init="random")
    with pytest.raises(ValueError, match="end_start must be an integer in 0..3"):
        StitchedViTConfig(
            front_config=vit().to_dict(),
            end_config=vit(32).to_dict(),
            front_layers=1,
            end_start=5,
            instance_num_layers=3,
        )


def test_random_stitch_init_really_reinitializes():
    a = T.ViTForImageClassification(
        T.ViTConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=8,
            patch_size=4,
            num_channels=1,
            num_labels=3,
        )
    )
    b = T.ViTForImageClassification(
        T.ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=8,
            patch_size=4,
            num_channels=1,
            num_labels=3,
        )
    )
    pool = LearngenePoolModel.from_instances(
        [a, b], stitch_init="least_squares", calibration_inputs=torch.randn(16, 1, 8, 8)
    )
    fitted = [s.linear.weight.clone() for s in pool.stitch_layers["0-1"]]
    pool.initialize_stitches("random")
    assert all(not torch.equal(w, s.linear.weight) for w, s in zip(fitted, pool.stitch_layers["0-1"]))
    assert pool.config.stitch_init == "random"
