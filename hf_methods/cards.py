"""Model cards for learngenes, descendants and distilled students, rendered from `hub_cards/`.

Every card works with what is known: a learngene pushed on its own gets a card from the model alone; one
pushed by the main job also carries the run's teacher, results and stored-parameter ratio. `base_model` is
only ever a Hub id, never a local path.
"""

from __future__ import annotations

import os
import re
from importlib import resources

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .registry import citation
from .report import fmt_params, learngene_verdict

LIBRARY_NAME = "hf-methods"
# DeiT's distillation, cited by the cards of students a DistillationTrainer trained.
DISTILLATION_CITATION = """@inproceedings{touvron2021deit,
  title     = {Training data-efficient image transformers \\& distillation through attention},
  author    = {Touvron, Hugo and Cord, Matthieu and Massa, Francisco and Sablayrolles, Alexandre
               and J{\\'e}gou, Herv{\\'e}},
  booktitle = {International Conference on Machine Learning}, year = {2021}
}"""


def render_card(template: str, card_data: ModelCardData, **context) -> ModelCard:
    """Render `hub_cards/<template>.md` with `card_data` as YAML metadata and `context` for the body."""
    path = resources.files("hf_methods.hub_cards") / f"{template}.md"
    context.setdefault("pipeline_task", card_data.pipeline_tag)  # the pipeline snippet of cards given `input_format`
    return ModelCard.from_template(card_data, template_str=path.read_text(encoding="utf-8"), **context)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id(ref) -> str | None:
    """`ref` if it names a Hub repo (org/name) rather than a local folder, else None."""
    ref = None if ref is None else str(ref)
    return ref if ref and _HUB_ID.match(ref) and not os.path.exists(ref) else None


def usage_ref(repo_or_path) -> str:
    """What a card's usage snippet loads: the Hub id, or the local folder's absolute path (a relative one fails as
    soon as the snippet runs from another directory, and would be taken for a repo id). A `Path` is always local."""
    if not isinstance(repo_or_path, os.PathLike) and hub_id(repo_or_path):
        return str(repo_or_path)
    return os.path.abspath(repo_or_path)


def link(ref) -> str | None:
    if ref is None:
        return None
    return f"[{ref}](https://huggingface.co/{ref})" if hub_id(ref) else str(ref)


def _pipeline_tag(model_class: str) -> str | None:
    for suffix, tag in (
        ("ForImageClassification", "image-classification"),
        ("ForCausalLM", "text-generation"),
        ("LMHeadModel", "text-generation"),
        ("ForSequenceClassification", "text-classification"),
        ("ForMaskedLM", "fill-mask"),
    ):
        if model_class.endswith(suffix):
            return tag
    return "feature-extraction"


def _auto_class(model_class: str) -> str:
    tag = _pipeline_tag(model_class)
    return {
        "image-classification": "AutoModelForImageClassification",
        "text-generation": "AutoModelForCausalLM",
        "text-classification": "AutoModelForSequenceClassification",
        "fill-mask": "AutoModelForMaskedLM",
    }.get(tag, "AutoModel")


def _data(name, tags, model_class, base_model=None, relation=None, accuracy=None, metric_name=None, dataset=None):
    tag = _pipeline_tag(model_class)
    results = None
    if accuracy is not None:
        results = [
            EvalResult(
                task_type=tag,
                dataset_type=dataset or "custom",
                dataset_name=dataset or "custom",
                metric_type="accuracy",
                metric_value=round(float(accuracy), 4),  # 0.8806, not 0.8805555555555555
                metric_name=metric_name,
            )
        ]
    extra = {"base_model_relation": relation} if base_model and relation else {}
    return ModelCardData(
        library_name=LIBRARY_NAME,
        license="apache-2.0",
        pipeline_tag=tag,
        tags=["hf-methods", *tags],
        base_model=base_model,
        model_name=name,
        eval_results=results,
        **extra,
    )


