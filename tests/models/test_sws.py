import logging

import pytest
import torch
import transformers as T
from minilm import minilm_path, sentence_batch, similarity_to
from tiny import ARCHS, stock_model, vit_config

import hf_methods  # noqa: F401  (registers the Auto classes)
from hf_methods import SWSConfig, SWSModel, TLEGConfig, TLEGModel
from hf_methods.engine import stored_parameter_ratio
from hf_methods.models.sws import PUBLISHED_LAYERS_SOURCE, default_layers_source


def make(arch="vit", stage_sizes=(2, 1, 2), **kw):
    config_fn, cls, _ = ARCHS[arch]
    return SWSModel(SWSConfig.from_base(config_fn(), cls, stage_sizes=list(stage_sizes), **kw))


def without_labels(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def test_config_defaults_and_derived_depth():
    config = SWSConfig.from_base(vit_config(), "ViTForImageClassification")
    assert config.stage_sizes == [3, 3, 4, 3, 3] and config.aux_num_layers == 16
    assert SWSConfig.from_base(vit_config(), "ViTForImageClassification", stage_sizes=[2, 2]).aux_num_layers == 4


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"stage_sizes": [3, 0]}, "stage_sizes"),
        ({"stage_sizes": []}, "stage_sizes"),
        ({"stage_sizes": [2, 2], "aux_num_layers": 5}, "add up to 4"),
    ],
)
def test_bad_configs_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        SWSConfig.from_base(vit_config(), "ViTForImageClassification", **kw)


def test_every_layer_of_a_stage_runs_the_stage_weights():
    model = make(stage_sizes=(2, 1, 2))
    assert len(model.gene.stages) == 3 and not any(".layers." in n for n, _ in model.named_parameters())
    stages = [model.default_layers_source(5)[i] for i in range(5)]
    assert stages == [0, 0, 1, 2, 2]
    for i, s in enumerate(stages):
        params = model.layer_parameters(i, 5)
        for name, p in model.gene.stages[s].named_parameters():
            assert params[name] is p  # the stage's own tensor, shared, not a copy
    # stages are independent draws
    assert not torch.equal(model.gene.stages[0].mlp.fc1.weight, model.gene.stages[1].mlp.fc1.weight)
    layer = sum(p.numel() for p in model.gene.stages[0].parameters())
    assert model.layer_num_parameters() == 3 * layer


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_expand_to_aux_depth_with_identity_mapping_reproduces_the_aux_model(arch):
    model = make(arch, stage_sizes=(2, 1, 2)).eval()
    batch = without_labels(ARCHS[arch][2]())
    for source in (None, [0, 0, 1, 2, 2]):
        desc = model.expand(5, source).eval()
        assert type(desc).__name__ == ARCHS[arch][1]
        with torch.no_grad():
            assert (model(**batch).logits - desc(**batch).logits).abs().max().item() <= 1e-5
    assert desc.config.learngene_ancestry["layers_source"] == [0, 0, 1, 2, 2]


def test_published_preset_is_applied_exactly():
    model = make(stage_sizes=(3, 3, 4, 3, 3))
    preset = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    assert PUBLISHED_LAYERS_SOURCE[(3, 3, 4, 3, 3)][12] == preset
    desc = model.expand(12)
    assert desc.config.learngene_ancestry["layers_source"] == preset
    for i, s in enumerate(preset):
        for name, p in desc.vit.layers[i].named_parameters():
            assert torch.equal(p, model.gene.stages[s].get_parameter(name)), (i, name)
    assert {r.detail for r in desc.expansion_report.rows if r.name.startswith("vit.layers.7.")} == {"stage 2"}
    assert torch.equal(desc.classifier.weight, model.base.classifier.weight)
    # the preset can be switched off: the default rule is then used
    off = SWSModel(SWSConfig.from_base(vit_config(), "ViTForImageClassification", use_published_presets=False))
    assert off.default_layers_source(12) == default_layers_source([3, 3, 4, 3, 3], 12) != preset


def test_user_mapping_is_applied():
    model = make(stage_sizes=(2, 1, 2))
    desc = model.expand(4, "0,2,2,2")
    assert desc.config.learngene_ancestry["layers_source"] == [0, 2, 2, 2]
    assert torch.equal(desc.vit.layers[1].mlp.fc2.weight, model.gene.stages[2].mlp.fc2.weight)
    back = model.expand(3, [2, 0, 1], allow_any_order=True)
    assert torch.equal(back.vit.layers[0].mlp.fc2.weight, model.gene.stages[2].mlp.fc2.weight)


@pytest.mark.parametrize(
    "source, match",
    [
        ([0, 1, 2], "has 3 entries but the descendant has 4"),
        ([0, 1, 2, 3], r"out of range: this learngene has stages 0..2"),
        ([0, -1, 1, 2], "out of range"),
        ([0, 2, 1, 2], "allow_any_order=True"),
        (["a", 0, 1, 2], "list of stage indices"),
        ([0, 0.5, 1, 2], "integer"),
    ],
)
def test_bad_mappings_are_rejected(source, match):
    with pytest.raises(ValueError, match=match):
        make(stage_sizes=(2, 1, 2)).expand(4, source)


