"""Pick one model under a budget from several families (learngene descendants, stitched models, scratch).

Each family reports its models as entries of the same shape, so they can be merged, compared on one
accuracy-vs-cost Pareto front and chosen from by parameter and/or FLOPs budget:

    {"method": "TLEG", "name": "depth 6", "params": 1_200_000, "flops": 340_000_000, "accuracy": 0.91,
     "stored_params": 2_400_000, "path": "descendants/depth_6"}

"stored_params" (what must be stored to produce the model: a learngene's total, shared by all of its descendants)
and "path" (relative to the report file's folder) are optional; any other key is kept as is.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

REQUIRED = ("method", "name", "params", "flops", "accuracy")
COSTS = ("params", "flops")


# ---------------------------------------------------------------------------------------------- entries


def _label(index: int, entry) -> str:
    """'entry 3 (TLEG depth 6)' when the entry says who it is, so errors point at a findable row."""
    if isinstance(entry, dict) and all(isinstance(entry.get(k), str) and entry[k].strip() for k in ("method", "name")):
        return f"entry {index} ({entry['method']} {entry['name']})"
    return f"entry {index}"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_entries(entries, source: str | None = None) -> list[dict]:
    """Check the entry format up front, so a bad report fails with the row and field at fault, not a KeyError later.

    `source` (e.g. a file name) prefixes the messages. Returns `entries` for chaining.
    """
    where = f"{source}: " if source else ""
    # ValueError even for wrong types: these come from report files, and callers catch one error for a bad report
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"{where}entries must be a list of dicts, got {type(entries).__name__}")  # noqa: TRY004
    for index, entry in enumerate(entries):
        label = _label(index, entry)
        if not isinstance(entry, dict):
            raise ValueError(f"{where}{label}: must be a dict, got {type(entry).__name__}")  # noqa: TRY004
        for field in REQUIRED:
            if field not in entry:
                raise ValueError(f"{where}{label}: missing field {field!r}")
        for field in ("method", "name"):
            if not isinstance(entry[field], str) or not entry[field].strip():
                raise ValueError(f"{where}{label}: field {field!r} must be a non-empty string, got {entry[field]!r}")
        for field in ("params", "flops"):
            value = entry[field]
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{where}{label}: field {field!r} must be a positive integer, got {value!r}")
        accuracy = entry["accuracy"]
        if not isinstance(accuracy, numbers.Real) or isinstance(accuracy, bool) or not math.isfinite(accuracy):
            raise ValueError(f"{where}{label}: field 'accuracy' must be a finite number, got {accuracy!r}")
        stored = entry.get("stored_params")
        if stored is not None and (not _is_int(stored) or stored <= 0):
            raise ValueError(f"{where}{label}: field 'stored_params' must be a positive integer, got {stored!r}")
        path = entry.get("path")
        if path is not None and (not isinstance(path, str) or not path):
            raise ValueError(f"{where}{label}: field 'path' must be a non-empty string, got {path!r}")
    return entries


def _rank_key(entry: dict):
    """Best first: highest accuracy, then the cheaper model, then name, so choices are deterministic."""
    return (-entry["accuracy"], entry["params"], entry["flops"], entry["name"], entry["method"])


def pareto_front(entries, cost: str = "params") -> list[dict]:
    """The entries no other entry beats: none has cost <= and accuracy >= with one of them strict.

    Exact duplicates (same cost, same accuracy) do not dominate each other, so all of them stay on the front.
    Sorted by cost (then accuracy, best first).
    """
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    validate_entries(entries)
    front = []
    for entry in entries:
        c, a = entry[cost], entry["accuracy"]
        dominated = any(
            other[cost] <= c and other["accuracy"] >= a and (other[cost] < c or other["accuracy"] > a)
            for other in entries
        )
        if not dominated:
            front.append(entry)
    return sorted(front, key=lambda e: (e[cost], -e["accuracy"], e["name"], e["method"]))


def choose(
    entries, budget_params: int | None = None, budget_flops: int | None = None, method: str | None = None
) -> dict:
    """The most accurate entry within every given budget (ties: fewer params, fewer flops, then name).

    `method` (case-insensitive) restricts the choice to one family. Raises ValueError when no budget is given or
    nothing fits, naming the smallest model available so the user knows how far off the budget is.
    """
    if budget_params is None and budget_flops is None:
        raise ValueError("give a budget: budget_params and/or budget_flops")
    validate_entries(entries)
    pool = list(entries)
    if not pool:
        raise ValueError("no entries to choose from")
    if method is not None:
        pool = [e for e in entries if e["method"].lower() == method.lower()]
        if not pool:
            methods = ", ".join(sorted({e["method"] for e in entries})) or "none"
            raise ValueError(f"no entry of method {method!r}; available methods: {methods}")
    fits = [
        e
        for e in pool
        if (budget_params is None or e["params"] <= budget_params)
        and (budget_flops is None or e["flops"] <= budget_flops)
    ]
    if not fits:
        asked = []
        if budget_params is not None:
            asked.append(f"params <= {fmt_params(budget_params)} ({budget_params})")
        if budget_flops is not None:
            asked.append(f"flops <= {fmt_flops(budget_flops)} ({budget_flops})")
        least_params = min(pool, key=lambda e: (e["params"], e["flops"]))
        least_flops = min(pool, key=lambda e: (e["flops"], e["params"]))
        scope = f" of method {method!r}" if method is not None else ""
        raise ValueError(
            f"no model{scope} fits {' and '.join(asked)}; smallest available: "
            f"{fmt_params(least_params['params'])} params ({least_params['params']}, "
            f"{least_params['method']} {least_params['name']}), "
            f"{fmt_flops(least_flops['flops'])} ({least_flops['flops']}, {least_flops['method']} {least_flops['name']})"
        )
    return min(fits, key=_rank_key)


# ---------------------------------------------------------------------------------------------- numbers

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}
_COUNT = re.compile(r"^([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)([kmgbt]?)$", re.IGNORECASE)


def parse_count(text) -> int:
    """'5e6', '5M', '250K', '1.5G' (B = G), '5_000_000' -> int; budgets are typed by hand, so accept the usual forms."""
    if _is_int(text):
        value = int(text)
    else:
        cleaned = str(text).strip().replace("_", "").replace(",", "")
        match = _COUNT.match(cleaned)
        if not match:
            raise ValueError(f"not a count: {text!r} (use e.g. 5000000, 5e6, 5M, 250K, 1.5G)")
        value = round(float(match.group(1)) * _SUFFIX[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"a budget must be positive, got {text!r}")
    return value


def _human(n: float, units) -> str:
    for scale, unit in units:
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:g}"


def fmt_params(n: int) -> str:
    """1.2M / 45.3K / 812: short enough for a table cell, precise enough to rank sizes by eye."""
    return _human(n, ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")))


def fmt_flops(n: int) -> str:
    """1.2 GFLOPs / 3.4 MFLOPs."""
    return _human(n, ((1e12, " TFLOPs"), (1e9, " GFLOPs"), (1e6, " MFLOPs"), (1e3, " KFLOPs"), (0, " FLOPs")))


# ---------------------------------------------------------------------------------------------- files


def load_entries(paths, skipped: list[str] | None = None) -> list[dict]:
    """Merge the entries of several JSON files: {"entries": [...]} (a Pareto report) or a recipe report with "choices".

    Each "path" is resolved against its file's folder and stored absolute, so merged entries from different folders
    stay usable. Entries identical after resolution (the same report merged twice) are kept once. A recipe report
    with nothing to choose from (GTL, L2D, RDD, CPT: no "choices") is an error, or, given a `skipped` list, a line
    appended to it (so `hf-methods choose outputs/*/report.json` works over every kind of run).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    merged: list[dict] = []
    for file in map(Path, paths):
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err})") from None
        if isinstance(data, dict) and isinstance(data.get("entries"), list):
            entries = data["entries"]
        elif isinstance(data, dict) and isinstance(data.get("choices"), list):
            entries = data["choices"]
        elif isinstance(data, dict) and "method" in data and skipped is not None:
            skipped.append(f"{file}: a {data['method']} run, whose report has no models to choose between")
            continue
        else:
            raise ValueError(f"{file}: expected a JSON object with an 'entries' or a 'choices' list")  # noqa: TRY004
        validate_entries(entries, source=str(file))
        folder = file.parent.absolute()
        for entry in entries:
            entry = dict(entry)
            if entry.get("path") is not None:
                entry["path"] = os.path.normpath(folder / entry["path"])
            if entry not in merged:
                merged.append(entry)
    return merged


