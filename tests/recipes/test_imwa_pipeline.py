"""`hf-methods imwa`: a tiny run end to end (four arms per seed on long-tailed digits, the report, the pipeline-ready
IMWA model with its card, push), the long-tailed split, and recipe values refused before any work."""

import json

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image
from sklearn.datasets import load_digits
from transformers import pipeline

from hf_methods.data import digits
from hf_methods.hub import push_run
from hf_methods.recipes.imwa.pipeline import ARMS, IMWARecipe, long_tailed, main


def test_the_training_split_is_long_tailed_and_the_test_split_untouched():
    data = digits(image_size=8)
    subset, counts = long_tailed(data["train"], 100.0)
    assert counts[0] >= 100 and counts[9] == 1 and counts == sorted(counts, reverse=True)
    labels = subset[:]["labels"].tolist()
    assert [labels.count(c) for c in range(10)] == counts and len(subset) == sum(counts)
    assert long_tailed(data["train"], 1.0)[1] == [counts[0]] * 10  # ratio 1: balanced


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"episodes": 3}, "episodes=3 must divide steps=320"),
        ({"imbalance_ratio": 0.5}, "imbalance_ratio must be >= 1"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"replicas": 0}, "replicas, episodes and steps must be positive"),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        IMWARecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--steps", "4", "--episodes", "2", "--replicas", "2", "--seeds", "0", "1",
          "--hidden_sizes", "4", "8"])  # fmt: skip
    assert {"report.json", "report.md", "report.png", "imwa"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == list(ARMS) and len(saved["runs"]) == 2 * len(ARMS)
    assert [s["compute_steps"] for s in saved["summary"]] == [4, 8, 8, 8]  # the averages cost M x T steps
    assert all(0.0 <= r["balanced_accuracy"] <= 1.0 and len(r["recall"]) == 10 for r in saved["runs"])
    assert saved["verdict"].startswith("IMWA ") and "vanilla averaging" in saved["verdict"]
    assert "| IMWA | 8 |" in (out / "report.md").read_text()
    digit = Image.fromarray((load_digits().images[0] * 16).astype(np.uint8))  # a gray 8x8 digit, as a user has one
    predictions = pipeline("image-classification", model=str(out / "imwa"))(digit)
    assert predictions and predictions[0]["label"] in [str(d) for d in range(10)]
    pushed = push_run(out, "tester/imwa-digits")
    assert pushed == {"imwa": "tester/imwa-digits"}
    card = ModelCard.load("tester/imwa-digits")
    assert "imwa" in card.data.tags and "IMWA" in card.text