def learngene_card(learngene, repo_or_path, results: dict | None = None, descendant_links: dict | None = None):
    """Card of a learngene; `results` is the main job's report (teacher, accuracies, descendants)."""
    method = learngene.method_name
    base_class = learngene.config.base_model_class
    teacher = (results or {}).get("teacher") or {}
    teacher_ref = teacher.get("hub_id") or teacher.get("path") or teacher.get("source")
    gene = (results or {}).get("learngene") or {}
    rows = (results or {}).get("descendants") or []
    descendant_links = descendant_links or {}
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["learngene", method.lower(), "distillation"],
        base_class,
        base_model=hub_id(teacher_ref),
        accuracy=gene.get("aux_accuracy"),
        metric_name="auxiliary network accuracy",
        dataset=(results or {}).get("dataset_id"),
    )
    return render_card(
        "learngene",
        data,
        title=f"{method} learngene" + (f" ({results['dataset']})" if (results or {}).get("dataset") else ""),
        method=method,
        base_model_class=base_class,
        teacher_link=link(teacher_ref),
        teacher_params=fmt_params(teacher["params"]) if teacher.get("params") else None,
        teacher_layers=teacher.get("num_layers"),
        teacher_accuracy=f"{teacher['accuracy']:.3f}" if teacher.get("accuracy") is not None else None,
        learngene_params=fmt_params(learngene.learngene_num_parameters()),
        layer_params=fmt_params(learngene.layer_num_parameters()),
        layer_description=learngene.gene_description,
        aux_num_layers=learngene.config.aux_num_layers,
        aux_accuracy=f"{gene['aux_accuracy']:.3f}" if gene.get("aux_accuracy") is not None else "-",
        depths=[r["depth"] for r in rows],
        repo_or_path=usage_ref(repo_or_path),
        training_setup=(results or {}).get("training_setup"),
        stored_ratio=f"{results['stored_ratio']:.1f}" if rows else None,
        descendants_total_params=fmt_params(results["descendants_total_params"]) if rows else None,
        descendants=[
            {
                "depth": r["depth"],
                "params": fmt_params(r["params"]),
                "link": descendant_links.get(r["depth"]),
                "accuracy": f"{r['learngene']['final_accuracy']:.3f}",
            }
            for r in rows
        ],
        verdicts=[(r["depth"], v) for r in rows if (v := learngene_verdict(r))],
        citation=citation(method),
    )


def descendant_card(
    model, repo_or_path, results: dict | None = None, learngene_ref: str | None = None, lora: bool = False
):
    """Card of a model expanded from a learngene; ancestry from `model.config.learngene_ancestry`. `lora`: the model
    is the frozen base of a LoRA adapter saved beside it (`<folder>-lora`), as the learngene gives it."""
    ancestry = getattr(model.config, "learngene_ancestry", None) or {}
    method = ancestry.get("method", "learngene")
    learngene_ref = learngene_ref or ancestry.get("learngene")
    depth = getattr(model.config.get_text_config(), "num_hidden_layers", None) or ancestry.get("num_layers")
    row = next((r for r in (results or {}).get("descendants", []) if r["depth"] == depth), None)
    lora_row = (row or {}).get("lora") if lora else None
    row = None if lora else row  # the base was not fine-tuned: its adapter's card has the results
    teacher = (results or {}).get("teacher") or {}
    teacher_ref = teacher.get("hub_id") or teacher.get("path") or teacher.get("source")
    model_class = type(model).__name__
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["learngene", method.lower(), "learngene-descendant"],
        model_class,
        base_model=hub_id(learngene_ref),
        relation=None if lora else "finetune",
        accuracy=row["learngene"]["final_accuracy"] if row else None,
        metric_name="accuracy after fine-tuning",
        dataset=(results or {}).get("dataset_id"),
    )
    curve = None
    if row:
        scratch = {p["step"]: p["accuracy"] for p in row["scratch"]["curve"]}
        curve = [
            {
                "epoch": p["epoch"],
                "step": p["step"],
                "learngene": f"{p['accuracy']:.3f}",
                "scratch": f"{scratch[p['step']]:.3f}" if p["step"] in scratch else "-",
            }
            for p in row["learngene"]["curve"]
        ]
    reach = row["steps_to_reach_scratch"] if row else None
    auto = _auto_class(model_class)
    report = getattr(model, "expansion_report", None)
    return render_card(
        "descendant",
        data,
        title=f"{method} descendant, {depth} layers",
        method=method,
        depth=depth,
        base_model_class=model_class,
        teacher_link=link(teacher_ref),
        learngene_link=link(learngene_ref) or "a learngene",
        learngene_params=fmt_params(results["learngene"]["params"]) if results else None,
        params=fmt_params(sum(p.numel() for p in model.parameters())),
        expansion_summary=(row or {}).get("expansion") or (report.summary() if report else "expanded with hf-methods"),
        auto_class=auto,
        repo_or_path=usage_ref(repo_or_path),
        input_format=(results or {}).get("input_format"),
        training_setup=(results or {}).get("training_setup"),
        curve=curve,
        steps_to_reach="not reached" if reach is None else reach,
        stored_ratio=f"{results['stored_ratio']:.1f}" if results else None,
        verdict=learngene_verdict(row) if row else None,
        lora=lora,
        lora_accuracy=f"{lora_row['final_accuracy']:.3f}" if lora_row else None,
        adapter=os.path.basename(str(repo_or_path).rstrip("/")) + "-lora",
        citation=citation(method),
    )