def usual_mode(folder: bool = False) -> int:
    """The mode `open` / `mkdir` would give under this process's umask (0644 / 0755 under the usual 022): temporary
    files and folders are created 0600 / 0700, which would hide a run's outputs from the other users of a machine."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def give_usual_modes(folder: Path) -> None:
    """`usual_mode` for `folder` and everything in it (transformers writes `model.safetensors` 0600 too)."""
    folder, file_mode, folder_mode = Path(folder), usual_mode(), usual_mode(folder=True)
    folder.chmod(folder_mode)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


def _atomic_write(path: Path, write) -> None:
    """Write via a temp file in the same folder and os.replace, so a reader never sees a half-written report."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, usual_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _portable(entry: dict, out_dir: Path) -> dict:
    """Absolute paths (from load_entries) become relative to the report's folder, as the entry format says."""
    path = entry.get("path")
    if path is None or not os.path.isabs(path):
        return dict(entry)
    try:
        return {**entry, "path": os.path.relpath(path, out_dir.absolute())}
    except ValueError:  # another drive on Windows: no relative path exists
        return dict(entry)


class ParetoReport(NamedTuple):
    markdown: Path
    json: Path
    png: Path


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def _short_flops(n) -> str:
    return fmt_flops(n).replace("FLOPs", "").strip()


