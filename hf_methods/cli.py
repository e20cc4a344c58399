"""`hf-methods` console command."""

from __future__ import annotations

import sys

COMMANDS = {
    "tleg": ("hf_methods.recipes.tleg.pipeline", "TLEG end to end: teacher -> learngene -> descendants -> report"),
    "sws": ("hf_methods.recipes.sws.pipeline", "SWS end to end: teacher -> stage-wise learngene -> descendants -> report"),
    "pool": ("hf_methods.recipes.learngene_pool.pipeline", "Learngene Pool end to end: teacher -> instances -> stitched pool -> every network scored"),
    "l2d": ("hf_methods.recipes.l2d.pipeline", "L2D multi-label distillation: multi-digit images -> teacher -> student with BCE / softmax KD / L2D -> mAP report"),
    "cpt": ("hf_methods.recipes.cpt.pipeline", "Consistent Proxy Tuning: large + small GPT-2 -> proxy tuned with CPT vs plain Proxy-tuning -> report"),
    "gtl": ("hf_methods.recipes.gtl.pipeline", "GTL end to end: evolve a learngene in a population of CNNs -> descendants on held-out classes vs scratch vs random gene -> report"),
    "rdd": ("hf_methods.recipes.rdd.pipeline", "RDD segmentation distillation: digit scenes -> UperNet teacher -> student alone / + KD / + RDD -> mIoU report"),
    "push": ("hf_methods.cli", "push a run's learngene and descendants: hf-methods push OUTPUT_DIR --repo-id ORG/NAME [--private]"),
    "pareto": ("hf_methods.pareto", "merge run reports into one size/accuracy report: hf-methods pareto REPORT... --output-dir DIR"),
    "choose": ("hf_methods.pareto", "best model under a budget: hf-methods choose REPORT... --budget-params 2M [--budget-flops 1G]"),
}


def push_main(argv) -> None:
    import argparse

    from .hub import push_run

    parser = argparse.ArgumentParser(prog="hf-methods push", description=COMMANDS["push"][1])
    parser.add_argument("output_dir", help="folder written by an hf-methods run (has report.json)")
    parser.add_argument("--repo-id", required=True, help="Hub repo of the learngene, org/name")
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    args = parser.parse_args(argv)
    try:
        pushed = push_run(args.output_dir, args.repo_id, private=args.private or None, revision=args.revision)
    except (FileNotFoundError, ValueError, PermissionError) as err:
        parser.exit(2, f"hf-methods push: error: {err}\n")
    print("pushed " + ", ".join(f"{name} -> {repo}" for name, repo in pushed.items()), flush=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: hf-methods <command> [--config recipe.yaml] [--field value ...]", "", "commands:"]
        lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    if argv[0] == "push":
        push_main(argv[1:])
        return 0
    import importlib

    if argv[0] in ("pareto", "choose"):
        getattr(importlib.import_module(COMMANDS[argv[0]][0]), f"{argv[0]}_main")(argv[1:])
        return 0

    module = importlib.import_module(COMMANDS[argv[0]][0])
    module.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
