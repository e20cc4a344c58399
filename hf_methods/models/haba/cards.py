"""Cards of a HaBa set: the model card of the factorized set (bases + hallucinators) and the dataset card of the
images it generates, pushed as a Hub dataset repo."""

from __future__ import annotations

import os

from huggingface_hub import DatasetCard, DatasetCardData, hf_hub_download

from ...cards import LIBRARY_NAME, hub_id, link, run_model_card, usage_ref
from ...registry import citation

METHOD = "HaBa"
TAGS = ["haba", "dataset-distillation", "dataset-factorization", "synthetic"]

_DATASET_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

| | |
|---|---|
| images | {{ num_images }} ({{ num_classes }} classes x {{ ipc }} bases x {{ num_hallucinators }} hallucinators) |
| image shape | {{ shape }} (`pixel_values`, float32) |
| labels | {{ label_names }} |
| stored to make them | {{ stored }} floats (bases {{ bases }}, hallucinators {{ hallucinators }}, learning rate 1) |
| learning rate to train on it | {{ synthetic_lr }} (learned with the set) |
| pixel values | {{ pixel_stats }} |
{% if normalization %}| pixel space of the real images | {{ normalization }} |
{% endif %}
Columns: `pixel_values`, `labels` (a `ClassLabel`), `base_id` (the base within its class) and `hallucinator_id`.
{% if model_link %}
The factorized set itself (bases + hallucinators, {{ stored }} floats) is the model {{ model_link }}: load it with
`AutoModel.from_pretrained` (after `import hf_methods`) to generate these images or draw one hallucination per base
and epoch (`to_torch_dataset()`), as HaBa trains on it.
{% endif %}
## Use it

```python
from datasets import {{ loader }}

data = {{ load_call }}
```

Train a network on it with learning rate {{ synthetic_lr }} (what the distillation learned for its inner loop); HaBa's
own protocol draws one random hallucination of every base per epoch instead of all of them.
{% if training_setup %}
## How it was made

{{ training_setup }}
{% endif %}{% if metrics %}
## Results

| metric | value |
|---|---|
{% for name, value in metrics %}| {{ name }} | {{ value }} |
{% endfor %}{% endif %}{% if citation %}
## Citation

