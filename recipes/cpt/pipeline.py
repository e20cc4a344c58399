"""The Consistent Proxy Tuning job on synthetic text, no network: a "large" GPT-2 pre-trained on a general corpus of
facts, a smaller "small" base pre-trained less, then a proxy tuned on a shifted target task with CPT and, on the same
data and budget, with plain Proxy-tuning. The report compares the deployed combinations
`z_large + alpha_test * (z_proxy - z_small)` on held-out target text, next to the large and small models alone.

    hf-methods cpt                                   # the embedded default, ~20 s on 2 CPUs
    hf-methods cpt --alpha_train 0.5                 # any recipe field can be overridden
    hf-methods cpt --push_to_hub true --hub_model_id org/cpt-facts   # large, small and both proxy-tuned models

Text: lines `fa=c;`, one character each: `f` names a function, `a` is a symbol, `c = table_f[a]` for a random
permutation `table_f` of the `num_symbols` symbols (drawn from the seed): a small world of facts. The general corpus
mixes `functions` (the last one rarer by default); the target task asks only about `target_functions`, facts the
large model knows partly and the small one hardly, so the proxy must supply what the large model lacks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.trainer_callback import PrinterCallback

from hf_methods import __version__
from hf_methods.cards import run_model_card
from hf_methods.cli import run_script
from hf_methods.models.proxy_tuned import ProxyTunedForCausalLM, proxy_from_small, proxy_tuned_card
from hf_methods.recipe import RecipeArguments, Run, num_parameters, parse_recipe, train, training_args
from hf_methods.report import fmt_params
from hf_methods.trainers.cpt_config import ConsistentProxyTuningConfig
from hf_methods.trainers.cpt_trainer import ConsistentProxyTuningTrainer, cache_logits
from hf_methods.trainers.resumable import ResumableTrainer

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "cpt" / "facts.yaml"
METHOD = "CPT"
_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FUNCTIONS = "FGHIJKLMNOPQRSTUVWXYZ"  # function names, never symbols (symbols use at most 0-9a-z...)
LINE = 5  # f a = c ;


@dataclass
class CPTRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`)."""

    output_dir: str = field(default="outputs/cpt-facts", metadata={"help": "Where models and the report go."})
    seed: int = field(default=0, metadata={"help": "Seed of the fact tables, the data, initializations and training."})
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Repo of the CPT proxy-tuned model (org/name); the plain one goes to <id>-plain, the large and "
            "small models it refers to to <id>-large and <id>-small."
        },
    )
    num_symbols: int = field(default=16, metadata={"help": "Symbols each function maps (2..36, one character each)."})
    lines_per_example: int = field(default=5, metadata={"help": "Facts per training sequence."})
    functions: str = field(
        default="FGH", metadata={"help": "Functions of the general pre-training corpus (capital letters)."}
    )
    function_weights: list[float] = field(
        default_factory=lambda: [0.4, 0.4, 0.2], metadata={"help": "Frequency of each general function."}
    )
    target_functions: str = field(default="H", metadata={"help": "Functions of the target task the proxy is tuned on."})
    general_examples: int = field(default=4000, metadata={"help": "Pre-training sequences (general corpus)."})
    target_train_examples: int = field(default=512, metadata={"help": "Target-task sequences the proxy is tuned on."})
    eval_examples: int = field(default=512, metadata={"help": "Held-out sequences (target task, and general corpus)."})
    large_hidden_size: int = field(default=64, metadata={"help": "Width of the large GPT-2."})
    large_num_layers: int = field(default=2, metadata={"help": "Depth of the large GPT-2."})
    large_num_heads: int = field(default=4, metadata={"help": "Attention heads of the large GPT-2."})
    large_steps: int = field(default=400, metadata={"help": "Pre-training steps of the large model."})
    small_hidden_size: int = field(default=32, metadata={"help": "Width of the small base GPT-2 (and of the proxy)."})
    small_num_layers: int = field(default=1, metadata={"help": "Depth of the small base GPT-2."})
    small_num_heads: int = field(default=2, metadata={"help": "Attention heads of the small GPT-2."})
    small_steps: int = field(default=150, metadata={"help": "Pre-training steps of the small base model."})
    pretrain_learning_rate: float = field(
        default=3e-3, metadata={"help": "Pre-training learning rate (AdamW, cosine)."}
    )
    proxy_steps: int = field(
        default=200, metadata={"help": "Tuning steps of the proxy, the same for CPT and plain Proxy-tuning."}
    )
    proxy_learning_rate: float = field(default=3e-3, metadata={"help": "Proxy tuning learning rate (AdamW, cosine)."})
    alpha_train: float = field(default=1.0, metadata={"help": "CPT's weight of z_proxy - z_small in training."})
    alpha_test: float = field(
        default=1.0, metadata={"help": "Weight of z_proxy - z_small at inference (both methods)."}
    )
    cache_large_logits: bool = field(
        default=True,
        metadata={
            "help": "Query the large model once per target example (a cached-logits column) instead of every step."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not 2 <= self.num_symbols <= 36:
            raise ValueError(f"num_symbols must be in 2..36 (one character per symbol), got {self.num_symbols}.")
        for name in ("functions", "target_functions"):
            names = getattr(self, name)
            if not names or any(f not in _FUNCTIONS for f in names) or len(set(names)) != len(names):
                raise ValueError(f"{name} must be distinct capital letters among {_FUNCTIONS!r}, got {names!r}.")
        if (
            len(self.function_weights) != len(self.functions)
            or any(w < 0 for w in self.function_weights)
            or sum(self.function_weights) <= 0
        ):
            raise ValueError(
                f"function_weights needs one non-negative weight per general function "
                f"({self.functions!r}), got {self.function_weights}."
            )
        for name in (
            "lines_per_example",
            "general_examples",
            "target_train_examples",
            "eval_examples",
            "large_steps",
            "small_steps",
            "proxy_steps",
            "large_hidden_size",
            "small_hidden_size",
            "large_num_layers",
            "small_num_layers",
            "large_num_heads",
            "small_num_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for size, heads in (("large_hidden_size", "large_num_heads"), ("small_hidden_size", "small_num_heads")):
            if getattr(self, size) % getattr(self, heads):
                raise ValueError(f"{size}={getattr(self, size)} must be divisible by {heads}={getattr(self, heads)}.")


# --- data -----------------------------------------------------------------------------------------------------------
def vocabulary(recipe: CPTRecipe) -> list[str]:
    names = sorted(set(recipe.functions) | set(recipe.target_functions))
    return ["^", *_SYMBOLS[: recipe.num_symbols], *names, "=", ";"]


def fact_tables(recipe: CPTRecipe) -> dict[str, list[int]]:
    """The world: one random permutation of the symbols per function, drawn from the seed."""
    rng = np.random.default_rng([recipe.seed, 1])
    names = sorted(set(recipe.functions) | set(recipe.target_functions))
    return {f: rng.permutation(recipe.num_symbols).tolist() for f in names}


def make_text(
    n: int, functions: str, weights: list[float] | None, tables: dict, recipe: CPTRecipe, rng: np.random.Generator
) -> list[str]:
    """`n` sequences `^` + `lines_per_example` facts `fa=c;`."""
    probs = np.asarray(weights if weights is not None else [1.0] * len(functions), dtype=float)
    probs = probs / probs.sum()
    texts = []
    for _ in range(n):
        lines = []
        for _ in range(recipe.lines_per_example):
            f = functions[rng.choice(len(functions), p=probs)]
            a = int(rng.integers(recipe.num_symbols))
            lines.append(f"{f}{_SYMBOLS[a]}={_SYMBOLS[tables[f][a]]};")
        texts.append("^" + "".join(lines))
    return texts


def encode(texts: list[str], vocab: list[str]) -> Dataset:
    index = {c: i for i, c in enumerate(vocab)}
    ids = [[index[c] for c in t] for t in texts]
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def answer_positions(recipe: CPTRecipe) -> torch.Tensor:
    """Positions holding an answer `c` (position 0 is `^`, each line is `f a = c ;`)."""
    return torch.tensor([1 + LINE * k + 3 for k in range(recipe.lines_per_example)])


# --- models ---------------------------------------------------------------------------------------------------------
def gpt2(recipe: CPTRecipe, which: str, vocab_size: int) -> GPT2LMHeadModel:
    width = getattr(recipe, f"{which}_hidden_size")
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=1 + LINE * recipe.lines_per_example,
        n_embd=width,
        n_layer=getattr(recipe, f"{which}_num_layers"),
        n_head=getattr(recipe, f"{which}_num_heads"),
        n_inner=4 * width,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=None,
    )
    return GPT2LMHeadModel(config)


def _args(recipe: CPTRecipe, work: Path, steps: int, lr: float, **overrides):
    """Every stage: `steps` steps, no weight decay, 5% warmup, no evaluation, no progress bar."""
    return training_args(
        recipe,
        work,
        learning_rate=lr,
        max_steps=steps,
        weight_decay=0.0,
        warmup_steps=0.05,
        eval_strategy="no",
        disable_tqdm=True,
        **overrides,
    )


@torch.no_grad()
def score(model, data: Dataset, answers: torch.Tensor, batch_size: int = 256) -> dict:
    """Held-out cross-entropy per token (all predicted tokens), on the answer tokens only, and answer accuracy."""
    model.eval()
    device = next(model.parameters()).device
    total = answer_total = correct = 0.0
    tokens = answer_tokens = 0
    for start in range(0, len(data), batch_size):
        ids = torch.tensor(data[start : start + batch_size]["input_ids"], device=device)
        logits = model(input_ids=ids).logits.float()[:, :-1]
        targets = ids[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        ce = ce.view(targets.shape)
        cols = (answers - 1).to(device)  # logits at position i predict token i + 1
        total += ce.sum().item()
        tokens += ce.numel()
        answer_total += ce[:, cols].sum().item()
        answer_tokens += ce[:, cols].numel()
        correct += (logits[:, cols].argmax(-1) == targets[:, cols]).sum().item()
    return {
        "loss": total / tokens,
        "answer_loss": answer_total / answer_tokens,
        "answer_accuracy": correct / answer_tokens,
    }


def _quiet(trainer: ResumableTrainer) -> ResumableTrainer:
    trainer.remove_callback(PrinterCallback)  # our own progress lines instead of the Trainer's metrics dicts
    return trainer


def run(recipe: CPTRecipe) -> dict:
    run = Run(recipe, stages=6, verbosity="error")
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()

    # 1. data, deterministic from the seed
    run.stage(
        f"making text: {recipe.general_examples} general sequences (functions {recipe.functions}), "
        f"{recipe.target_train_examples} + {recipe.eval_examples} target sequences ({recipe.target_functions})"
    )
    rng = np.random.default_rng(recipe.seed)
    vocab, tables = vocabulary(recipe), fact_tables(recipe)
    weights = recipe.function_weights
    general = encode(make_text(recipe.general_examples, recipe.functions, weights, tables, recipe, rng), vocab)
    general_eval = encode(make_text(recipe.eval_examples, recipe.functions, weights, tables, recipe, rng), vocab)
    target = encode(make_text(recipe.target_train_examples, recipe.target_functions, None, tables, recipe, rng), vocab)
    target_eval = encode(make_text(recipe.eval_examples, recipe.target_functions, None, tables, recipe, rng), vocab)
    answers = answer_positions(recipe)

    # 2-3. the large model and the small base model, pre-trained on the general corpus
    models = {}
    for which, steps in (("large", recipe.large_steps), ("small", recipe.small_steps)):
        transformers.set_seed(recipe.seed)
        model = gpt2(recipe, which, len(vocab))
        text = (
            f"pre-training the {which} model ({fmt_params(num_parameters(model))} parameters, {steps} steps on "
            "the general corpus)"
        )
        if run.resume_stage(text, which) is None:  # else an earlier attempt of this run saved it to out/<which>
            args = _args(recipe, run.trainer_dir(which), steps, recipe.pretrain_learning_rate)
            train(_quiet(ResumableTrainer(model=model, args=args, train_dataset=general)))
            run.save_model(model, which, base_card(model, run.out / which, which, recipe))
            run.save_stage(which, {})
        models[which] = GPT2LMHeadModel.from_pretrained(run.out / which)  # name_or_path = its folder (by reference)
    large, small = models["large"], models["small"]

    # 4-5. the proxy, tuned on the target task with CPT and with plain Proxy-tuning (same data, steps, seed)
    cached = cache_logits(target, large, "large_logits", batch_size=256) if recipe.cache_large_logits else target
    tuned, proxies = {}, {}
    for name, plain in (("cpt", False), ("plain", True)):
        label = (
            "plain Proxy-tuning (the proxy alone)"
            if plain
            else (
                f"CPT (alpha_train {recipe.alpha_train:g}"
                + (", large logits cached once)" if recipe.cache_large_logits else ")")
            )
        )
        key = f"proxy-{name}"
        if run.resume_stage(f"tuning the proxy with {label}, {recipe.proxy_steps} steps", key) is not None:
            # an earlier attempt of this run tuned it; the large and small models are out/large and out/small
            tuned[name] = ProxyTunedForCausalLM.from_pretrained(run.stage_folder(key), trust_remote_code=False)
            proxies[name] = tuned[name].proxy
            continue
        transformers.set_seed(recipe.seed)
        args = _args(
            recipe,
            run.trainer_dir(key),
            recipe.proxy_steps,
            recipe.proxy_learning_rate,
            cls=ConsistentProxyTuningConfig,
            alpha_train=recipe.alpha_train,
            alpha_test=recipe.alpha_test,
            plain_proxy_tuning=plain,
            large_logits_column="large_logits" if recipe.cache_large_logits and not plain else None,
        )
        trainer = ConsistentProxyTuningTrainer(
            model=proxy_from_small(small),
            args=args,
            large_model=large,
            small_model=small,
            train_dataset=target if plain else cached,
        )
        train(_quiet(trainer))
        proxies[name] = trainer.model
        tuned[name] = trainer.proxy_tuned_model()
        run.save_stage(key, {}, tuned[name])

    # 6. held-out scores, models saved by reference, report
    run.stage("scoring on held-out target text and saving the proxy-tuned models (by reference) and the report")
    rows = {
        "large": score(large, target_eval, answers),
        "small": score(small, target_eval, answers),
        "cpt": score(tuned["cpt"], target_eval, answers),
        "plain": score(tuned["plain"], target_eval, answers),
        "cpt_proxy_alone": score(proxies["cpt"], target_eval, answers),
        "plain_proxy_alone": score(proxies["plain"], target_eval, answers),
    }
    train_rows = {name: score(model, target, answers) for name, model in tuned.items()}  # what CPT optimizes
    general_rows = {"large": score(large, general_eval, answers), "small": score(small, general_eval, answers)}
    examples = _examples(tuned, large, target_eval, vocab, recipe) if run.is_main_process else []
    results = {
        "method": METHOD,
        "dataset": f"synthetic facts ({recipe.num_symbols} symbols): general {recipe.functions} -> target "
        f"{recipe.target_functions}",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "vocabulary": "".join(vocab),
        "params": {"large": num_parameters(large), "small": num_parameters(small)},
        "target_eval": rows,
        "target_train": train_rows,
        "general_eval": general_rows,
        "cpt_no_worse_than_plain": rows["cpt"]["loss"] <= rows["plain"]["loss"],
        "examples": examples,
        "hf_methods_version": __version__,
    }
    results["elapsed_s"] = run.elapsed()
    run.wait_for_everyone()
    if not run.is_main_process:
        return results
    for name, model in tuned.items():  # config + proxy/ + card; the large and small models by reference
        run.save_model(model, f"proxy-tuned-{name}", _tuned_card(model, run.out / f"proxy-tuned-{name}", name, results))
    run.write_report(results, markdown=_markdown(results))
    cpt, plain = rows["cpt"], rows["plain"]
    run.finish(
        f"CPT done in {results['elapsed_s']:.0f}s: held-out target loss of the proxy-tuned model "
        f"{cpt['loss']:.4f} with CPT vs {plain['loss']:.4f} with plain Proxy-tuning "
        f"({'no worse' if results['cpt_no_worse_than_plain'] else 'WORSE'}); large alone {rows['large']['loss']:.4f}, "
        f"small alone {rows['small']['loss']:.4f}; answer accuracy {cpt['answer_accuracy']:.3f} vs "
        f"{plain['answer_accuracy']:.3f}. Report and models in {run.out}/"
    )
    return results


def base_card(model, repo_or_path, which: str, recipe: CPTRecipe | dict):
    """Card of the large or small GPT-2 the recipe pre-trained (what the proxy-tuned models refer to)."""
    recipe = recipe if isinstance(recipe, dict) else dataclasses.asdict(recipe)
    role = (
        "the large model (the black box the proxy steers)"
        if which == "large"
        else "the small base model (the proxy starts as a copy of it; its logits are subtracted at inference)"
    )
    return run_model_card(
        model,
        repo_or_path,
        method=METHOD,
        title=f"CPT {which} model ({type(model).__name__}, synthetic facts)",
        description=f"A {recipe[f'{which}_num_layers']}-layer GPT-2 of width {recipe[f'{which}_hidden_size']} "
        f"({fmt_params(num_parameters(model))} parameters) pre-trained {recipe[f'{which}_steps']} steps on "
        f"made-up facts by the hf-methods CPT recipe: {role}.",
        tags=["proxy-tuning"],
    )


def _tuned_card(model, repo_or_path, name: str, results: dict):
    metrics = {f"held-out target {k}": v for k, v in results["target_eval"][name].items()}
    return proxy_tuned_card(model, repo_or_path, {"training_setup": results["training_setup"], "metrics": metrics})


def _examples(tuned: dict, large, data: Dataset, vocab: list[str], recipe: CPTRecipe, count: int = 3) -> list[dict]:
    """Greedy continuations of a few held-out prompts (`^fa=`) by the large model and both proxy-tuned models."""
    rows = []
    for i in range(count):
        ids = torch.tensor(data[i]["input_ids"][:4]).unsqueeze(0)  # ^fa=
        row = {
            "prompt": "".join(vocab[t] for t in ids[0]),
            "truth": "".join(vocab[t] for t in data[i]["input_ids"][4:6]),
        }
        for name, model in (("large", large), ("cpt", tuned["cpt"]), ("plain", tuned["plain"])):
            out = model.generate(
                ids.to(model.device),
                max_new_tokens=2,
                do_sample=False,
                attention_mask=torch.ones_like(ids).to(model.device),
                pad_token_id=0,
            )
            row[name] = "".join(vocab[t] for t in out[0, ids.shape[1] :].tolist())
        rows.append(row)
    return rows


def _training_setup(recipe: CPTRecipe) -> str:
    return (
        f"Synthetic text (seed {recipe.seed}): sequences of {recipe.lines_per_example} facts fa=c; (c = table_f[a], "
        f"one random permutation of {recipe.num_symbols} symbols per function). Large GPT-2 "
        f"({recipe.large_num_layers} layers, width {recipe.large_hidden_size}) pre-trained "
        f"{recipe.large_steps} steps and small GPT-2 ({recipe.small_num_layers} layers, width "
        f"{recipe.small_hidden_size}) "
        f"{recipe.small_steps} steps on {recipe.general_examples} general sequences (functions {recipe.functions}, "
        f"weights {recipe.function_weights}); AdamW lr {recipe.pretrain_learning_rate}, cosine, batch "
        f"{recipe.batch_size}. "
        f"Proxy = a copy of the small model, tuned {recipe.proxy_steps} steps (AdamW lr {recipe.proxy_learning_rate}, "
        f"cosine) on {recipe.target_train_examples} target sequences (functions {recipe.target_functions}) with "
        f"`ConsistentProxyTuningTrainer`: CPT (alpha_train {recipe.alpha_train:g}) and plain Proxy-tuning on the same "
        f"data, steps and seed. Deployed as z_large + {recipe.alpha_test:g} * (z_proxy - z_small)."
    )


def _markdown(results: dict) -> str:
    """report.md: the held-out table, the verdict, the general-text sanity check, a few continuations."""
    rows, params = results["target_eval"], results["params"]
    names = {
        "large": f"large model alone ({fmt_params(params['large'])})",
        "small": f"small base model alone ({fmt_params(params['small'])})",
        "plain": "proxy-tuned, plain Proxy-tuning",
        "cpt": "proxy-tuned, **CPT**",
        "plain_proxy_alone": "plain-tuned proxy alone",
        "cpt_proxy_alone": "CPT-tuned proxy alone",
    }
    alpha = results["recipe"]["alpha_test"]
    lines = [
        f"# Consistent Proxy Tuning on {results['dataset']}",
        "",
        results["training_setup"],
        "",
        f"Held-out target text. Proxy-tuned rows are the deployed model z_large + {alpha:g} * (z_proxy - z_small); "
        "loss is the cross-entropy per predicted token (nats), answer rows count only the results `c`.",
        "",
        "| model | loss | answer loss | answer accuracy |",
        "|---|---|---|---|",
    ]
    for key in ("large", "small", "plain", "cpt", "plain_proxy_alone", "cpt_proxy_alone"):
        r = rows[key]
        lines.append(f"| {names[key]} | {r['loss']:.4f} | {r['answer_loss']:.4f} | {r['answer_accuracy']:.3f} |")
    verdict = "no worse than" if results["cpt_no_worse_than_plain"] else "WORSE than"
    g = results["general_eval"]
    lines += [
        "",
        f"CPT's proxy-tuned model is **{verdict}** plain Proxy-tuning on held-out target text "
        f"({rows['cpt']['loss']:.4f} vs {rows['plain']['loss']:.4f}; the uniformly drawn symbols alone cost "
        f"{math.log(results['recipe']['num_symbols']) / LINE:.4f} per token).",
        "",
        "On the target training text (the objective CPT optimizes directly): CPT "
        f"{results['target_train']['cpt']['loss']:.4f}, "
        f"plain Proxy-tuning {results['target_train']['plain']['loss']:.4f}.",
        "",
        f"General held-out text (sanity): large {g['large']['loss']:.4f}, small {g['small']['loss']:.4f}.",
        "",
        "Greedy continuations (prompt -> next two tokens; truth, large, plain, CPT):",
        "",
    ]
    lines += [
        f"- `{e['prompt']}` -> truth `{e['truth']}`, large `{e['large']}`, plain `{e['plain']}`, CPT `{e['cpt']}`"
        for e in results["examples"]
    ]
    lines += [
        "",
        "The proxy-tuned models are saved by reference in `proxy-tuned-cpt/` and `proxy-tuned-plain/` "
        "(config + the proxy; the large and small models are loaded from `large/` and `small/`).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(CPTRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_cpt_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a CPT run. A proxy-tuned model refers to its large and small models, so those go first,
    to `<repo_id>-large` and `<repo_id>-small`; then the CPT proxy-tuned model to `repo_id` and the plain one to
    `<repo_id>-plain`, their configs pointing at those Hub ids (only the proxies' weights are uploaded)."""
    from hf_methods.hub import push_saved_model

    refs = {which: f"{repo_id}-{which}" for which in ("large", "small")}
    pushed = {}
    for which, target in refs.items():
        model = GPT2LMHeadModel.from_pretrained(out_dir / which)
        push_saved_model(
            out_dir / which,
            target,
            base_card(model, target, which, results["recipe"]),
            commit_message=f"Upload the {which} model",
            **hub_kwargs,
        )
        pushed[which] = target
    for name, target in (("cpt", repo_id), ("plain", f"{repo_id}-plain")):
        folder = out_dir / f"proxy-tuned-{name}"
        model = ProxyTunedForCausalLM.from_pretrained(folder)
        model.config.large_model_name_or_path, model.config.small_model_name_or_path = refs["large"], refs["small"]
        model.push_to_hub(
            target,
            card=_tuned_card(model, target, name, results),
            commit_message=f"Upload the {'CPT' if name == 'cpt' else 'plain'} proxy-tuned model",
            **hub_kwargs,
        )
        pushed[f"proxy-tuned-{name}"] = target
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.cpt.pipeline"))
