import json
import os
import subprocess
import sys

import torch
import transformers as T
import yaml
from huggingface_hub import ModelCard

import hf_methods  # noqa: F401
from hf_methods import SWSModel
from hf_methods.pareto import choose, load_entries

TINY = {
    "image_size": 8,
    "patch_size": 4,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "teacher_num_layers": 2,
    "teacher_epochs": 1,
    "stage_sizes": [1, 2],
    "distill_epochs": 1,
    "depths": [1, 3, 4],
    "finetune_epochs": 1,
    "batch_size": 32,
    "max_train_samples": 96,
}


def test_sws_cli_runs_a_tiny_recipe_end_to_end(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hf_methods.cli", "sws", "--config", str(recipe), "--output_dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("SWS done")

    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "SWS" and report["recipe"]["aux_num_layers"] == 3  # derived from stage_sizes
    # default rule: depth 1 -> first stage; depth 3 = the aux depth -> its own stages; depth 4 -> proportional
    assert [r["layers_source"] for r in report["descendants"]] == [[0], [0, 1, 1], [0, 1, 1, 1]]
    learngene = T.AutoModel.from_pretrained(out / "learngene")
    assert type(learngene) is SWSModel and learngene.config.stage_sizes == [1, 2]
    assert "sws" in ModelCard.load(out / "learngene" / "README.md").data.tags
    desc = T.AutoModelForImageClassification.from_pretrained(out / "descendants" / "depth-4")
    assert desc.config.learngene_ancestry["layers_source"] == [0, 1, 1, 1]

    # the report's choices: one SWS and one scratch entry per depth, with params and FLOPs, and the teacher-layer
    # baselines where the depth is at most the teacher's (2 layers)
    entries = load_entries([out / "report.json"])
    assert sorted((e["method"], e["name"]) for e in entries) == sorted(
        [(m, f"depth {d}") for m in ("SWS", "scratch") for d in (1, 3, 4)]
        + [(m, "depth 1") for m in ("teacher layers (first)", "teacher layers (even)", "KD into teacher layers (even)")]
    )
    baseline = next(e for e in entries if e["method"] == "teacher layers (even)")
    assert baseline["stored_params"] == baseline["params"] == report["descendants"][0]["params"]
    sws = {e["name"]: e for e in entries if e["method"] == "SWS"}
    from hf_methods.data import gray_input  # the descendant is saved for RGB input; the report counts the trained one

    assert sws["depth 4"]["params"] == sum(p.numel() for p in gray_input(desc).parameters())
    assert sws["depth 1"]["flops"] < sws["depth 3"]["flops"] < sws["depth 4"]["flops"]
    assert sws["depth 4"]["stored_params"] == learngene.learngene_num_parameters()
    best = choose(entries, budget_params=sws["depth 3"]["params"], method="SWS")
    assert best["name"] in ("depth 1", "depth 3") and os.path.isdir(best["path"])
    assert torch.equal(
        T.AutoModelForImageClassification.from_pretrained(best["path"]).classifier.weight,
        T.AutoModelForImageClassification.from_pretrained(
            out / "descendants" / best["name"].replace(" ", "-")
        ).classifier.weight,
    )