def distilled_card(student, teacher_ref, args, repo_or_path, metrics: dict | None = None, dataset: str | None = None):
    """Card of a student trained by `DistillationTrainer` (a learngene student gets the learngene card)."""
    teacher = {"source": str(teacher_ref) if teacher_ref else "a teacher model", "hub_id": hub_id(teacher_ref)}
    setup = (
        f"`DistillationTrainer`: distillation_type={args.distillation_type}, alpha={args.alpha}, "
        f"temperature={args.temperature}, kd_normalization={args.kd_normalization}; {args.num_train_epochs:g} epochs, "
        f"learning rate {args.learning_rate}, batch {args.per_device_train_batch_size} per device x "
        f"{args.gradient_accumulation_steps} accumulation steps."
    )
    metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    if hasattr(student, "learngene_num_parameters"):
        return learngene_card(student, repo_or_path, {"teacher": teacher, "training_setup": setup})
    model_class = type(student).__name__
    accuracy = metrics.get("eval_accuracy")
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["distillation", "knowledge-distillation"],
        model_class,
        base_model=teacher["hub_id"],
        accuracy=accuracy,
        metric_name="accuracy",
        dataset=dataset,
    )
    loss = {
        "soft": f"soft KD (KL x T^2, {args.kd_normalization}) weighted {args.alpha}",
        "hard": f"hard KD (cross-entropy on the teacher's argmax) weighted {args.alpha}",
        "none": "cross-entropy only",
    }[args.distillation_type]
    if args.distillation_type != "none" and args.alpha < 1:
        loss += f", plus cross-entropy on the labels weighted {1 - args.alpha:g}"
    return render_card(
        "distilled",
        data,
        title=f"{model_class} distilled from {teacher['source']}",
        model_class=model_class,
        params=fmt_params(sum(p.numel() for p in student.parameters())),
        teacher_link=link(teacher["source"]),
        teacher_params=None,
        loss_description=loss,
        auto_class=_auto_class(model_class),
        repo_or_path=usage_ref(repo_or_path),
        training_setup=setup,
        metrics=[(k, f"{v:.4g}") for k, v in sorted(metrics.items())],
        citation=DISTILLATION_CITATION,
    )


def _pool_row_name(c: dict, widths: list[int]) -> str:
    if c["j"] is None:
        return f"instance {c['front']} (width {widths[c['front']]})"
    return f"{c['front']}->{c['end']} blocks 0..{c['j']} + {c['k']}.."


