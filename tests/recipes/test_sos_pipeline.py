"""`hf-methods sos`: a tiny run end to end (plain vs SOS per seed, accuracy, training loss, Hessian trace, the shifts
keeping the classifier's outputs, the pipeline-ready model with its card, push) and recipe values refused."""

import json

import pytest
from huggingface_hub import ModelCard

from hf_methods.hub import push_run
from hf_methods.recipes.optimum_shifting.pipeline import ARMS, SOSRecipe, main


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"num_samples": 0}, "must be positive"), ({"seeds": []}, "seeds must be distinct and at least one")],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        SOSRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--epochs", "2", "--seeds", "0", "1", "--hessian_probes", "2",
          "--hidden_sizes", "4", "32", "--num_samples", "16"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["summary"]] == list(ARMS) and len(saved["runs"]) == 2 * len(ARMS)
    sos_runs = [r for r in saved["runs"] if r["arm"] == "SOS"]
    assert all(len(r["shifts"]) == 2 for r in sos_runs)  # one shift per epoch end
    for shift in (s for r in sos_runs for s in r["shifts"]):
        assert shift["rows"] == 16 and shift["norm_after"] <= shift["norm_before"]
        assert shift["max_output_change"] < 1e-6
    assert all(r["hessian_trace"] == r["hessian_trace"] and r["train_loss"] > 0 for r in saved["runs"])
    assert "SOS" in saved["verdict"] and "| SOS |" in (out / "report.md").read_text()
    assert push_run(out, "tester/sos-digits") == {"sos": "tester/sos-digits"}
    assert "optimum-shifting" in ModelCard.load("tester/sos-digits").data.tags
