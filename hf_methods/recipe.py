"""Recipes: YAML files of dataclass fields, every field overridable on the command line."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from transformers import HfArgumentParser

# Recipe fields that were renamed so that one knob has one name in every trainer and recipe (README: "One
# vocabulary"): old name -> new name. An old name in a YAML recipe or as a flag is an error naming the new one.
RENAMED_FIELDS: dict[str, str] = {
    "distillation_alpha": "alpha",  # TLEG, SWS, Learngene Pool recipes
    "softmax_temperature": "temperature",  # L2D recipe
    "kd_weight": "lambda_logits",  # RDD recipe (and RDDConfig)
}


def _renamed(names, known: set[str], renamed: Mapping[str, str]) -> list[str]:
    """One message per old field name among `names` whose new name these dataclasses have."""
    return [f"`{old}` was renamed to `{renamed[old]}`" for old in names
            if old in renamed and old not in known and renamed[old] in known]


def _flag_names(argv: list[str]) -> list[str]:
    """The field names of the `--field` / `--field=value` flags in `argv` (dashes read as underscores)."""
    return [arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")]


def parse_recipe(dataclass_types, argv=None, default_config: str | Path | None = None,
                 renamed: Mapping[str, str] | None = None):
    """Parse `--config recipe.yaml` (or `default_config`) as defaults, then the remaining `--field value` flags.

    An unknown key in the YAML is an error that names it, like an unknown flag. A field renamed since (`renamed`,
    default `RENAMED_FIELDS`: old name -> new name), in the YAML or as a flag, is a one-line error naming the new name.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    renamed = RENAMED_FIELDS if renamed is None else renamed
    if not isinstance(dataclass_types, (list, tuple)):
        dataclass_types = [dataclass_types]
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    config = default_config
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("--config needs a path to a YAML recipe")
        config = argv[i + 1]
        del argv[i : i + 2]
    messages = _renamed(_flag_names(argv), known, renamed)
    if messages:
        raise SystemExit("; ".join(messages) + " (command line)")
    parser = HfArgumentParser(dataclass_types)
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise SystemExit(f"recipe file {str(path)!r} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise SystemExit(f"recipe {path} must be a mapping of field: value")
        messages = _renamed(values, known, renamed)
        if messages:
            raise SystemExit(f"recipe {path}: " + "; ".join(messages))
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"recipe {path} has unknown field(s) {unknown}; known fields: {sorted(known)}")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(argv)
