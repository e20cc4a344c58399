"""The GTL recipe: its validation, and a tiny run end to end (evolution, baselines, downstream, report, push)."""

import json

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModel

from hf_methods import GTLModel, VGGForImageClassification
from hf_methods.hub import push_run
from hf_methods.recipe import parse_recipe
from hf_methods.recipes.gtl.pipeline import DEFAULT_RECIPE, INITS, GTLRecipe, main

TINY = {
    "image_size": 8,
    "hidden_sizes": [4, 8],
    "depths": [1, 1],
    "descendant_hidden_sizes": [8, 8],
    "descendant_depths": [1, 2],
    "population_size": 4,
    "generations": 2,
    "k_shot": 3,
    "query_shots": 3,
    "individual_steps": 2,
    "downstream_tasks": 2,
    "downstream_k_shot": 3,
    "downstream_query_shots": 3,
    "downstream_steps": 2,
    "reference_steps": 2,
    "batch_size": 8,
    "disable_tqdm": True,
}


def argv(out, **overrides):
    flags = ["--output_dir", str(out)]
    for key, value in {**TINY, **overrides}.items():
        flags += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return flags


def test_default_recipe_parses_and_holds_out_the_downstream_classes():
    (recipe,) = parse_recipe(GTLRecipe, [], default_config=DEFAULT_RECIPE)
    assert recipe.gene_fraction == 0.2 and recipe.granularity == "channel"
    assert not set(recipe.base_classes) & set(recipe.held_out_classes)
    assert set(yaml.safe_load(DEFAULT_RECIPE.read_text())) <= {f for f in GTLRecipe.__dataclass_fields__}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"held_out_classes": [5, 6, 7]}, "share"),
        ({"base_classes": [0, 1, 12]}, "classes 0..9"),
        ({"backbone": "alexnet"}, "backbone"),
        ({"downstream_tasks": 0}, "downstream_tasks"),
    ],
)
def test_bad_recipes_are_clear_errors_before_any_training(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        GTLRecipe(output_dir=str(tmp_path), **overrides)
    assert not any(tmp_path.iterdir())


def test_tiny_run_end_to_end_then_push(tmp_path, fake_hub):
    out = tmp_path / "run"
    results = main(argv(out))
    assert {"report.json", "report.md", "report.png", "learngene", "evolution"} <= {p.name for p in out.iterdir()}
    assert not (out / "_trainer").exists()
    saved = json.loads((out / "report.json").read_text())
    assert saved["method"] == "GTL" and len(saved["generations"]) == 2
    assert len(saved["downstream"]) == 2 * len(INITS)
    for row in saved["downstream"]:
        assert len(row["accuracies"]) == 2 and 0 <= row["mean"] <= 1
    lineage = saved["learngene"]["lineage"]
    assert [r["generation"] for r in lineage] == [0, 1] and lineage[-1]["id"] == saved["learngene"]["id"]
    assert results["learngene"]["id"] == saved["learngene"]["id"]

    gene = AutoModel.from_pretrained(out / "learngene")
    assert type(gene) is GTLModel and gene.config.base_model_class == "VGGForImageClassification"
    assert saved["learngene"]["params"] == gene.num_gene_parameters
    torch.manual_seed(0)
    child = gene.expand(hidden_sizes=[8, 8], depths=[1, 2], num_labels=4)
    assert type(child) is VGGForImageClassification and child.expansion_report.num_parameters("learngene") > 0

    report = (out / "report.md").read_text()
    assert "| generation | best | mean | best individual |" in report and "random gene" in report

    pushed = push_run(out, "tester/gtl-digits")
    assert pushed == {"learngene": "tester/gtl-digits"}
    card = ModelCard.load("tester/gtl-digits")
    assert "gtl" in card.data.tags and "| ancestor (vgg [4, 8], depths [1, 1]) | learngene |" in card.text
    assert lineage[-1]["id"] in card.text
