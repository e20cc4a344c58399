"""`hf-methods tleg`: the learngene main job with TLEG (see `hf_methods.recipes.learngene_pipeline`).

hf-methods tleg                                   # the embedded default: digits, no network, ~3 min on 2 CPUs
accelerate launch -m hf_methods.recipes.tleg.pipeline --config my.yaml
"""

import sys
from importlib import resources

from hf_methods.cli import run_script

from ..learngene_pipeline import LearngeneRecipe as TLEGRecipe
from ..learngene_pipeline import main as _main
from ..learngene_pipeline import run

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "tleg" / "digits.yaml"
__all__ = ["DEFAULT_RECIPE", "TLEGRecipe", "main", "run"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    return _main(["--method", "tleg", *argv], default_config=DEFAULT_RECIPE)  # whatever a --config file says


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.tleg.pipeline"))
