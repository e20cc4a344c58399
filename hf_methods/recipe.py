"""Recipes: YAML files of dataclass fields, every field overridable on the command line."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser


def parse_recipe(dataclass_types, argv=None, default_config: str | Path | None = None):
    """Parse `--config recipe.yaml` (or `default_config`) as defaults, then the remaining `--field value` flags.

    An unknown key in the YAML is an error that names it, like an unknown flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not isinstance(dataclass_types, (list, tuple)):
        dataclass_types = [dataclass_types]
    config = default_config
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("--config needs a path to a YAML recipe")
        config = argv[i + 1]
        del argv[i : i + 2]
    parser = HfArgumentParser(dataclass_types)
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise SystemExit(f"recipe file {str(path)!r} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise SystemExit(f"recipe {path} must be a mapping of field: value")
        known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"recipe {path} has unknown field(s) {unknown}; known fields: {sorted(known)}")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(argv)
