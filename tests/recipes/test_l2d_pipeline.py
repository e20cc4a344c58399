import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors import safe_open

from hf_methods.hub import push_run
from hf_methods.models.label_query import LabelQueryForMultiLabelClassification
from hf_methods.recipe import parse_recipe
from hf_methods.recipes.l2d.pipeline import (
    DEFAULT_RECIPE,
    L2DRecipe,
    main,
    multi_digit_images,
    multilabel_scores,
)
from hf_methods.trainers.multilabel_kd_trainer import PROJECTION_FILE, PROJECTION_NAME

TINY = {
    "num_train_images": 64,
    "num_test_images": 32,
    "teacher_hidden_size": 16,
    "teacher_num_layers": 1,
    "teacher_num_attention_heads": 2,
    "teacher_epochs": 1,
    "student_hidden_size": 8,
    "student_num_layers": 1,
    "student_num_attention_heads": 2,
    "student_epochs": 1,
    "decoder_dim": 8,
    "decoder_heads": 2,
    "decoder_ffn": 16,
    "batch_size": 32,
}


def _run(tmp_path, name, *extra):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_methods.recipes.l2d.pipeline",
            "--config",
            str(recipe),
            "--output_dir",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_l2d_recipe_runs_a_tiny_config_end_to_end_and_pushes(tmp_path, fake_hub):
    out, proc = _run(tmp_path, "run")
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("L2D done") and "with L2D" in lines[-1]
    assert all(f"[{k}/6]" in proc.stdout for k in range(1, 7))
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["students"]] == ["bce", "softmax_kd", "l2d"]
    for row in [report["teacher"], *report["students"]]:
        assert 0 <= row["mAP"] <= 1 and 0 <= row["micro_f1"] <= 1
    assert (
        len({r["params"] for r in report["students"]}) == 1
        and report["teacher"]["params"] > report["students"][0]["params"]
    )
    markdown = (out / "report.md").read_text()
    assert "| student + L2D |" in markdown and "| teacher |" in markdown and "mAP" in markdown
    teacher = LabelQueryForMultiLabelClassification.from_pretrained(out / "teacher")
    for name in ("bce", "softmax_kd", "l2d"):
        student = LabelQueryForMultiLabelClassification.from_pretrained(out / "students" / name)
        assert student.config.backbone_config["hidden_size"] == 8
    assert not (out / "_trainer").exists()

    assert teacher.config.d_model == 8
    assert "mAP" in (out / "teacher" / "README.md").read_text()
    assert "student + L2D" in (out / "students" / "l2d" / "README.md").read_text()

    # `hf-methods push`: the trained teacher first, then the three students with cards pointing at it
    pushed = push_run(out, "tester/l2d")
    assert pushed == {
        "teacher": "tester/l2d-teacher",
        "students/l2d": "tester/l2d",
        "students/bce": "tester/l2d-bce",
        "students/softmax_kd": "tester/l2d-softmax-kd",
    }
    card = ModelCard.load("tester/l2d")
    assert card.data.base_model == "tester/l2d-teacher" and "l2d" in card.data.tags
    assert 'from_pretrained("tester/l2d")' in card.text
    assert ModelCard.load("tester/l2d-bce").data.base_model is None  # BCE alone: no teacher
    remote = LabelQueryForMultiLabelClassification.from_pretrained("tester/l2d")
    local = LabelQueryForMultiLabelClassification.from_pretrained(out / "students" / "l2d")
    for key, value in local.state_dict().items():
        assert torch.equal(remote.state_dict()[key], value), key

    # again (in process) from the saved teacher, with a narrower student decoder: L2D trains a projection, saved
    # beside the student and not in it
    again = tmp_path / "again"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report2 = main(
            [
                "--config",
                str(tmp_path / "tiny.yaml"),
                "--output_dir",
                str(again),
                "--teacher",
                str(out / "teacher"),
                "--student_decoder_dim",
                "4",
                "--push_to_hub",
                "true",
                "--hub_model_id",
                "tester/l2d-again",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert report2["teacher"]["source"] == str(out / "teacher")
    assert report2["teacher"]["mAP"] == pytest.approx(report["teacher"]["mAP"])
    assert (again / "students" / "l2d" / PROJECTION_FILE).exists()
    assert not (again / "students" / "softmax_kd" / PROJECTION_FILE).exists()
    with safe_open(again / "students" / "l2d" / "model.safetensors", framework="pt") as f:
        assert not any(k.startswith(PROJECTION_NAME) for k in f.keys())
    # the recipe pushed at the end (`push_to_hub`): the students, the projection beside the L2D one; no teacher
    assert {"tester/l2d-again", "tester/l2d-again-bce", "tester/l2d-again-softmax-kd"} <= set(fake_hub.repos)
    assert "tester/l2d-again-teacher" not in fake_hub.repos
    from huggingface_hub import list_repo_files

    assert PROJECTION_FILE in list_repo_files("tester/l2d-again")


def test_multi_digit_images_are_deterministic_and_split_by_source_image():
    data = multi_digit_images(canvas_size=24, num_train=200, num_test=100, min_digits=2, max_digits=5, seed=3)
    again = multi_digit_images(canvas_size=24, num_train=200, num_test=100, min_digits=2, max_digits=5, seed=3)
    for split in ("train", "test"):
        assert torch.equal(data[split][:]["pixel_values"], again[split][:]["pixel_values"])
    train, test = data["train"][:], data["test"][:]
    assert train["pixel_values"].shape == (200, 1, 24, 24) and train["labels"].shape == (200, 10)
    used = {
        split: set(rows["digit_sources"].flatten().tolist()) - {-1}
        for split, rows in (("train", train), ("test", test))
    }
    assert used["train"] and used["test"] and not used["train"] & used["test"]
    counts = (train["digit_sources"] >= 0).sum(1)
    assert counts.min() >= 2 and counts.max() <= 5
    from sklearn.datasets import load_digits

    target = load_digits().target
    for sources, labels in zip(train["digit_sources"][:20], train["labels"][:20]):
        expected = torch.zeros(10)
        expected[[int(target[s]) for s in sources if s >= 0]] = 1.0
        assert torch.equal(labels, expected)
    # more training images do not change the test images
    bigger = multi_digit_images(canvas_size=24, num_train=300, num_test=100, min_digits=2, max_digits=5, seed=3)
    assert torch.equal(bigger["test"][:]["pixel_values"], test["pixel_values"])


def test_scores_and_recipe_validation():
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]]).numpy()
    perfect = multilabel_scores(labels * 0.9 + 0.05, labels)
    assert perfect == {"mAP": 1.0, "micro_f1": 1.0}
    (recipe,) = parse_recipe(L2DRecipe, [], default_config=DEFAULT_RECIPE)
    assert recipe.canvas_size == 16 and (recipe.lambda_cd, recipe.lambda_id, recipe.lambda_le) == (100.0, 1000.0, 0.1)
    with pytest.raises(ValueError, match="canvas_size"):
        parse_recipe(L2DRecipe, ["--canvas_size", "20"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="max_digits"):
        parse_recipe(L2DRecipe, ["--max_digits", "5"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="bce_reduction"):
        parse_recipe(L2DRecipe, ["--bce_reduction", "avg"], default_config=DEFAULT_RECIPE)


def test_a_killed_l2d_run_continues_from_its_trained_teacher_and_students(tmp_path, monkeypatch):
    """Killed while training the second student: the rerun takes the teacher and the BCE student from the folder
    and ends with the scores and student weights of an uninterrupted run."""
    from safetensors.torch import load_file

    from hf_methods.recipes.l2d import pipeline

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    whole = pipeline.main(["--config", str(config), "--output_dir", str(tmp_path / "whole")])
    train, calls = pipeline.MultiLabelKDTrainer.train, []

    def killed(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # the teacher, then the BCE student
            raise KeyboardInterrupt("killed")
        return train(self, *args, **kwargs)

    out = tmp_path / "resumed"
    argv = ["--config", str(config), "--output_dir", str(out)]
    monkeypatch.setattr(pipeline.MultiLabelKDTrainer, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.main(argv)
    monkeypatch.setattr(pipeline.MultiLabelKDTrainer, "train", train)
    calls.clear()
    resumed = pipeline.main(argv)
    assert resumed["students"] == whole["students"]  # scores and train losses
    for name in ("bce", "softmax_kd", "l2d"):
        a = load_file(tmp_path / "whole" / "students" / name / "model.safetensors")
        b = load_file(out / "students" / name / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