def pool_card(pool, repo_or_path, results: dict | None = None, config_links: dict | None = None):
    """Card of a Learngene Pool; `results` is the pool job's report (teacher, per-network accuracy and FLOPs)."""
    from .pareto import fmt_flops

    results = results or {}
    teacher = results.get("teacher") or {}
    teacher_ref = teacher.get("hub_id") or teacher.get("source")
    widths = [c["hidden_size"] for c in pool.config.instance_configs]
    scored = {r["id"]: r for r in results.get("configs", [])}
    config_links = config_links or {}
    sizes = [pool.config_num_parameters(c["id"]) for c in pool.stitch_configs]
    configs = [
        {
            "id": c["id"],
            "name": _pool_row_name(c, widths),
            "depth": c["depth"],
            "params": fmt_params(size),
            "flops": fmt_flops(scored[c["id"]]["flops"]) if c["id"] in scored else "-",
            "accuracy": f"{scored[c['id']]['accuracy']:.3f}" if c["id"] in scored else "-",
            "link": config_links.get(c["id"]),
        }
        for c, size in zip(pool.stitch_configs, sizes)
    ]
    best = max(scored.values(), key=lambda r: r["accuracy"]) if scored else None
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["learngene", "learngene-pool", "model-stitching"],
        "ViTForImageClassification",
        base_model=hub_id(teacher_ref),
        accuracy=best["accuracy"] if best else None,
        metric_name="accuracy of the best network",
        dataset=results.get("dataset_id"),
    )
    return render_card(
        "learngene_pool",
        data,
        title="Learngene Pool" + (f" ({results['dataset']})" if results.get("dataset") else ""),
        num_instances=len(widths),
        pool_params=fmt_params(sum(p.numel() for p in pool.parameters())),
        num_configs=len(sizes),
        min_params=fmt_params(min(sizes)),
        max_params=fmt_params(max(sizes)),
        teacher_link=link(teacher_ref),
        instances=[
            {"width": w, "layers": c["num_hidden_layers"]} for w, c in zip(widths, pool.config.instance_configs)
        ],
        stitch_init=pool.config.stitch_init,
        stitch_directions=pool.config.stitch_directions,
        repo_or_path=usage_ref(repo_or_path),
        training_setup=results.get("training_setup"),
        configs=configs if scored or config_links else None,
        citation=citation("Learngene Pool"),
    )


def stitched_card(model, repo_or_path, results: dict | None = None, pool_ref: str | None = None):
    """Card of one network exported from a Learngene Pool (`model.config.stitch_config` says which)."""
    from .pareto import fmt_flops

    results = results or {}
    origin = getattr(model.config, "stitch_config", None) or {}
    pool_ref = pool_ref or origin.get("pool")
    teacher = results.get("teacher") or {}
    teacher_ref = teacher.get("hub_id") or teacher.get("source")
    row = next((r for r in results.get("configs", []) if r["id"] == origin.get("id")), None)
    needs_hf_methods = type(model).__name__ == "StitchedViTForImageClassification"
    depth = model.config.num_hidden_layers
    if needs_hf_methods:
        front, end = model.config.front_config, model.config.end_config
        description = (
            f"A {depth}-layer stitched ViT: blocks 0..{origin.get('j')} of instance {origin.get('front')} (width "
            f"{front['hidden_size']}), a linear stitch to width {end['hidden_size']}, then blocks "
            f"{origin.get('k')}..{model.config.instance_num_layers - 1} of instance {origin.get('end')}"
        )
    else:
        description = (
            f"Instance {origin.get('front')} of a Learngene Pool: a {depth}-layer "
            f"`{type(model).__name__}` of width {model.config.hidden_size}"
        )
    tags = ["learngene", "learngene-pool", "model-stitching"]
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        tags,
        "ViTForImageClassification",
        base_model=hub_id(pool_ref),
        relation="finetune" if hub_id(pool_ref) else None,
        accuracy=row["accuracy"] if row else None,
        metric_name="accuracy",
        dataset=results.get("dataset_id"),
    )
    return render_card(
        "stitched",
        data,
        title=f"Learngene Pool network {origin.get('id', '')}".strip(),
        description=description,
        params=fmt_params(sum(p.numel() for p in model.parameters())),
        flops=fmt_flops(row["flops"]) if row else None,
        accuracy=f"{row['accuracy']:.3f}" if row else None,
        needs_hf_methods=needs_hf_methods,
        input_format=results.get("input_format"),
        teacher_link=link(teacher_ref),
        pool_link=link(pool_ref) or "a Learngene Pool",
        pool_params=fmt_params(results["pool"]["params"]) if results.get("pool") else None,
        config_id=origin.get("id"),
        repo_or_path=usage_ref(repo_or_path),
        training_setup=results.get("training_setup"),
        citation=citation("Learngene Pool"),
    )


