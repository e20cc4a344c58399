"""KnowledgeFactorModel: the CKN's multi-scale features, one TSN per task, heads on c_L + tau_k; assembling factor
networks leaves every kept task's logits unchanged; save -> load bit exact with the Auto classes; push with a card;
bad configs, labels and task ids named."""

import pytest
import torch
import transformers as T
from huggingface_hub import ModelCard

from hf_methods.models.convnets import VGGConfig
from hf_methods.models.knowledge_factor import KnowledgeFactorConfig, KnowledgeFactorModel

LABELS = [[str(d) for d in range(10)], ["0", "90", "180", "270"]]


def config(**kw) -> KnowledgeFactorConfig:
    values = dict(
        ckn_config=VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1]).to_dict(),
        tsn_config=VGGConfig(num_channels=1, hidden_sizes=[4], depths=[1]),
        task_names=["digit", "rotation"],
        task_labels=LABELS,
    )
    return KnowledgeFactorConfig(**{**values, **kw})


def model(**kw) -> KnowledgeFactorModel:
    torch.manual_seed(0)
    return KnowledgeFactorModel(config(**kw)).eval()


X = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_config_reads_the_widths_and_lays_the_tasks_side_by_side():
    c = config()
    assert c.ckn_feature_layers == [0, 1] and c.ckn_feature_sizes == [4, 8] and c.tsn_feature_size == 4
    assert c.num_tasks == 2 and c.task_num_labels == [10, 4] and c.num_labels == 14
    assert c.id2label[0] == "digit:0" and c.id2label[13] == "rotation:270"
    one = KnowledgeFactorConfig(ckn_config=c.ckn_config, tsn_config=c.tsn_config, id2label={0: "cat", 1: "dog"})
    assert one.task_names == ["task"] and one.task_labels == [["cat", "dog"]] and one.id2label == {0: "cat", 1: "dog"}


def test_forward_predicts_every_task_from_the_shared_and_its_own_features():
    m = model()
    labels = torch.tensor([[3, 1]] * 6)
    out = m(pixel_values=X, labels=labels)
    assert [z.shape for z in out.logits] == [(6, 10), (6, 4)] == [z.shape for z in out.task_logits]
    assert [c.shape for c in out.ckn_hidden_states] == [(6, 4), (6, 8)] and out.tsn_features[1].shape == (6, 8)
    expected = m.heads[1](out.ckn_hidden_states[-1] + out.tsn_features[1])
    torch.testing.assert_close(out.logits[1], expected)
    torch.testing.assert_close(out.task_logits[0], m.task_heads[0](out.tsn_features[0]))
    ce = sum(torch.nn.functional.cross_entropy(z, labels[:, k]) for k, z in enumerate(out.logits))
    torch.testing.assert_close(out.loss, ce)
    rgb = m(pixel_values=X.expand(-1, 3, -1, -1)).logits[0]  # a pipeline's RGB image of a gray digit
    torch.testing.assert_close(rgb, out.logits[0])


def test_removing_or_adding_task_networks_leaves_the_other_tasks_logits_unchanged():
    m = model()
    full = m(pixel_values=X).logits
    digit, rotation = m.assemble(["digit"]), m.assemble([1])
    assert digit.config.task_names == ["digit"] and len(digit.tsns) == 1 and rotation.config.num_labels == 4
    assert torch.equal(digit(pixel_values=X).logits[0], full[0])
    assert torch.equal(rotation(pixel_values=X).logits[0], full[1])
    assert digit.config.id2label == {i: str(i) for i in range(10)}  # one task: its own labels
    reordered = m.assemble([1, 0])(pixel_values=X).logits  # adding the rotation network back, in another order
    assert torch.equal(reordered[0], full[1]) and torch.equal(reordered[1], full[0])
    with torch.no_grad():  # another task's network changes: this task's prediction does not
        m.tsns[0].projection.weight.add_(1.0)
    assert torch.equal(m(pixel_values=X).logits[1], full[1]) and not torch.equal(m(pixel_values=X).logits[0], full[0])
    assert torch.equal(rotation(pixel_values=X).logits[0], full[1])  # the assembled model owns its weights


def test_save_load_bit_exact_with_the_auto_classes_and_push_with_a_card(tmp_path, fake_hub):
    m = model(teacher_feature_sizes=[6, 12])
    assert len(m.feature_projectors) == 2
    m.save_pretrained(tmp_path / "kf")
    loaded = T.AutoModel.from_pretrained(tmp_path / "kf", trust_remote_code=False).eval()
    assert type(loaded) is KnowledgeFactorModel and loaded.config.task_labels == LABELS
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))
    assert list(m.state_dict()) == list(loaded.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(m(pixel_values=X).logits, loaded(pixel_values=X).logits))
    single = loaded.assemble(["rotation"])
    assert len(single.feature_projectors) == 0 and single.config.teacher_feature_sizes is None
    single.push_to_hub("tester/kf-rotation", results={"metrics": {"rotation accuracy": 0.9}})
    card = ModelCard.load("tester/kf-rotation")
    assert "knowledge-factorization" in card.data.tags and "| rotation accuracy | 0.9 |" in card.text
    pulled = T.AutoModel.from_pretrained("tester/kf-rotation", trust_remote_code=False).eval()
    assert torch.equal(pulled(pixel_values=X).logits[0], m(pixel_values=X).logits[1])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"task_names": ["digit"]}, "one name per task"),
        ({"task_labels": [LABELS[0], ["up"]]}, r"task_labels\[1\]` must list at least 2"),
        ({"teacher_feature_sizes": [6]}, "teacher_feature_sizes` has 1 entries"),
        ({"ckn_feature_layers": [0, 5]}, "names hidden state 5"),
        ({"ckn_config": [1, 2]}, "ckn_config` must be a dict"),
        ({"tsn_model_type": "no-such-model"}, "not a registered transformers model type"),
        ({"head_width": 3}, "unknown field"),
    ],
)
def test_bad_configs_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        config(**overrides)


def test_bad_task_ids_labels_and_teacher_features_are_named():
    m = model()
    with pytest.raises(ValueError, match=r"task_ids: 2 is not a task of this model \(it has 2: 0 'digit', 1 'rot"):
        m.assemble([0, 2])
    with pytest.raises(ValueError, match="'color' is not a task"):
        m.assemble(["color"])
    with pytest.raises(ValueError, match="must be distinct"):
        m.assemble([1, 1])
    with pytest.raises(ValueError, match=r"labels must have shape \(batch, num_tasks=2\)"):
        m(pixel_values=X, labels=torch.zeros(6, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels\[:, 1\] \(task 'rotation'\) must be class indices in \[0, 4\)"):
        m(pixel_values=X, labels=torch.tensor([[0, 4]] * 6))
    with pytest.raises(ValueError, match="no feature projectors"):
        m(pixel_values=X, teacher_features=[torch.randn(6, 6), torch.randn(6, 12)])
    with pytest.raises(ValueError, match="KnowledgeFactorConfig.ckn_config is empty"):
        KnowledgeFactorModel(KnowledgeFactorConfig())
