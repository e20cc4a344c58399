"""`hf-methods haba`: a tiny run end to end (experts built by the recipe, random real / MTT / HaBa per seed and ipc,
the report, the HaBa sets with their cards, the generated sets as datasets on disk, push of both), and recipe values
refused before any work."""

import json

import pytest
import torch
from datasets import load_dataset, load_from_disk
from huggingface_hub import DatasetCard, ModelCard

from hf_methods.hub import push_run
from hf_methods.models.haba import HaBaDataset
from hf_methods.recipes.haba.pipeline import ARMS, HaBaRecipe, main
from hf_methods.trainers.haba_distiller import ExpertTrajectories


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"ipcs": [0, 10]}, "ipcs must be distinct integers >= 1"),
        ({"syn_steps": [20]}, "syn_steps needs one value per ipc"),
        ({"max_start_epoch": [2, 11]}, "exceeds expert_train_epochs"),
        ({"num_hallucinators": 0}, "num_hallucinators must be a positive integer"),
        ({"dsa_strategy": "crop_mixup"}, "unknown augmentation"),
        ({"hallucinator_init": "zeros"}, "hallucinator_init"),
    ],  # fmt: skip
)
def test_bad_recipes_are_clear_errors(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        HaBaRecipe(output_dir=str(tmp_path / "run"), **overrides)


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub, monkeypatch):
    from fake_hub import datasets_endpoint_patches

    for obj, name, value in datasets_endpoint_patches(fake_hub.endpoint):
        monkeypatch.setattr(obj, name, value)
    out = tmp_path / "run"
    main(["--output_dir", str(out), "--seeds", "0", "1", "--iterations", "2", "--syn_steps", "2", "2",
          "--max_start_epoch", "1", "1", "--num_experts", "2", "--expert_train_epochs", "3", "--eval_epochs", "1",
          "--network_width", "8", "--extractor_width", "8", "--ipcs", "1", "2"])  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert [(s["ipc"], s["arm"]) for s in saved["summary"]] == [(ipc, arm) for ipc in (1, 2) for arm in ARMS]
    assert len(saved["runs"]) == 2 * 2 * len(ARMS) and saved["verdict"].startswith("HaBa ")
    assert saved["storage"]["2"]["random real"] == 10 * 2 * 64 and saved["storage"]["2"]["HaBa"] > 10 * 2 * 64
    assert (out / "report.md").read_text().count("| HaBa |") >= 2 and (out / "report.png").is_file()
    experts = ExpertTrajectories.load(out / "experts" / "trajectories.safetensors")
    assert experts.num_experts == 2 and experts.num_epochs == 3
    model = HaBaDataset.from_pretrained(out / "haba-ipc2", trust_remote_code=False)
    assert model.config.images_per_class == 2 and model.config.num_hallucinators == 5
    generated = load_from_disk(str(out / "haba-ipc2-generated")).with_format("torch")
    assert len(generated) == 10 * 2 * 5 and generated.features["labels"].names == [str(d) for d in range(10)]
    torch.testing.assert_close(generated[:]["pixel_values"], model.generate().pixel_values.detach())

    pushed = push_run(out, "tester/haba-digits")
    assert pushed == {"haba-ipc2": "tester/haba-digits", "haba-ipc2-generated": "datasets/tester/haba-digits",
                      "haba-ipc1": "tester/haba-digits-ipc1",
                      "haba-ipc1-generated": "datasets/tester/haba-digits-ipc1"}  # fmt: skip
    card = ModelCard.load("tester/haba-digits")
    assert "haba" in card.data.tags and "test accuracy, HaBa (mean over 2 seeds)" in card.text
    assert "https://huggingface.co/datasets/tester/haba-digits" in card.text
    data_card = DatasetCard.load("tester/haba-digits", repo_type="dataset")
    assert "dataset-distillation" in data_card.data.tags and "tester/haba-digits" in data_card.text
    hub = load_dataset("tester/haba-digits", split="train", cache_dir=str(tmp_path / "cache")).with_format("torch")
    torch.testing.assert_close(hub[:]["pixel_values"], generated[:]["pixel_values"])
