"""`hf-methods sws`: the learngene main job with SWS (see `hf_methods.recipes.learngene_pipeline`).

    hf-methods sws                                   # the embedded default: digits, no network, ~4 min on 2 CPUs
    accelerate launch -m hf_methods.recipes.sws.pipeline --config my.yaml
"""

from importlib import resources

from ..learngene_pipeline import LearngeneRecipe as SWSRecipe
from ..learngene_pipeline import main as _main
from ..learngene_pipeline import run

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "sws" / "digits.yaml"
__all__ = ["DEFAULT_RECIPE", "SWSRecipe", "main", "run"]


def main(argv=None):
    return _main(argv, default_config=DEFAULT_RECIPE)


if __name__ == "__main__":
    main()