def gtl_card(gene, repo_or_path, results: dict | None = None):
    """Card of a GTL learngene: budget, lineage, and (from a recipe run) the downstream comparison."""
    results = results or {}
    base_class = gene.config.base_model_class
    lineage = [
        {
            "id": r.get("id"),
            "generation": r.get("generation"),
            "fitness": f"{r['fitness']:.3f}" if r.get("fitness") is not None else "-",
        }
        for r in gene.config.lineage or []
    ]
    downstream = [
        {"architecture": r["architecture"], "init": r["init"], "accuracy": f"{r['mean']:.3f} ± {r['std']:.3f}"}
        for r in results.get("downstream", [])
    ]
    best = next((r["mean"] for r in results.get("downstream", []) if r["init"] == "learngene"), None)
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["learngene", "gtl", "genetic-transfer-learning"],
        base_class,
        accuracy=best,
        metric_name="held-out task accuracy of descendants",
        dataset=results.get("dataset_id"),
    )
    base = gene.config.base_config or {}
    wider = {"hidden_sizes": [2 * w for w in base["hidden_sizes"]]} if base.get("hidden_sizes") else {}
    return render_card(
        "gtl",
        data,
        title="GTL learngene" + (f" ({results['dataset']})" if results.get("dataset") else ""),
        granularity=gene.config.granularity,
        base_model_class=base_class,
        gene_params=fmt_params(gene.num_gene_parameters),
        stored_fraction=f"{gene.stored_fraction:.1%}",
        gene_fraction=gene.config.gene_fraction,
        repo_or_path=usage_ref(repo_or_path),
        wider_example=repr(wider),
        lineage=lineage,
        downstream=downstream,
        training_setup=results.get("training_setup"),
        citation=citation("GTL"),
    )


def run_model_card(
    model,
    repo_or_path,
    *,
    method: str,
    title: str,
    description: str,
    tags=(),
    ancestor: str | None = None,
    ancestor_role: str = "teacher",
    relation: str | None = None,
    training_setup: str | None = None,
    metrics: dict | None = None,
    dataset: str | None = None,
    auto_class: str | None = None,
    pipeline_tag: str | None = None,
    input_format: str | None = None,
):
    """Card of a model a recipe trained that has no card of its own kind (a teacher, a student, a pre-trained base):
    what it is (`title`, `description`), where it came from (`ancestor`, e.g. the teacher, whose Hub id becomes
    `base_model`), how to load it (and, given the `input_format` its saved processor takes, run it as a pipeline),
    the run's `training_setup` and `metrics`, and `method`'s citation."""
    model_class = type(model).__name__
    needs_hf_methods = type(model).__module__.startswith("hf_methods")
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        [method.lower().replace(" ", "-"), *tags],
        model_class,
        base_model=hub_id(ancestor),
        relation=relation,
        dataset=dataset,
    )
    if pipeline_tag is not None:
        data.pipeline_tag = pipeline_tag
    metrics = [(k, f"{v:.4g}") for k, v in (metrics or {}).items() if isinstance(v, (int, float))]
    return render_card(
        "run_model",
        data,
        title=title,
        description=description,
        ancestor_link=link(ancestor),
        ancestor_role=ancestor_role,
        needs_hf_methods=needs_hf_methods,
        auto_class=auto_class or _auto_class(model_class),
        repo_or_path=usage_ref(repo_or_path),
        input_format=input_format,
        training_setup=training_setup,
        metrics=metrics,
        citation=citation(method),
    )


def teacher_card(model, repo_or_path, results: dict):
    """Card of a teacher a learngene or pool run trained or fine-tuned (`results["teacher"]`: its source, size and
    test accuracy): what it is, where it came from (a Hub model it was fine-tuned from becomes `base_model`)."""
    teacher, method = results["teacher"], results["method"]
    source = (results.get("recipe") or {}).get("teacher")
    return run_model_card(
        model,
        repo_or_path,
        method=method,
        title=f"{method} teacher ({results['dataset']})",
        description=f"A `{type(model).__name__}` ({fmt_params(teacher['params'])} parameters): "
        f"{teacher['source']}. The teacher the hf-methods {method} run distilled its learngene from and took its "
        "baselines' layers from.",
        ancestor=source if hub_id(source) else None,
        ancestor_role="pretrained model",
        relation="finetune" if hub_id(source) else None,
        training_setup=results.get("training_setup"),
        metrics={"test accuracy": teacher["accuracy"]},
        dataset=results.get("dataset_id"),
        input_format=results.get("input_format"),
    )