```bibtex
{{ citation }}
```
{% endif %}
Made with [hf-methods](https://github.com/hf-methods/hf-methods).
"""


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


def _what(model) -> str:
    c = model.config
    height, width = c.image_hw
    return (
        f"{c.num_labels} classes x {c.images_per_class} base(s) of {c.base_channels}x{height}x{width} and "
        f"{c.num_hallucinators} hallucinators"
    )


def haba_model_card(model, repo_or_path, results: dict | None = None):
    """Card of a `HaBaDataset` (the factorized set as a model): what it holds, its storage, how to generate from it."""
    results = results or {}
    floats = model.stored_floats()
    ref = usage_ref(repo_or_path)
    description = (
        f"A synthetic training set factorized into bases and hallucinators (HaBa): {_what(model)} "
        f"({floats['total']:,} stored floats: bases {floats['bases']:,}, hallucinators {floats['hallucinators']:,}). "
        f"Every (base, hallucinator) pair is one image: {model.num_images:,} images. Learned inner-loop learning rate "
        f"{model.learning_rate:.4g} (train networks on the set with it).\n\n"
        "```python\nimport hf_methods\nfrom transformers import AutoModel\n\n"
        f'haba = AutoModel.from_pretrained("{ref}")\n'
        "images = haba.generate()  # .pixel_values, .labels: every base through every hallucinator\n"
        "train_set = haba.to_torch_dataset()  # one random hallucination per base and fetch (HaBa's protocol)\n"
        "hf_dataset = haba.to_datasets()  # a datasets.Dataset of all of them\n```"
    )
    if results.get("dataset_repo"):
        description += f"\n\nThe generated images as a Hub dataset: {link_dataset(results['dataset_repo'])}."
    card = run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"HaBa synthetic set ({_what(model)})",
        description=description,
        tags=TAGS[1:],
        training_setup=results.get("training_setup"),
        metrics={k: v for k, v in (results.get("metrics") or {}).items() if isinstance(v, (int, float))},
        dataset=results.get("dataset"),
    )
    card.data.pipeline_tag = None  # it generates a training set: no transformers pipeline task fits
    return card


def link_dataset(repo_id: str) -> str:
    return f"[{repo_id}](https://huggingface.co/datasets/{repo_id})" if hub_id(repo_id) else str(repo_id)


def haba_dataset_card(model, repo_or_path, results: dict | None = None) -> DatasetCard:
    """Dataset card of the set `model` generates, for a folder written by `save_to_disk` or a Hub dataset repo."""
    results = results or {}
    c = model.config
    floats = model.stored_floats()
    height, width = c.image_hw
    on_hub = not isinstance(repo_or_path, os.PathLike) and hub_id(repo_or_path) is not None
    ref = str(repo_or_path) if on_hub else os.path.abspath(repo_or_path)
    names = model.label_names()
    data = DatasetCardData(
        license="apache-2.0",
        task_categories=["image-classification"],
        tags=["hf-methods", *TAGS],
        size_categories=[_size_category(model.num_images)],
        pretty_name=f"HaBa synthetic set: {_what(model)}",
        source_datasets=[results["dataset_id"]] if results.get("dataset_id") else None,
        library_name=LIBRARY_NAME,
    )
    normalization = None
    if c.image_mean is not None and c.image_std is not None:
        mean, std = list(c.image_mean), list(c.image_std)
        normalization = f"(x - image_mean) / image_std per channel, image_mean {mean}, image_std {std}"
    import torch

    with torch.no_grad():
        pixels = model.generate().pixel_values.float()
    pixel_stats = (f"from {pixels.min():.3g} to {pixels.max():.3g}, mean {pixels.mean():.3g}, std {pixels.std():.3g} "
                   "(distillation does not hold them to the real images' range; standardize before training a "
                   "network without normalization layers)")  # fmt: skip
    model_ref = results.get("model_repo")
    metrics = [(k, f"{v:.4g}") for k, v in (results.get("metrics") or {}).items() if isinstance(v, (int, float))]
    source = f" from {results['dataset']}" if results.get("dataset") else ""
    return DatasetCard.from_template(
        data,
        template_str=_DATASET_TEMPLATE,
        title=f"HaBa synthetic training set{source}",
        description=(
            f"{model.num_images:,} synthetic images generated by a HaBa factorized data set{source}: every stored base "
            "through every hallucinator (Liu et al., *Dataset Distillation via Factorization*, NeurIPS 2022)."
        ),
        num_images=f"{model.num_images:,}",
        num_classes=c.num_labels,
        ipc=c.images_per_class,
        num_hallucinators=c.num_hallucinators,
        shape=f"{c.num_channels} x {height} x {width}",
        label_names=", ".join(names) if len(names) <= 20 else f"{len(names)} classes",
        stored=f"{floats['total']:,}",
        bases=f"{floats['bases']:,}",
        hallucinators=f"{floats['hallucinators']:,}",
        synthetic_lr=f"{model.learning_rate:.4g}",
        normalization=normalization,
        pixel_stats=pixel_stats,
        model_link=link(model_ref) if model_ref else None,
        loader="load_dataset" if on_hub else "load_from_disk",
        load_call=f'load_dataset("{ref}", split="train")' if on_hub else f'load_from_disk("{ref}")',
        training_setup=results.get("training_setup"),
        metrics=metrics,
        citation=citation(METHOD),
    )


def push_generated_dataset(
    model, repo_id: str, *, results=None, private=None, token=None, commit_message=None, revision=None, dataset=None
):
    """`Dataset.push_to_hub` of the generated set, then its dataset card merged into the metadata datasets wrote
    (`dataset_info` and `configs` stay, so `load_dataset(repo_id)` reads the declared features). Two commits: datasets
    writes the data files and its README, the card replaces the README."""
    if not hub_id(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}.")
    dataset = dataset if dataset is not None else model.to_datasets()
    dataset.push_to_hub(repo_id, private=private, token=token, revision=revision,
                        commit_message=commit_message or "Upload the HaBa generated set")  # fmt: skip
    readme = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision, token=token)
    written = DatasetCard.load(readme)
    card = haba_dataset_card(model, repo_id, results)
    merged = written.data.to_dict()
    merged.update({k: v for k, v in card.data.to_dict().items() if v is not None})
    card.data = DatasetCardData(**merged)
    return card.push_to_hub(
        repo_id, repo_type="dataset", token=token, revision=revision, commit_message="Add the HaBa dataset card"
    )
