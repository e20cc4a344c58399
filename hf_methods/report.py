"""The report of a learngene run: per depth, learngene-initialized vs scratch, as Markdown, JSON and a plot."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .pareto import _atomic_write, fmt_flops, fmt_params, size_axis

__all__ = [
    "BASELINE_LABELS",
    "summarize_arms",
    "verdict_against",
    "VERDICT_RULE",
    "fmt_params",
    "learngene_figure",
    "learngene_markdown",
    "learngene_verdict",
    "steps_to_reach",
    "write_figure_atomic",
    "write_folder_atomic",
    "write_report",
    "write_text_atomic",
]


TIE = 0.01  # final accuracies closer than this are reported as a tie
# the learngene job's baselines (`baselines` of its recipe), as reports and `choices` name them
BASELINE_LABELS = {
    "first": "teacher layers (first)",
    "even": "teacher layers (even)",
    "kd": "KD into teacher layers (even)",
}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader never sees half a report."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def write_folder_atomic(path: str | Path, write: Callable[[Path], None], *, replace: bool = True) -> bool:
    """Fill a folder with `write(tmp)` in a temporary sibling (`.tmp-<name>-*`), then rename it to `path`: a reader
    never sees a half-written folder, and a crash leaves at most that sibling behind.

    `replace=True`: an existing `path` is swapped out (moved aside, then removed). `replace=False`: an existing `path`
    wins (several processes may write the same folder; the first one to finish keeps it), the new one is discarded.
    Returns whether `path` now holds what `write` wrote.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        if path.exists():
            if not replace:
                return False
            old = path.parent / f".old-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            return True
        try:
            os.rename(tmp, path)
        except OSError:
            if not replace and path.exists():  # someone else finished the same folder first
                return False
            raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_figure_atomic(figure, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib `figure` as PNG through a temporary file and a rename, then close it."""
    import matplotlib.pyplot as plt

    try:
        _atomic_write(Path(path), lambda handle: figure.savefig(handle, format="png", dpi=dpi))
    finally:
        plt.close(figure)


def steps_to_reach(curve: list[dict], target: float) -> int | None:
    """First evaluated step at which `curve` reaches `target` accuracy (None if it never does)."""
    for point in curve:
        if point["accuracy"] >= target:
            return point["step"]
    return None


def write_report(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.md, report.json and report.png of a learngene run into `out_dir`; returns (markdown, png)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.json", json.dumps(results, indent=2))
    write_figure_atomic(learngene_figure(results), out_dir / "report.png")
    write_text_atomic(out_dir / "report.md", learngene_markdown(results))
    return out_dir / "report.md", out_dir / "report.png"


def learngene_figure(results: dict):
    """The plot of a learngene run, readable at a glance: accuracy while fine-tuning from the learngene and from
    scratch in two panels sharing one scale (one color per depth, a qualitative palette), and final accuracy against
    size with every baseline; the legends sit below the data, sizes read 100K / 1.2M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["descendants"]
    method = results["method"]
    fig, (ax_lg, ax_sc, ax_size) = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    ax_sc.sharey(ax_lg)
    colors = [f"C{i % 10}" for i in range(len(rows))]
    for ax, kind, title in ((ax_lg, "learngene", f"from the {method} learngene"), (ax_sc, "scratch", "from scratch")):
        for color, row in zip(colors, rows):
            curve = row[kind]["curve"]
            ax.plot([p["step"] for p in curve], [p["accuracy"] for p in curve], "-o", color=color, ms=3,
                    label=f"depth {row['depth']}")  # fmt: skip
        ax.set(xlabel="fine-tuning step", title=f"Fine-tuning {title}")
        ax.grid(True, alpha=0.3)
    ax_lg.set_ylabel("test accuracy")
    ax_sc.legend(fontsize=8, title="descendant", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    params = [row["params"] for row in rows]
    ax_size.plot(params, [row["learngene"]["final_accuracy"] for row in rows], "o-", lw=2,
                 label=f"{method} learngene init")  # fmt: skip
    for init in rows[0].get("learngene_inits", {}):
        ax_size.plot(params, [row["learngene_inits"][init]["final_accuracy"] for row in rows], "o-.", alpha=0.7,
                     label=f"{method} learngene, {init} init")  # fmt: skip
    ax_size.plot(params, [row["scratch"]["final_accuracy"] for row in rows], "s--", color="gray",
                 label="scratch, same budget")  # fmt: skip
    for name, style in (("first", "^:"), ("even", "v:"), ("kd", "d:")):
        with_it = [row for row in rows if name in row.get("baselines", ())]
        if with_it:
            ax_size.plot([row["params"] for row in with_it], [row[name]["final_accuracy"] for row in with_it], style,
                         label=f"{BASELINE_LABELS[name]}, same budget")  # fmt: skip
    for row in rows:  # beside the marker, not on it
        ax_size.annotate(f"depth {row['depth']}", (row["params"], row["learngene"]["final_accuracy"]),
                         textcoords="offset points", xytext=(5, 6), fontsize=7)  # fmt: skip
    size_axis(ax_size)
    ax_size.set(xlabel="parameters", ylabel="final test accuracy", title="Final accuracy vs size")
    ax_size.grid(True, alpha=0.3)
    ax_size.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def learngene_verdict(row: dict) -> str | None:
    """One plain line for a report row: the learngene's final accuracy against the best teacher-layer baseline
    (None when the row has no baseline)."""
    names = row.get("baselines") or []
    if not names:
        return None
    best = max(names, key=lambda name: row[name]["final_accuracy"])
    lg, other = row["learngene"]["final_accuracy"], row[best]["final_accuracy"]
    versus = f"{lg:.3f} vs {other:.3f} for {BASELINE_LABELS[best]}"
    if abs(lg - other) < TIE:
        return f"learngene ties the best baseline within {TIE} ({versus})"
    return f"learngene {'wins' if lg > other else 'loses'} ({versus})"


def learngene_markdown(results: dict) -> str:
    """report.md of a learngene run: teacher, learngene, stored-parameter ratio, one row per depth."""
    rows = results["descendants"]
    teacher, gene = results["teacher"], results["learngene"]
    main_init = f" ({gene['init']} init)" if "init" in gene else ""
    lines = [
        f"# {results['method']} on {results['dataset']}",
        "",
        f"Teacher: {teacher['source']} ({teacher['num_layers']} layers, {fmt_params(teacher['params'])} parameters, "
        f"accuracy {teacher['accuracy']:.3f}). Learngene{main_init}: {fmt_params(gene['params'])} parameters stored "
        f"({fmt_params(gene['layer_params'])} in the layer parameters); auxiliary network ({gene['aux_num_layers']} "
        f"layers) accuracy {gene['aux_accuracy']:.3f}"
        + "".join(
            f", with the {init} init {other['aux_accuracy']:.3f}"
            for init, other in results.get("learngene_inits", {}).items()
        )
        + ".",
        "",
        f"**Stored-parameter ratio: {results['stored_ratio']:.1f}x** (all descendants: "
        f"{fmt_params(results['descendants_total_params'])}; learngene: {fmt_params(gene['params'])}).",
        "",
    ]
    baselines = [name for name in BASELINE_LABELS if any(name in row.get("baselines", ()) for row in rows)]
    inits = list(rows[0].get("learngene_inits", {})) if rows else []
    lines += [
        "| depth | parameters | accuracy per epoch, learngene init | accuracy per epoch, scratch | "
        "steps to reach scratch's final accuracy |"
        + "".join(f" final accuracy, learngene ({i} init) |" for i in inits)
        + "".join(f" final accuracy, {BASELINE_LABELS[b]} |" for b in baselines),
        "|---|---|---|---|---|" + "---|" * (len(inits) + len(baselines)),
    ]
    for row in rows:
        lg = " / ".join(f"{p['accuracy']:.3f}" for p in row["learngene"]["curve"])
        sc = " / ".join(f"{p['accuracy']:.3f}" for p in row["scratch"]["curve"])
        reach = row["steps_to_reach_scratch"]
        total = row["scratch"]["curve"][-1]["step"]
        reach_text = "not reached" if reach is None else f"{reach} of {total}"
        extra = "".join(f" {row['learngene_inits'][i]['final_accuracy']:.3f} |" for i in inits) + "".join(
            f" {row[b]['final_accuracy']:.3f} |" if b in row.get("baselines", ()) else " - |" for b in baselines
        )
        lines.append(f"| {row['depth']} | {fmt_params(row['params'])} | {lg} | {sc} | {reach_text} |{extra}")
    verdicts = [(row["depth"], learngene_verdict(row)) for row in rows]
    if any(v for _, v in verdicts):
        lines += ["", "Learngene against the best teacher-layer baseline (same fine-tuning budget):", ""]
        lines += [f"- depth {depth}: {v}." for depth, v in verdicts if v]
    lines += _costs_markdown(results, baselines) + _lora_markdown(rows)
    lines += [
        "",
        "Accuracy is on the held-out split, first before fine-tuning (step 0), then after each epoch. Teacher-layer "
        "baselines (`select_teacher_layers`: the first D layers, or D evenly spaced ones, fine-tuned; KD: the evenly "
        "spaced ones trained with distillation from the teacher plus labels) exist only at depths up to the teacher's.",
        "",
        "![accuracy](report.png)",
        "",
    ]
    return "\n".join(lines)


def _costs_markdown(results: dict, baselines: list[str]) -> list[str]:
    """What each initialization stores and what it costs once the teacher exists (teacher forward passes and other
    training), for runs whose report records it."""
    gene = results["learngene"]
    if "teacher_flops" not in gene:
        return []
    depths = [row["depth"] for row in results["descendants"]]
    lines = [
        "",
        "What each initialization stores and costs once the teacher exists (all depths; fine-tuning itself, the same "
        "budget for every row, not counted):",
        "",
        "| initialization | stored parameters | teacher forward compute | other compute to produce it |",
        "|---|---|---|---|",
    ]
    genes = {gene.get("init", "learngene"): gene, **results.get("learngene_inits", {})}
    for init, g in genes.items():
        lines.append(
            f"| {results['method']} learngene ({init} init) | {fmt_params(gene['params'])}, for every depth | "
            f"{fmt_flops(g['teacher_flops'])} (distillation, once for every depth) | "
            f"{fmt_flops(g['training_flops'])} (training the auxiliary network) |"
        )
    for name in baselines:
        rows = [row for row in results["descendants"] if name in row.get("baselines", ())]
        sizes = ", ".join(fmt_params(row[name]["params"]) for row in rows)
        teacher = rows[0][name].get("teacher_flops", 0)
        cost = f"{fmt_flops(teacher)} per depth (the teacher runs during training)" if teacher else "none (a copy)"
        lines.append(
            f"| {BASELINE_LABELS[name]} | the selected model: {sizes} at depths "
            f"{', '.join(str(row['depth']) for row in rows)} (and the teacher to select from) | {cost} | none |"
        )
    lines.append(f"| scratch | the model at each depth ({', '.join(map(str, depths))}) | none | none |")
    return lines


def _lora_markdown(rows: list[dict]) -> list[str]:
    """LoRA against full fine-tuning of the learngene descendants (runs with `peft: lora`)."""
    with_lora = [row for row in rows if "lora" in row]
    if not with_lora:
        return []
    lines = [
        "",
        "LoRA against full fine-tuning of the learngene-initialized models (same epochs; LoRA trains the adapter and "
        "the task head):",
        "",
        "| depth | full: accuracy | full: trainable parameters | full: s/step | LoRA: accuracy | "
        "LoRA: trainable parameters | LoRA: s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in with_lora:
        full, lora = row["learngene"], row["lora"]
        lines.append(
            f"| {row['depth']} | {full['final_accuracy']:.3f} | {fmt_params(full['trainable_params'])} | "
            f"{full['step_time_s']:.3f} | {lora['final_accuracy']:.3f} | {fmt_params(lora['trainable_params'])} "
            f"({100 * lora['trainable_params'] / lora['params']:.1f}%) | {lora['step_time_s']:.3f} |"
        )
    return lines


# --- recipes that compare arms over seeds (training strategies) ---------------------------------------------------
def summarize_arms(rows: list[dict], arms, metrics) -> list[dict]:
    """Per arm (in `arms` order), the mean and standard deviation over its runs (`rows`, one dict per arm and seed with
    an "arm" key) of every metric: `{"arm", "seeds", "<metric>_mean", "<metric>_std", ...}` (std 0 for one seed)."""
    import statistics

    out = []
    for arm in arms:
        runs = [r for r in rows if r["arm"] == arm]
        entry = {"arm": arm, "seeds": len(runs)}
        for metric in metrics:
            values = [r[metric] for r in runs]
            entry[f"{metric}_mean"] = statistics.fmean(values)
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def verdict_against(summary: list[dict], method: str, metric: str, what: str, higher_is_better: bool = True) -> str:
    """One sentence: `method` against every other arm of `summary` on `metric`. A win or a loss needs the gap in means
    to exceed the larger of the two standard deviations over seeds; otherwise it is a tie."""
    mine = next(s for s in summary if s["arm"] == method)
    parts = []
    for other in (s for s in summary if s["arm"] != method):
        gap = mine[f"{metric}_mean"] - other[f"{metric}_mean"]
        band = max(mine[f"{metric}_std"], other[f"{metric}_std"])
        better = gap if higher_is_better else -gap
        word = "beats" if better > band else "loses to" if better < -band else "ties"
        parts.append(f"{word} {other['arm']} ({gap:+.3f})")
    return f"{method} " + ", ".join(parts) + f" in {what}."


VERDICT_RULE = "A win or a loss needs a gap in means above the larger standard deviation over seeds; else a tie."


def arm_metrics_figure(summary: list[dict], metrics, lower_is_better: dict, colors):
    """One bar chart per metric (mean ± std over seeds of every arm of `summary`, as `summarize_arms` gives it), each
    titled with the direction that is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(16, 3.6))
    for ax, metric in zip(axes, metrics):
        means, stds = [s[f"{metric}_mean"] for s in summary], [s[f"{metric}_std"] for s in summary]
        ax.bar(range(len(summary)), means, yerr=stds, capsize=3, color=colors)
        ax.set_xticks(range(len(summary)), [s["arm"].replace(" ", "\n") for s in summary], fontsize=7)
        ax.set_title(f"{metric} ({'lower' if lower_is_better[metric] else 'higher'} is better)", fontsize=9)
    fig.tight_layout()
    return fig


def arm_metrics_markdown(results: dict, title: str, metrics, lower_is_better: dict, notes=(), closing=()) -> str:
    """The report of a recipe comparing arms over seeds on several metrics: `title`, the training setup, the verdict,
    `notes`, the figure, a mean ± std table per arm, a table of every run, then `closing` lines."""
    head = " | ".join(f"{m} {'↓' if lower_is_better[m] else '↑'}" for m in metrics)
    lines = [f"# {title}", "", results["training_setup"], "", f"**{results['verdict']}**", ""]
    lines += [line for note in notes for line in (note, "")]
    lines += ["![report](report.png)", "", f"| arm | {head} |", "|---" * (len(metrics) + 1) + "|"]
    for s in results["summary"]:
        cells = " | ".join(f"{s[f'{m}_mean']:.4f} ± {s[f'{m}_std']:.4f}" for m in metrics)
        lines.append(f"| {s['arm']} | {cells} |")
    lines += ["", "| seed | arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    lines += [f"| {r['seed']} | {r['arm']} | " + " | ".join(f"{r[m]:.4f}" for m in metrics) + " |"
              for r in results["runs"]]  # fmt: skip
    return "\n".join([*lines, "", *closing, ""])
