"""`hf-methods lirf`: a tiny run end to end (original network, deposit with LIRF / random labels / L_T only,
withdrawal from the saved target and deposit module, report, cards, push of both), and recipe values refused before
any work."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from hf_methods.hub import push_run
from hf_methods.models.lirf import LIRFDepositModule
from hf_methods.recipes.lirf.pipeline import DEPOSIT_ARMS, WITHDRAWAL_ARMS, LIRFRecipe, main


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"deposit_classes": [2, 10]}, r"class 10 is outside the label space"),
        ({"split_module_name": "stages.5"}, r"not a split point of the vgg \(3 stages\)"),
        ({"architecture": "resnet"}, "architecture must be one of"),
        ({"recover_mode": "mean"}, "recover_mode must be one of"),
        ({"alpha": 2.0}, "alpha"),
        ({"seeds": []}, "seeds must be distinct"),
    ],
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        LIRFRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    from transformers import pipeline

    out = tmp_path / "run"
    main(["--output_dir", str(out), "--original_steps", "10", "--epochs", "1", "--seeds", "0", "--hidden_sizes",
          "4", "8", "8", "--save_checkpoints", "false"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [s["arm"] for s in saved["deposit_summary"]] == list(DEPOSIT_ARMS)
    assert [s["arm"] for s in saved["withdrawal_summary"]] == list(WITHDRAWAL_ARMS)
    assert len(saved["runs"]) == (len(DEPOSIT_ARMS) + len(WITHDRAWAL_ARMS))
    assert saved["plain_verdict"].startswith("Here LIRF ") and "H-mean" in saved["verdict"]
    files, memory = saved["saved"]["withdrawal_from_files"]["replace"], saved["saved"]["in_memory"]
    assert abs(files["avg_acc"] - memory["avg_acc"]) < 0.01  # the saved RGB parts withdraw the same network
    assert {"report.md", "report.png", "target", "deposit", "recover"} <= {p.name for p in out.iterdir()}
    deposit = LIRFDepositModule.from_pretrained(out / "deposit", trust_remote_code=False)
    assert deposit.config.deposit_classes == [0, 1, 2] and deposit.config.upper_fingerprint
    image = Image.fromarray((torch.rand(8, 8) * 255).to(torch.uint8).numpy())
    assert len(pipeline("image-classification", model=str(out / "recover"))(image)) == 5  # pipeline's top 5

    assert push_run(out, "tester/lirf-digits") == {
        "target": "tester/lirf-digits",
        "deposit": "tester/lirf-digits-deposit",
    }
    card = ModelCard.load("tester/lirf-digits")
    assert "lirf" in card.data.tags and "H-mean (mean over 1 seed)" in card.text
    card = ModelCard.load("tester/lirf-digits-deposit")
    assert 'AutoModelForImageClassification.from_pretrained("tester/lirf-digits")' in card.text
    assert card.data.base_model == "tester/lirf-digits"