@pytest.mark.parametrize("depth", range(1, 21))
def test_default_rule_is_monotone_covering_and_proportional(depth):
    sizes = [3, 3, 4, 3, 3]
    mapping = default_layers_source(sizes, depth)
    assert len(mapping) == depth and mapping == sorted(mapping) and all(0 <= s < 5 for s in mapping)
    counts = [mapping.count(s) for s in range(5)]
    if depth >= 5:
        assert min(counts) >= 1  # every stage inherited
        quotas = [depth * n / 16 for n in sizes]
        assert all(abs(c - q) < 1.0 + 1e-9 for c, q in zip(counts, quotas)), (counts, quotas)
    else:
        assert mapping[0] == 0 and (depth == 1 or mapping[-1] == 4) and len(set(mapping)) == depth
    if depth == 16:
        assert counts == sizes


def test_default_rule_examples():
    assert default_layers_source([3, 3, 4, 3, 3], 12) == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert default_layers_source([3, 3, 4, 3, 3], 6) == [0, 1, 2, 2, 3, 4]
    assert default_layers_source([3, 3, 4, 3, 3], 3) == [0, 2, 4]
    assert default_layers_source([1, 7], 4) == [0, 1, 1, 1]


def test_head_count_change_warns(caplog):
    model = make(stage_sizes=(1, 1))
    with caplog.at_level(logging.WARNING, logger="hf_methods.engine.learngene"):
        model.expand(2, num_attention_heads=4)
    assert "regrouped into different heads" in caplog.text


def test_save_load_round_trip_and_auto_class(tmp_path):
    model = make(stage_sizes=(2, 2))
    model.save_pretrained(tmp_path)
    loaded = T.AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is SWSModel and loaded.config.stage_sizes == [2, 2]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    batch = without_labels(ARCHS["vit"][2]())
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded.eval()(**batch).logits)


def test_activation_checkpointing_gives_the_same_gradients():
    model = make(stage_sizes=(2, 2)).train()
    batch = ARCHS["vit"][2]()

    def grads():
        model.zero_grad()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and any(k.startswith("gene.stages.1") for k in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def _deit(hidden, heads):
    # DeiT-S/B at 224px, patch 16, 1000 classes, as in the SWS paper (ViT has a CLS token; SWS's DeiT does not)
    return T.ViTConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=224,
        patch_size=16,
        num_labels=1000,
    )


@pytest.mark.parametrize("hidden, heads, paper", [(384, 6, 20.1), (768, 12, 20.5)])
def test_stored_parameter_ratio_reproduces_the_paper_accounting(hidden, heads, paper):
    """research Appendix B: descendants of depths 6..15 over one 5-stage learngene, about 20x."""
    with torch.device("meta"):
        sws = SWSModel(SWSConfig.from_base(_deit(hidden, heads), "ViTForImageClassification"))
        tleg = TLEGModel(TLEGConfig.from_base(_deit(hidden, heads), "ViTForImageClassification"))
    ratio = stored_parameter_ratio(sws, range(6, 16))
    assert abs(ratio - paper) < 0.1, ratio
    # the same arithmetic by hand, from the timm block/stem formulas
    d, h = hidden, 4 * hidden
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + 4 * d
    stem = (3 * 16 * 16 * d + d) + 197 * d + d + 2 * d + (d * 1000 + 1000)  # with CLS token and its position
    assert sws.learngene_num_parameters() == 5 * block + stem
    assert sws.descendant_num_parameters(12) == 12 * block + stem
    assert ratio == pytest.approx(sum(D * block + stem for D in range(6, 16)) / (5 * block + stem))
    assert stored_parameter_ratio(tleg, range(6, 16)) > ratio  # a TLEG learngene stores 2 layers, not 5


# --- starting from a pretrained teacher ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "teacher_depth, expected",
    [
        (5, [0, 1, 2, 3, 4]),
        (6, [0, 1, 2, 2, 3, 4]),  # quotas 1.125 1.125 1.5 1.125 1.125: the extra layer goes to the 4-layer stage
        (12, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]),  # proportional (not the published D=12 descendant preset)
        (16, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]),  # the auxiliary network's own stages
    ],
)
def test_teacher_stage_split_is_proportional(teacher_depth, expected):
    model = make(stage_sizes=(3, 3, 4, 3, 3))
    assert model.teacher_stage_split(teacher_depth) == expected
    with pytest.raises(ValueError, match="the teacher has 4 layers but this SWS learngene has 5 stages"):
        model.teacher_stage_split(4)