LORA_CITATION = """@inproceedings{hu2022lora,
  title     = {LoRA: Low-Rank Adaptation of Large Language Models},
  author    = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip and Allen-Zhu, Zeyuan and Li, Yuanzhi
               and Wang, Shean and Wang, Lu and Chen, Weizhu},
  booktitle = {International Conference on Learning Representations}, year = {2022}
}"""

# The adapter card's template (a candidate for hub_cards/adapter.md).
ADAPTER_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A [LoRA](https://arxiv.org/abs/2106.09685) adapter, made with [peft](https://github.com/huggingface/peft), of the
`{{ base_model_class }}` {{ base_link }}. It trains {{ trainable }} of {{ total }} parameters ({{ fraction }}): the
low-rank matrices{% if heads %} and the task head, trained in full{% endif %}; the base model's weights are unchanged.

| setting | value |
|---|---|
| rank `r` | {{ r }} |
| `lora_alpha` | {{ alpha }} |
| `lora_dropout` | {{ dropout }} |
| target modules | {{ targets }} |
| trained in full (`modules_to_save`) | {{ heads or "none" }} |

## Use it

```python
{% if needs_hf_methods %}# pip install hf-methods
import hf_methods  # registers the hf-methods classes with transformers' Auto classes
{% endif %}from peft import PeftModel
from transformers import {{ auto_class }}

base = {{ auto_class }}.from_pretrained("{{ base_ref }}")
model = PeftModel.from_pretrained(base, "{{ repo_or_path }}")
```
{% if metrics %}
## Results

| metric | value |
|---|---|
{% for name, value in metrics %}| {{ name }} | {{ value }} |
{% endfor %}{% endif %}
## Citation

```bibtex
{{ citation }}
```

Made with [hf-methods](https://github.com/hf-methods/hf-methods).
"""


def adapter_card(peft_model, base_model_ref: str, repo_or_path, results: dict | None = None) -> ModelCard:
    """Card of a LoRA adapter of a model hf-methods made: its settings, its size against the base model's, how
    to load it onto the base model, and `results` (numbers only). `base_model` is set only for a Hub id."""
    from .lora import trainable_parameters

    base = peft_model.get_base_model()
    model_class = type(base).__name__
    config = peft_model.peft_config[peft_model.active_adapter]
    targets = config.target_modules
    targets = f"`{targets}` (regex)" if isinstance(targets, str) else ", ".join(f"`{t}`" for t in sorted(targets))
    heads = ", ".join(f"`{m}`" for m in config.modules_to_save or [])
    trainable, total = trainable_parameters(peft_model)
    results = {k: v for k, v in (results or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    accuracy = results.get("accuracy", results.get("eval_accuracy"))
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["lora", "peft", "adapter"],
        model_class,
        base_model=hub_id(base_model_ref),
        relation="adapter",
        accuracy=accuracy,
        metric_name="accuracy",
    )
    data.library_name = "peft"
    return ModelCard.from_template(
        data,
        template_str=ADAPTER_TEMPLATE,
        title=f"LoRA adapter of {hub_id(base_model_ref) or os.path.basename(str(base_model_ref).rstrip('/'))}",
        base_model_class=model_class,
        base_link=link(base_model_ref),
        trainable=fmt_params(trainable),
        total=fmt_params(total),
        fraction=f"{trainable / total:.2%}" if total else "-",
        r=config.r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        targets=targets,
        heads=heads,
        needs_hf_methods=type(base).__module__.startswith("hf_methods"),
        auto_class=_auto_class(model_class),
        base_ref=str(base_model_ref),
        repo_or_path=usage_ref(repo_or_path),
        metrics=[(k, f"{v:.4g}") for k, v in results.items()],
        citation=LORA_CITATION,
    )
