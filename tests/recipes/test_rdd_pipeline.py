"""The RDD recipe: its scenes, its mIoU, its validation, and tiny runs end to end (trained and loaded teacher)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from torch import nn
from transformers import AutoModelForSemanticSegmentation, SegformerForSemanticSegmentation
from transformers.modeling_outputs import SemanticSegmenterOutput

from hf_methods.hub import push_run
from hf_methods.recipe import parse_recipe
from hf_methods.recipes.rdd.pipeline import DEFAULT_RECIPE, RDDRecipe, digit_scenes, main, segmentation_iou

TINY = {
    "num_train_images": 48,
    "num_test_images": 16,
    "teacher_widths": [4, 8, 8],
    "teacher_depths": [1, 1, 1],
    "teacher_head_size": 8,
    "teacher_epochs": 1,
    "student_widths": [4, 4, 4],
    "student_depths": [1, 1, 1],
    "student_head_size": 4,
    "student_epochs": 2,
    "min_kept": 100,
    "batch_size": 16,
    "rdd_warmup_ratio": 0.5,
}


def test_digit_scenes_labels_follow_the_pasted_digits_and_are_reproducible():
    data = digit_scenes(20, 10, canvas_size=32, max_digits=3, pixel_threshold=4.0, seed=1)
    again = digit_scenes(20, 10, canvas_size=32, max_digits=3, pixel_threshold=4.0, seed=1)
    other = digit_scenes(20, 10, canvas_size=32, max_digits=3, pixel_threshold=4.0, seed=2)
    train = data["train"][:]
    assert train["pixel_values"].shape == (20, 1, 32, 32) and train["labels"].shape == (20, 32, 32)
    assert torch.equal(train["pixel_values"], again["train"][:]["pixel_values"])
    assert not torch.equal(train["pixel_values"], other["train"][:]["pixel_values"])
    assert len(data["test"]) == 10
    labels, pixels = train["labels"], train["pixel_values"][:, 0]
    assert labels.min() >= 0 and labels.max() <= 10
    intensity = (pixels * 0.5 + 0.5) * 16  # back to 0..16
    assert torch.equal(labels > 0, intensity > 4.0 + 1e-4)  # foreground exactly above the threshold
    assert set(labels.unique().tolist()) <= set(range(11)) and len(labels.unique()) > 3
    # train and test scenes are built from disjoint source images: no test digit patch appears in a train scene
    patches = {tuple(p.flatten().tolist()) for p in _digit_patches(train["pixel_values"], train["labels"])}
    test = data["test"][:]
    assert not patches & {tuple(p.flatten().tolist()) for p in _digit_patches(test["pixel_values"], test["labels"])}


def _digit_patches(pixels, labels):
    """The 8x8 windows whose top-left pixel starts a foreground bounding box row/column (a cheap digit finder)."""
    found = []
    for image, label in zip(pixels[:, 0], labels):
        fg = label > 0
        for cls in label.unique().tolist():
            if cls:
                ys, xs = torch.nonzero(label == cls, as_tuple=True)
                y, x = int(ys.min()), int(xs.min())
                found.append(torch.where(fg[y : y + 8, x : x + 8], image[y : y + 8, x : x + 8], -1.0))
    return found


class FixedSegmenter(nn.Module):
    """Returns given logits (half resolution, to exercise the resize) whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("fixed", logits)
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, pixel_values):
        return SemanticSegmenterOutput(logits=self.fixed[: len(pixel_values)])


def test_segmentation_iou_against_a_hand_computation():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]])
    predictions = torch.tensor([[0, 1], [2, 0]])  # per 2x2 block: 0, 1, 2, 0 (the ignored block)
    logits = torch.nn.functional.one_hot(predictions, 4).permute(2, 0, 1).float().unsqueeze(0) * 10
    rows = [{"pixel_values": torch.zeros(1, 4, 4), "labels": labels[0]}]

    class Rows(list):
        def __getitem__(self, item):
            chunk = list.__getitem__(self, item)
            return {k: torch.stack([r[k] for r in chunk]) for k in chunk[0]}

    result = segmentation_iou(FixedSegmenter(logits), Rows(rows), num_classes=4)
    iou = result["per_class_iou"]
    # nearest-like blocks after bilinear upsampling of +-10 logits: each 2x2 block keeps its class
    assert iou == {"0": 1.0, "1": 1.0, "2": 1.0, "3": None}
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0
    wrong = logits.roll(1, dims=1)  # predict class c-1 (mod 4) everywhere
    result = segmentation_iou(FixedSegmenter(wrong), Rows(rows), num_classes=4)
    assert result["miou"] == 0.0 and result["per_class_iou"]["3"] is None  # class 3 absent from the labels


