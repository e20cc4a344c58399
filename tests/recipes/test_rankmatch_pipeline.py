"""`hf-methods rankmatch`: blended digits are label distributions, a tiny run end to end (three arms per seed, the six
metrics, the report, the RankMatch model with its card, push), and recipe values refused before any work."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hf_methods.data import digit_blends, digits
from hf_methods.hub import push_run
from hf_methods.models.label_distribution import LabelDistributionModel
from hf_methods.recipes.rankmatch.pipeline import ARMS, RankMatchRecipe, main
from hf_methods.trainers.ldl_losses import METRICS


def test_blends_are_label_distributions_of_two_or_three_digits():
    rows = digits(image_size=8)["train"][:]
    images, dists = digit_blends(rows["pixel_values"], rows["labels"], 200, seed=0)
    torch.testing.assert_close(dists.sum(1), torch.ones(200))
    assert set((dists > 0).sum(1).tolist()) == {2, 3} and images.shape == (200, 1, 8, 8)
    assert torch.equal(digit_blends(rows["pixel_values"], rows["labels"], 200, seed=0)[0], images)
    assert not torch.equal(digit_blends(rows["pixel_values"], rows["labels"], 200, seed=1)[1], dists)
    with pytest.raises(ValueError, match="concentration must be a positive integer"):
        digit_blends(rows["pixel_values"], rows["labels"], 2, seed=0, concentration=0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_labeled": 0}, "num_labeled must be a positive integer"),
        ({"num_weak_views": 0}, "num_weak_views must"),
        ({"seeds": [2, 2]}, "seeds must be distinct"),
    ],  # fmt: skip
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        RankMatchRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--num_labeled", "16", "--num_unlabeled", "64", "--num_test", "32", "--steps", "3",
          "--seeds", "0", "1", "--hidden_sizes", "4", "8", "--batch_size", "8"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == list(ARMS) and len(saved["runs"]) == 2 * len(ARMS)
    for run in saved["runs"]:
        assert 0 <= run["chebyshev"] <= 1 and 0 <= run["intersection"] <= 1 and run["kl"] >= 0
    assert all(f"{m}_mean" in saved["summary"][0] for m in METRICS)
    assert saved["verdict"].startswith("RankMatch ") and "in cosine" in saved["verdict"]
    assert "| RankMatch |" in (out / "report.md").read_text() and (out / "report.png").is_file()
    model = LabelDistributionModel.from_pretrained(out / "rankmatch", trust_remote_code=False)
    assert model.config.num_labels == 10
    assert push_run(out, "tester/rankmatch-digits") == {"rankmatch": "tester/rankmatch-digits"}
    card = ModelCard.load("tester/rankmatch-digits")
    assert "label-distribution-learning" in card.data.tags and "cosine (mean over seeds)" in card.text