def test_stage_means_equal_hand_computed_means():
    teacher = stock_model("vit", 6)
    gene = SWSModel.from_teacher(teacher, stage_sizes=[1, 2, 1])
    # 6 teacher layers over stages of 1, 2, 1 aux layers: quotas 1.5, 3, 1.5 -> 2, 3, 1 teacher layers
    covered = [[0, 1], [2, 3, 4], [5]]
    assert gene.config.teacher_init["stage_teacher_layers"] == covered
    layers = teacher.vit.layers
    for name, p in gene.gene.stages[0].named_parameters():
        hand = (layers[0].get_parameter(name) + layers[1].get_parameter(name)) / 2
        torch.testing.assert_close(p, hand, rtol=0, atol=1e-7, msg=name)
    for name, p in gene.gene.stages[1].named_parameters():
        hand = (layers[2].get_parameter(name) + layers[3].get_parameter(name) + layers[4].get_parameter(name)) / 3
        torch.testing.assert_close(p, hand, rtol=0, atol=1e-7, msg=name)
    for name, p in gene.gene.stages[2].named_parameters():
        assert torch.equal(p, layers[5].get_parameter(name)), name  # one teacher layer: an exact copy
    assert torch.equal(gene.base.classifier.weight, teacher.classifier.weight)
    report = gene.teacher_init_report
    stage_1 = {r.detail for r in report.rows if r.name.startswith("gene.stages.1.")}
    assert stage_1 == {"mean of teacher layers [2, 3, 4]"}
    assert {r.source for r in report.rows} == {"fit", "teacher"}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_one_layer_stages_reproduce_the_teacher(arch):
    teacher = stock_model(arch, 4)
    gene = SWSModel.from_teacher(teacher, stage_sizes=[1, 1, 1, 1]).eval()
    batch = without_labels(ARCHS[arch][2]())
    with torch.no_grad():
        assert torch.equal(gene(**batch).logits, teacher(**batch).logits)


def test_teacher_whose_stages_repeat_a_layer_is_reproduced():
    teacher = stock_model("bert", 6)
    layers = teacher.bert.encoder.layer
    with torch.no_grad():  # layers 1 = 0 and 4, 5 = 3: what stages 2, 1, 3 share
        for target, source in ((1, 0), (4, 3), (5, 3)):
            for name, p in layers[target].named_parameters():
                p.copy_(layers[source].get_parameter(name))
    gene = SWSModel.from_teacher(teacher, stage_sizes=[2, 1, 3]).eval()
    batch = without_labels(ARCHS["bert"][2]())
    with torch.no_grad():
        torch.testing.assert_close(gene(**batch).logits, teacher(**batch).logits, rtol=0, atol=1e-6)


def test_sws_teacher_init_options_and_errors():
    teacher = stock_model("vit", 3)
    with pytest.raises(ValueError, match="use at most 3 stages"):
        SWSModel.from_teacher(teacher, stage_sizes=[1, 1, 1, 1])
    gene = make("vit", stage_sizes=(1, 1, 1, 1))
    before = {k: v.clone() for k, v in gene.state_dict().items()}
    with pytest.raises(ValueError, match="use at most 3 stages"):
        gene.init_from_teacher(teacher)
    assert all(torch.equal(v, before[k]) for k, v in gene.state_dict().items())  # nothing half-done
    assert getattr(gene.config, "teacher_init", None) is None
    with pytest.raises(ValueError, match=r"init='least_squares' is not a teacher init of SWSModel"):
        SWSModel.from_teacher(teacher, init="least_squares", stage_sizes=[1, 1])
    gene = SWSModel.from_teacher(teacher, init="random")  # the default 3,3,4,3,3 stages: random needs no split
    assert gene.config.aux_num_layers == 16 and gene.config.teacher_init["init"] == "random"
    assert not torch.equal(gene.gene.stages[0].mlp.fc1.weight, gene.gene.stages[1].mlp.fc1.weight)
    assert torch.equal(gene.base.vit.embeddings.cls_token, teacher.vit.embeddings.cls_token)


def test_minilm_stage_mean_aux_net_is_closer_to_the_teacher_than_random_init():
    """The real MiniLM (6 layers) as teacher of the default 16-layer SWS auxiliary network (stages 3,3,4,3,3 cover
    teacher layers [0], [1], [2, 3], [4], [5]). Cosine similarity of mean-pooled sentence embeddings to the teacher's
    over 12 sentences (measured: stage means 0.195 mean; random layers 0.09): better than random, far from the teacher,
    because the 16-layer auxiliary network repeats each stage. With one stage per teacher layer it is the teacher."""
    path = minilm_path()
    teacher = T.BertModel.from_pretrained(path).eval()
    similarity = similarity_to(teacher, sentence_batch(T.AutoTokenizer.from_pretrained(path)))
    means = SWSModel.from_teacher(teacher)
    assert means.config.teacher_init["stage_teacher_layers"] == [[0], [1], [2, 3], [4], [5]]
    assert similarity(means).mean() >= 0.16
    assert similarity(SWSModel.from_teacher(teacher, init="random")).mean() <= 0.12
    assert similarity(SWSModel.from_teacher(teacher, stage_sizes=[1] * 6)).min() >= 0.9999