def test_rdd_recipe_validation():
    (recipe,) = parse_recipe(RDDRecipe, [], default_config=DEFAULT_RECIPE)
    assert recipe.student_arch == "upernet" and recipe.canvas_size == 32 and recipe.ohem_thresh == 0.7
    with pytest.raises(ValueError, match="student_arch"):
        parse_recipe(RDDRecipe, ["--student_arch", "resnet"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="rdd_warmup_ratio"):
        parse_recipe(RDDRecipe, ["--rdd_warmup_ratio", "1.5"], default_config=DEFAULT_RECIPE)
    with pytest.raises(ValueError, match="student_widths"):
        parse_recipe(RDDRecipe, ["--student_widths", "8", "16"], default_config=DEFAULT_RECIPE)  # 3 depths


def _run(tmp_path, name, **overrides):
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, **overrides}))
    out = tmp_path / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "hf_methods.recipes.rdd.pipeline", "--config", str(recipe), "--output_dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_rdd_recipe_end_to_end_push_then_with_the_saved_teacher_and_a_segformer_student(tmp_path, fake_hub):
    out, proc = _run(tmp_path, "run")
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("RDD done") and "+ RDD" in lines[-1]
    assert all(f"[{k}/6]" in proc.stdout for k in range(1, 7))
    report = json.loads((out / "report.json").read_text())
    rows = report["results"]
    assert set(rows) == {"teacher", "alone", "kd", "rdd"}
    assert report["student_steps"] == 6 and report["rdd_warmup_steps"] == 3  # 48 scenes / 16 x 2 epochs
    for row in rows.values():
        assert 0.0 <= row["miou"] <= 1.0 and len(row["per_class_iou"]) == 11
    assert rows["alone"]["params"] == rows["kd"]["params"] == rows["rdd"]["params"] < rows["teacher"]["params"]
    md = (out / "report.md").read_text()
    assert "student + RDD" in md and "digit 9" in md
    for folder in ("teacher", "student-alone", "student-kd", "student-rdd"):
        model = AutoModelForSemanticSegmentation.from_pretrained(out / folder)
        assert model.config.num_labels == 11
    assert not (out / "_trainer").exists()
    assert "test mIoU" in (out / "student-rdd" / "README.md").read_text()

    # `hf-methods push`: the trained teacher first, then the three students, the distilled ones citing the teacher
    pushed = push_run(out, "tester/rdd")
    assert pushed == {
        "teacher": "tester/rdd-teacher",
        "student-rdd": "tester/rdd",
        "student-kd": "tester/rdd-kd",
        "student-alone": "tester/rdd-alone",
    }
    card = ModelCard.load("tester/rdd")
    assert card.data.base_model == "tester/rdd-teacher" and card.data.pipeline_tag == "image-segmentation"
    assert ModelCard.load("tester/rdd-alone").data.base_model is None
    remote = AutoModelForSemanticSegmentation.from_pretrained("tester/rdd")
    local = AutoModelForSemanticSegmentation.from_pretrained(out / "student-rdd")
    for key, value in local.state_dict().items():
        assert torch.equal(remote.state_dict()[key], value), key

    # a given teacher is loaded, not trained; a Segformer student (no aux head, 1/4-resolution logits) works
    # (in this process, through `main`, to spare a second start-up)
    recipe = tmp_path / "run2.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "teacher": str(out / "teacher"),
                "student_arch": "segformer",
                "student_widths": [8, 8, 8],
                "num_threads": None,
            }
        )
    )  # keep this process's torch threads
    out2 = tmp_path / "run2"
    main(["--config", str(recipe), "--output_dir", str(out2)])
    report2 = json.loads((out2 / "report.json").read_text())
    assert report2["teacher_source"] == str(out / "teacher") and not (out2 / "teacher").exists()
    assert report2["results"]["teacher"]["miou"] == pytest.approx(rows["teacher"]["miou"])
    assert isinstance(
        AutoModelForSemanticSegmentation.from_pretrained(out2 / "student-rdd"), SegformerForSemanticSegmentation
    )


def test_a_killed_rdd_run_continues_from_its_teacher_and_finished_students(tmp_path, monkeypatch, capsys):
    """Killed while training the KD student (3rd training: teacher, alone, KD): the rerun takes the teacher and the
    student alone from the folder (its stage lines say so) and ends with the scores and weights of an uninterrupted
    run."""
    from killed_runs import comparable, kill_and_rerun, same_weights

    from hf_methods.recipes.rdd import pipeline

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    whole = main(["--config", str(config), "--output_dir", str(tmp_path / "whole")])
    out = tmp_path / "resumed"
    capsys.readouterr()
    resumed = kill_and_rerun(monkeypatch, pipeline, "train", 2, ["--config", str(config), "--output_dir", str(out)])
    rerun = capsys.readouterr().out.split("[1/6]")[-1]  # the rerun's lines
    assert rerun.count("(done by an earlier attempt of this run)") == 2
    assert comparable(resumed, out) == comparable(whole, tmp_path / "whole")
    for folder in ("teacher", "student-alone", "student-kd", "student-rdd"):
        assert same_weights(tmp_path / "whole" / folder, out / folder), folder
