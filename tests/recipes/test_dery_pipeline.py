"""`hf-methods dery`: a tiny run end to end (zoo of three families, CKA, partition, a reassembly per budget, DeRy /
frozen / scratch fine-tuning, report, models with cards; the reassembled models load without the zoo and run in
pipeline(); push renames their sources to the pushed zoo repos), and recipe values refused before any work."""

import json
import shutil

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image
from sklearn.datasets import load_digits
from transformers import pipeline

from hf_methods.hub import push_run
from hf_methods.models.dery import DeRyForImageClassification
from hf_methods.recipes.dery.pipeline import ARMS, DeRyRecipe, main

TINY = ["--vgg_hidden_sizes", "4", "8", "--vgg_depths", "1", "--resnet_widths", "2", "--vit_depths", "2",
        "--vit_hidden_size", "8", "--vit_heads", "2", "--num_blocks", "2", "--zoo_steps", "2", "--finetune_steps", "2",
        "--probe_samples", "32", "--partition_trials", "3", "--search_trials", "2", "--naswot_batches", "1",
        "--min_params", "0", "2000", "--max_params", "2000", "20000", "--seeds", "0",
        "--save_checkpoints", "false"]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_blocks": 4, "vgg_depths": [1]}, r"num_blocks \(K\) = 4 is larger than zoo model 'vgg-d1''s block count"),
        ({"min_params": [0], "max_params": [10, 20]}, "one budget per position"),
        ({"min_params": [50], "max_params": [10]}, r"0 <= min_params < max_params, got \(50, 10\]"),
        ({"target_classes": [5, 5]}, "target_classes must be distinct"),
        ({"similarity_measure": "cca"}, "similarity_measure must be one of"),
    ],  # fmt: skip
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DeRyRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), *TINY])
    saved = json.loads((out / "report.json").read_text())
    assert list(saved["summary"]) == ["2k", "20k"] and len(saved["runs"]) == 2 * len(ARMS)
    assert [s["arm"] for s in saved["summary"]["2k"]] == list(ARMS)
    assert set(saved["outcome"].values()) <= {"win", "tie", "lose"} and saved["verdict"].startswith("DeRy ")
    assert [row["name"] for row in saved["zoo"]] == ["vgg-d1", "resnet12-w2", "vit-l2"]
    for search in saved["searches"]:
        assert search["min_params"] < search["params"] <= search["max_params"]
    assert "| budget | arm |" in (out / "report.md").read_text() and (out / "report.png").is_file()
    kept = {b: DeRyForImageClassification.from_pretrained(out / f"dery-{b}", trust_remote_code=False)
            for b in saved["summary"]}  # fmt: skip
    pushed = push_run(out, "tester/dery-digits")
    assert pushed["dery-2k"] == "tester/dery-digits-2k" and pushed["zoo/vit-l2"] == "tester/dery-digits-zoo-vit-l2"
    card = ModelCard.load("tester/dery-digits-2k")
    assert "dery" in card.data.tags and "DeRy accuracy (mean over seeds)" in card.text
    for block in kept["2k"].config.blocks:  # every block named, by the zoo repo it was pushed to
        zoo = next(r["name"] for r in saved["zoo"] if r["source"] == block["source"])
        assert f"tester/dery-digits-zoo-{zoo}" in card.text and f"`{block['start']}`" in card.text
    assert "preprocessor_config.json" in fake_hub.files("tester/dery-digits-2k")  # pipeline() works from the Hub
    shutil.rmtree(out / "zoo")  # a reassembled model needs no source to load
    again = DeRyForImageClassification.from_pretrained(out / "dery-20k", trust_remote_code=False)
    assert again.config.blocks == kept["20k"].config.blocks
    image = Image.fromarray(np.round(load_digits().images[0] * 255 / 16).astype(np.uint8))  # gray, as a user has it
    predictions = pipeline("image-classification", model=str(out / "dery-20k"))(image)  # saved to read RGB
    assert predictions and {p["label"] for p in predictions} <= {str(d) for d in range(5, 10)}