def size_axis(ax, formatter=fmt_params, log: bool = False) -> None:
    """Tick labels of a size axis as 100K / 1.2M (`formatter`) instead of raw numbers or powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: formatter(x).replace(".0", "") if x > 0 else "0"))


def pareto_figure(entries: list[dict], title: str):
    """Accuracy vs params and vs FLOPs, one color+marker per method, each cost's Pareto front as a step line with its
    models named (method and name); sizes read 100K / 1.2M, the legend sits below the data."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no global backend switch, safe beside other plotting code
    )

    methods = sorted({e["method"] for e in entries})
    markers = "osD^vP*Xhp<>"
    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2, sharey=True)
    colors = [f"C{i % 10}" for i in range(len(methods))]
    for ax, cost, xlabel in ((axes[0], "params", "parameters"), (axes[1], "flops", "FLOPs per sample")):
        for i, method in enumerate(methods):
            rows = [e for e in entries if e["method"] == method]
            ax.scatter(
                [e[cost] for e in rows],
                [e["accuracy"] for e in rows],
                color=colors[i],
                marker=markers[i % len(markers)],
                s=40,
                label=method,
                zorder=3,
            )
        front = pareto_front(entries, cost)
        ax.step(
            [e[cost] for e in front],
            [e["accuracy"] for e in front],
            where="post",
            color="black",
            linewidth=1,
            alpha=0.7,
            label="Pareto front",
            zorder=2,
        )
        for e in front:  # the front's models, named with their method, beside their markers
            ax.annotate(f"{e['method']} {e['name']}", (e[cost], e["accuracy"]), textcoords="offset points",
                        xytext=(5, 5), fontsize=7)  # fmt: skip
        size_axis(ax, fmt_params if cost == "params" else _short_flops, log=True)
        ax.set(xlabel=xlabel, title=f"Accuracy vs {xlabel}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend below the data
    return fig


def write_pareto_report(entries, out_dir: str | Path, title: str = "Model choice") -> ParetoReport:
    """Write pareto.json ({"title", "entries"}), pareto.md (table, best per method, plot) and pareto.png.

    Returns the (markdown, json, png) paths. Every file is written atomically. Absolute entry paths (as load_entries
    gives them) are stored relative to `out_dir`, so the folder can be moved with its models and loaded back.
    """
    validate_entries(entries)
    if not entries:
        raise ValueError("no entries to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ParetoReport(out_dir / "pareto.md", out_dir / "pareto.json", out_dir / "pareto.png")

    stored = [_portable(e, out_dir) for e in entries]
    payload = json.dumps({"title": title, "entries": stored}, indent=2) + "\n"
    _atomic_write(paths.json, lambda handle: handle.write(payload.encode()))
    figure = pareto_figure(list(entries), title)
    _atomic_write(paths.png, lambda handle: figure.savefig(handle, format="png", dpi=110))

    on_params = {id(e) for e in pareto_front(entries, "params")}
    on_flops = {id(e) for e in pareto_front(entries, "flops")}
    methods = sorted({e["method"] for e in entries})
    lines = [
        f"# {title}",
        "",
        (
            f"{len(entries)} models from {len(methods)} method{'s' if len(methods) != 1 else ''}; "
            f"{len(on_params)} on the accuracy-vs-parameters front, {len(on_flops)} on the accuracy-vs-FLOPs front."
        ),
        "",
        "| method | name | params | FLOPs | accuracy | stored params | Pareto front |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in sorted(entries, key=lambda e: (e["method"], e["params"], e["flops"], e["name"])):
        marks = [label for label, front in (("params", on_params), ("FLOPs", on_flops)) if id(e) in front]
        stored_cell = fmt_params(e["stored_params"]) if e.get("stored_params") is not None else "—"
        lines.append(
            f"| {_cell(e['method'])} | {_cell(e['name'])} | {fmt_params(e['params'])} | {fmt_flops(e['flops'])} | "
            f"{e['accuracy']:.3f} | {stored_cell} | {' + '.join(marks) if marks else '—'} |"
        )
    best = [min((e for e in entries if e["method"] == m), key=_rank_key) for m in methods]
    lines += [
        "",
        "Best per method: "
        + "; ".join(
            f"**{b['method']}** {b['name']} (accuracy {b['accuracy']:.3f}, {fmt_params(b['params'])} params, "
            f"{fmt_flops(b['flops'])})"
            for b in best
        )
        + ".",
        "",
        "Pareto front: no other model is at least as accurate for at most the same cost (one of them strictly).",
        "",
        f"![accuracy vs parameters and FLOPs]({paths.png.name})",
        "",
    ]
    text = "\n".join(lines)
    _atomic_write(paths.markdown, lambda handle: handle.write(text.encode()))
    return paths


# ---------------------------------------------------------------------------------------------- CLI


def _budget_arg(text: str) -> int:
    import argparse

    try:
        return parse_count(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _describe(entry: dict) -> str:
    text = (
        f"{entry['method']} {entry['name']}: {fmt_params(entry['params'])} params ({entry['params']}), "
        f"{fmt_flops(entry['flops'])} ({entry['flops']}), accuracy {entry['accuracy']:.4f}"
    )
    return text + (f", path {entry['path']}" if entry.get("path") else "")


def _entries_of(reports, command: str) -> list[dict]:
    """`load_entries` of the command line's reports; a report without choices is skipped with a note."""
    skipped: list[str] = []
    entries = load_entries(reports, skipped)
    for line in skipped:
        print(f"hf-methods {command}: note: skipping {line}", file=sys.stderr, flush=True)
    if not entries:
        raise ValueError("none of the reports lists models to choose between (TLEG, SWS and Learngene Pool runs do)")
    return entries


def choose_main(argv) -> None:
    """`hf-methods choose REPORT ... --budget-params N --budget-flops N [--method NAME] [--json]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="hf-methods choose", description="the most accurate model within a parameter and/or FLOPs budget"
    )
    parser.add_argument("reports", nargs="+", help="pareto.json or recipe report.json files (merged)")
    parser.add_argument("--budget-params", type=_budget_arg, help="max parameters, e.g. 5e6, 5M, 250K")
    parser.add_argument("--budget-flops", type=_budget_arg, help="max FLOPs per sample, e.g. 1.5G, 300M")
    parser.add_argument("--method", default=None, help="only models of this method (e.g. TLEG, SWS, scratch)")
    parser.add_argument("--json", action="store_true", help="print the chosen entry as JSON")
    args = parser.parse_args(argv)
    if args.budget_params is None and args.budget_flops is None:
        parser.exit(2, "hf-methods choose: error: give --budget-params and/or --budget-flops\n")
    try:
        entry = choose(_entries_of(args.reports, "choose"), args.budget_params, args.budget_flops, args.method)
    except (OSError, ValueError) as err:
        parser.exit(2, f"hf-methods choose: error: {err}\n")
    print(json.dumps(entry) if args.json else _describe(entry), flush=True)


def pareto_main(argv) -> None:
    """`hf-methods pareto REPORT ... --output-dir DIR [--title T]`: merge reports into one Pareto report."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="hf-methods pareto", description="merge model reports into one accuracy-vs-cost Pareto report"
    )
    parser.add_argument("reports", nargs="+", help="pareto.json or recipe report.json files (merged)")
    parser.add_argument("--output-dir", required=True, help="folder for pareto.md, pareto.json, pareto.png")
    parser.add_argument("--title", default="Model choice", help="report title")
    args = parser.parse_args(argv)
    try:
        entries = _entries_of(args.reports, "pareto")
        paths = write_pareto_report(entries, args.output_dir, args.title)
    except (OSError, ValueError) as err:
        parser.exit(2, f"hf-methods pareto: error: {err}\n")
    front = pareto_front(entries, "params")
    best = min(entries, key=_rank_key)
    print(
        f"wrote {paths.markdown} ({len(entries)} models, {len({e['method'] for e in entries})} methods, "
        f"{len(front)} on the params front; most accurate: {best['method']} {best['name']} "
        f"{best['accuracy']:.4f})",
        flush=True,
    )
