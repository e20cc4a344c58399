"""`hf-methods` console command."""

from __future__ import annotations

import sys

# The library's own commands; every method adds its command by registering itself (`hf_methods.registry`).
BUILTIN_COMMANDS = {
    "push": (
        "hf_methods.cli:push_main",
        "push a run's models with their cards: hf-methods push OUTPUT_DIR --repo-id ORG/NAME [--private]",
    ),
    "pareto": (
        "hf_methods.pareto:pareto_main",
        "merge run reports into one size/accuracy report: hf-methods pareto REPORT... --output-dir DIR",
    ),
    "choose": (
        "hf_methods.pareto:choose_main",
        "best model under a budget: hf-methods choose REPORT... --budget-params 2M [--budget-flops 1G]",
    ),
}


def commands() -> dict[str, tuple[str, str]]:
    """{command: ("module[:function]" taking argv, one-line help)}: the methods' recipes, then the built-ins."""
    from . import registry

    found = {name: (m.recipe, m.summary) for name, m in sorted(registry.commands().items())}
    return {**found, **BUILTIN_COMMANDS}


def push_main(argv) -> None:
    import argparse

    from .hub import push_run

    parser = argparse.ArgumentParser(prog="hf-methods push", description=BUILTIN_COMMANDS["push"][1])
    parser.add_argument("output_dir", help="folder written by an hf-methods run (has report.json)")
    parser.add_argument("--repo-id", required=True, help="Hub repo of the learngene, org/name")
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    args = parser.parse_args(argv)
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    if get_token() is None:  # before anything is read or uploaded
        parser.exit(2, "hf-methods push: error: not logged in to the Hub: run `hf auth login` or set HF_TOKEN\n")

    try:
        pushed = push_run(args.output_dir, args.repo_id, private=args.private or None, revision=args.revision)
    except (FileNotFoundError, ValueError, PermissionError, ConnectionError, HfHubHTTPError) as err:
        # a down Hub (hub.HubUnreachableError, or HF_HUB_OFFLINE's OfflineModeIsEnabled), 5xx after the retries
        # (hub.HubServerError) and any other Hub answer: one line, no traceback
        parser.exit(2, "hf-methods push: error: " + " ".join(str(err).split()) + "\n")
    results = getattr(pushed, "results", {})
    unchanged = {repo for repo, result in results.items() if not result.committed}
    lines = [f"{name} -> {repo}" + (" (unchanged)" if repo in unchanged else "") for name, repo in pushed.items()]
    print("pushed " + ", ".join(lines), flush=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import hf_methods  # noqa: F401 - registers every method and its command

    from .registry import resolve

    known = commands()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in known:
        lines = ["usage: hf-methods <command> [--config recipe.yaml] [--field value ...]", "", "commands:"]
        width = max(map(len, known))  # the command names line up however long the longest is
        lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in known.items()]
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    program = sys.argv[0]
    sys.argv[0] = f"hf-methods {argv[0]}"  # argparse's usage and error lines name the command, not just hf-methods
    try:
        return run_script(resolve(known[argv[0]][0]), argv[1:], prog=sys.argv[0])
    finally:
        sys.argv[0] = program


def run_script(main, argv=None, prog: str | None = None) -> int:
    """Run a recipe's `main` as `hf-methods <name>`, `python -m hf_methods.recipes.<name>.pipeline` and `accelerate
    launch -m ...` do: a user's choice of value, folder or launch config that cannot work is one line, not a traceback.
    """
    import gc

    from .recipe import RecipeError
    from .run_folder import RunFolderError

    # what is imported by now (torch, transformers, the methods) lives as long as the process: out of the cyclic
    # collector, which every Trainer.train() runs at its end (about 0.25 s each over these objects; microseconds after)
    gc.collect()
    gc.freeze()
    try:
        main(argv)
    except (RecipeError, RunFolderError) as err:
        print(f"{prog or sys.argv[0]}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
