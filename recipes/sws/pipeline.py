"""`hf-methods sws`: the learngene main job with SWS (see `hf_methods.recipes.learngene_pipeline`).

hf-methods sws                                   # the embedded default: digits, no network, ~4 min on 2 CPUs
accelerate launch -m hf_methods.recipes.sws.pipeline --config my.yaml
"""

import sys
from importlib import resources

from hf_methods.cli import run_script

from ..learngene_pipeline import LearngeneRecipe as SWSRecipe
from ..learngene_pipeline import main as _main
from ..learngene_pipeline import run

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "sws" / "digits.yaml"
__all__ = ["DEFAULT_RECIPE", "SWSRecipe", "main", "run"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    return _main(["--method", "sws", *argv], default_config=DEFAULT_RECIPE)  # whatever a --config file says


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.sws.pipeline"))
