"""`hf-methods kf`: the two-task digits, a tiny run end to end (teacher, three arms per seed, the assembled factor
networks, the report, the models with their cards, push), and recipe values refused before any work."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hf_methods.hub import push_run
from hf_methods.models.knowledge_factor import KnowledgeFactorModel
from hf_methods.recipes.knowledge_factor.pipeline import ARMS, KFRecipe, main, two_task_digits


def test_the_second_task_is_a_quarter_turn_of_the_digit_image(tmp_path):
    recipe = KFRecipe(output_dir=str(tmp_path / "r"), max_train_samples=40)
    plain = KFRecipe(output_dir=str(tmp_path / "p"), max_train_samples=40, second_task="parity")
    turned, upright = two_task_digits(recipe)["train"], two_task_digits(plain)["train"]
    assert turned["labels"].shape == (40, 2) and set(turned["labels"][:, 1].tolist()) == {0, 1, 2, 3}
    assert torch.equal(turned["labels"][:, 0], upright["labels"][:, 0])
    assert torch.equal(upright["labels"][:, 1], upright["labels"][:, 0] % 2)
    for image, original, (_, k) in zip(turned["pixel_values"], upright["pixel_values"], turned["labels"]):
        assert torch.equal(image, torch.rot90(original, int(k), dims=(1, 2)))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"second_task": "colour"}, "second_task must be one of"),
        ({"teacher_hidden_sizes": [8], "teacher_depths": [1]}, "the teacher has 1 stages but the CKN 3"),
        ({"teacher_depths": [1, 1]}, "teacher_depths has 2 entries"),
        ({"seeds": [0, 0]}, "seeds must be distinct"),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        KFRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--max_train_samples", "64", "--epochs", "1", "--teacher_epochs", "1", "--seeds",
          "0", "1", "--teacher_hidden_sizes", "4", "8", "8", "--teacher_depths", "1", "1", "1", "--ckn_hidden_sizes",
          "4", "8", "8", "--tsn_hidden_sizes", "4", "--student_hidden_sizes", "4", "8", "8", "--batch_size", "32",
          "--save_checkpoints", "false"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == list(ARMS) and len(saved["runs"]) == 2 * len(ARMS)
    assert saved["verdict"].startswith("KF ") and "digit test accuracy" in saved["verdict"]
    for run in (r for r in saved["runs"] if r["arm"] == "KF"):  # a factor network alone predicts as the full model
        assert run["assembled_rotation_accuracy"] == run["rotation_accuracy"]
    full = KnowledgeFactorModel.from_pretrained(out / "kf", trust_remote_code=False)
    single = KnowledgeFactorModel.from_pretrained(out / "kf-rotation", trust_remote_code=False)
    assert full.config.task_names == ["digit", "rotation"] and len(full.feature_projectors) == 0
    assert single.config.task_names == ["rotation"] and (out / "report.png").is_file()
    assert push_run(out, "tester/kf-digits") == {
        "teacher": "tester/kf-digits-teacher",
        "kf": "tester/kf-digits",
        "kf-digit": "tester/kf-digits-digit",
        "kf-rotation": "tester/kf-digits-rotation",
    }
    card = ModelCard.load("tester/kf-digits-rotation")
    assert "knowledge-factorization" in card.data.tags and card.data.base_model == "tester/kf-digits-teacher"
    assert "rotation test accuracy (mean over seeds)" in card.text and "assembled, without fine-tuning" in card.text
