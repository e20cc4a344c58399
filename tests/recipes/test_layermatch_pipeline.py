"""`hf-methods layermatch`: the labeled/unlabeled split, a tiny run end to end (supervised only, FixMatch, LayerMatch
per seed, the report, the pipeline-ready model with its card, push) and recipe values refused."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hf_methods.data import digits
from hf_methods.hub import push_run
from hf_methods.recipes.layermatch.pipeline import ARMS, LayerMatchRecipe, main, split


def test_the_split_is_balanced_and_disjoint():
    train = digits(image_size=8)["train"]
    labeled, unlabeled = split(train, 40, seed=0)
    assert sorted(int(r["labels"]) for r in labeled) == sorted(list(range(10)) * 4)
    assert len(labeled) + len(unlabeled) == len(train)
    labeled_images = torch.stack([r["pixel_values"] for r in labeled])
    assert not any(torch.equal(u, labeled_images[0]) for u in unlabeled)
    assert [int(r["labels"]) for r in split(train, 40, seed=1)[0]] == [int(r["labels"]) for r in labeled]
    assert not torch.equal(torch.stack([r["pixel_values"] for r in split(train, 40, seed=1)[0]]), labeled_images)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"num_labels": 15}, "positive multiple of 10"), ({"unlabeled_ratio": 0}, "must be positive")],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        LayerMatchRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--steps", "6", "--seeds", "0", "1", "--threshold", "0.0", "--unlabeled_ratio",
          "2", "--hidden_sizes", "4", "8"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == list(ARMS) and len(saved["runs"]) == 2 * len(ARMS)
    for run in saved["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0
        assert (run["mask_rate"] is None) == (run["arm"] == "supervised only")  # threshold 0: every image counts
        assert run["mask_rate"] in (None, 1.0)
    assert saved["verdict"].startswith("LayerMatch ") and "| LayerMatch |" in (out / "report.md").read_text()
    assert push_run(out, "tester/layermatch-digits") == {"layermatch": "tester/layermatch-digits"}
    assert "layermatch" in ModelCard.load("tester/layermatch-digits").data.tags
