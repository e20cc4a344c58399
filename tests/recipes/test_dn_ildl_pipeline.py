"""`hf-methods dn-ildl`: the dependent noise, a tiny run end to end (features from the recipe's VGG, three fits per
seed, the six metrics, the report, the fitted map with its card, push), and recipe values refused before any work."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hf_methods.hub import push_run
from hf_methods.models.dn_ildl import DNILDLForLabelDistribution
from hf_methods.recipes.dn_ildl.pipeline import ARMS, DNILDLRecipe, corrupt, main


def test_the_noise_depends_on_the_instance_and_the_labels_and_stays_a_distribution(tmp_path):
    recipe = DNILDLRecipe(output_dir=str(tmp_path / "r"), feature_noise_rows=2, label_noise_rows=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    d = torch.softmax(torch.randn(50, 10, generator=g, dtype=torch.float64), 1)
    noisy = corrupt(x, d, recipe, seed=0)
    torch.testing.assert_close(noisy.sum(1), torch.ones(50, dtype=torch.float64))
    assert (noisy >= 0).all() and not torch.allclose(noisy, d)
    quiet = DNILDLRecipe(output_dir=str(tmp_path / "q"), feature_noise_rows=0, label_noise_rows=0)
    torch.testing.assert_close(corrupt(x, d, quiet, seed=0), d)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_train": 0}, "num_train must be a positive integer"),
        ({"label_noise_rows": 11}, "at most 10"),
        ({"seeds": []}, "seeds must be distinct"),
    ],  # fmt: skip
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DNILDLRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--num_train", "60", "--num_test", "20", "--backbone_steps", "2", "--seeds", "0",
          "1", "--hidden_sizes", "4", "8"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == list(ARMS) and len(saved["runs"]) == 2 * len(ARMS)
    assert saved["verdict"].startswith("DN-ILDL ") and "least squares" in saved["verdict"]
    model = DNILDLForLabelDistribution.from_pretrained(out / "dn-ildl", trust_remote_code=False)
    assert model.config.num_features == 8 and model.config.num_labels == 10
    assert push_run(out, "tester/dn-ildl-digits") == {"dn-ildl": "tester/dn-ildl-digits"}
    card = ModelCard.load("tester/dn-ildl-digits")
    assert "dn-ildl" in card.data.tags and "cosine (mean over seeds)" in card.text
