"""`hf-methods dpc`: the label noise (DivideMix's protocol), a tiny run end to end (three arms per noise setting and
seed, the report, a pipeline-ready DPC model per noise setting with its card, push), and recipe values refused before
any work."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from sklearn.datasets import load_digits
from transformers import pipeline

from hf_methods.hub import push_run
from hf_methods.recipes.dpc.pipeline import ARMS, ASYMMETRIC, DPCRecipe, corrupt_labels, main


def test_symmetric_and_asymmetric_noise():
    labels = torch.arange(10).repeat(100)
    sym = corrupt_labels(labels, "sym:0.5", seed=0)
    changed = float((sym != labels).float().mean())
    assert 0.40 < changed < 0.50  # half re-drawn uniformly, a tenth of those to their own label
    assert torch.equal(corrupt_labels(labels, "sym:0.5", seed=0), sym)  # reproducible
    asym = corrupt_labels(labels, "asym:0.4", seed=0)
    flipped = asym != labels
    assert all(asym[i] == ASYMMETRIC[int(labels[i])] for i in flipped.nonzero().flatten().tolist())
    for c in range(10):  # about 40% of each flipped class, none of the others
        share = float(flipped[labels == c].float().mean())
        assert (0.25 < share < 0.55) if c in ASYMMETRIC else share == 0.0
    assert torch.equal(corrupt_labels(labels, "sym:0", seed=0), labels)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"noises": ["sym:1.5"]}, "noises entry 'sym:1.5' must be"),
        ({"noises": ["pair:0.2"]}, "noises entry 'pair:0.2' must be"),
        ({"noises": []}, "noises must name at least one setting"),
        ({"noises": ["sym:0.2", "sym:0.20"]}, "noises must be distinct"),
        ({"warmup_epochs": 40}, "warmup_epochs in \\[0, epochs\\)"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DPCRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--noises", "sym:0.5", "asym:0.4", "--epochs", "2", "--warmup_epochs", "1",
          "--seeds", "0", "1", "--hidden_sizes", "4", "8", "--aux_hidden_size", "8",
          "--batch_size", "256"])  # fmt: skip
    assert {"report.json", "report.md", "report.png", "dpc-sym50", "dpc-asym40"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in saved["settings"]] == ["sym50", "asym40"] and len(saved["runs"]) == 2 * 2 * len(ARMS)
    for setting in saved["settings"]:
        assert [a["arm"] for a in setting["summary"]] == list(ARMS)
        ce, small_loss, dpc = setting["summary"]
        assert ce["auc_after_warmup_mean"] is None  # cross-entropy never selects
        assert 0.0 <= small_loss["auc_after_warmup_mean"] <= 1.0 and 0.0 <= dpc["auc_after_warmup_mean"] <= 1.0
    assert 0.4 < saved["settings"][0]["noisy_share"] < 0.5
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in saved["runs"])
    assert saved["verdict"].startswith("DPC ") and "under asym:0.4 noise" in saved["verdict"]
    assert "## asym:0.4 noise" in (out / "report.md").read_text()
    digit = Image.fromarray((load_digits().images[0] * 16).astype(np.uint8))  # a gray 8x8 digit, as a user has one
    predictions = pipeline("image-classification", model=str(out / "dpc-sym50"))(digit)
    assert predictions and predictions[0]["label"] in [str(d) for d in range(10)]
    pushed = push_run(out, "tester/dpc-digits")
    assert pushed == {"dpc-sym50": "tester/dpc-digits-sym50", "dpc-asym40": "tester/dpc-digits-asym40"}
    card = ModelCard.load("tester/dpc-digits-asym40")
    assert "dpc" in card.data.tags and "asym:0.4 noise" in card.text
