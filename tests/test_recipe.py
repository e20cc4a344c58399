"""Recipe parsing: the shipped recipes use the one vocabulary, and a renamed field (in a YAML recipe or as a flag) is a
one-line error naming its new name."""

import pytest

from hf_methods.recipe import RENAMED_FIELDS, parse_recipe
from hf_methods.recipes.l2d.pipeline import DEFAULT_RECIPE as L2D_YAML
from hf_methods.recipes.l2d.pipeline import L2DRecipe
from hf_methods.recipes.learngene_pipeline import LearngeneRecipe
from hf_methods.recipes.learngene_pool.pipeline import DEFAULT_RECIPE as POOL_YAML
from hf_methods.recipes.learngene_pool.pipeline import PoolRecipe
from hf_methods.recipes.rdd.pipeline import DEFAULT_RECIPE as RDD_YAML
from hf_methods.recipes.rdd.pipeline import RDDRecipe
from hf_methods.recipes.sws.pipeline import DEFAULT_RECIPE as SWS_YAML
from hf_methods.recipes.tleg.pipeline import DEFAULT_RECIPE as TLEG_YAML

RECIPES = [(LearngeneRecipe, TLEG_YAML, "distillation_alpha", "alpha", 1.0),
           (LearngeneRecipe, SWS_YAML, "distillation_alpha", "alpha", 1.0),
           (PoolRecipe, POOL_YAML, "distillation_alpha", "alpha", 0.9),
           (L2DRecipe, L2D_YAML, "softmax_temperature", "temperature", 1.0),
           (RDDRecipe, RDD_YAML, "kd_weight", "lambda_logits", 1.0)]


@pytest.mark.parametrize("cls, yaml_path, old, new, value", RECIPES)
def test_shipped_recipes_use_the_new_names_with_the_same_values(cls, yaml_path, old, new, value):
    assert RENAMED_FIELDS[old] == new and old not in cls.__dataclass_fields__
    (recipe,) = parse_recipe(cls, [], default_config=yaml_path)
    assert getattr(recipe, new) == value
    (recipe,) = parse_recipe(cls, [f"--{new}", "0.5"], default_config=yaml_path)
    assert getattr(recipe, new) == 0.5


@pytest.mark.parametrize("cls, yaml_path, old, new, value", RECIPES)
def test_an_old_name_is_a_one_line_error_naming_the_new_one(tmp_path, cls, yaml_path, old, new, value):
    message = f"`{old}` was renamed to `{new}`"
    for flags in ([f"--{old}", "0.5"], [f"--{old}=0.5"], [f"--{old.replace('_', '-')}", "0.5"]):
        with pytest.raises(SystemExit, match=message) as err:
            parse_recipe(cls, flags, default_config=yaml_path)
        assert "\n" not in str(err.value)
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text(yaml_path.read_text().replace(f"{new}:", f"{old}:"))
    with pytest.raises(SystemExit, match=f"old.yaml: {message}$") as err:
        parse_recipe(cls, ["--config", str(old_yaml)])
    assert "\n" not in str(err.value)


def test_an_old_name_the_recipe_never_had_is_just_unknown(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kd_weight: 1.0\n")  # the TLEG recipe has no lambda_logits either
    with pytest.raises(SystemExit, match=r"unknown field\(s\) \['kd_weight'\]"):
        parse_recipe(LearngeneRecipe, ["--config", str(path)])
    with pytest.raises(SystemExit, match="`old_method` was renamed to `method`"):  # a recipe's own rename map
        parse_recipe(LearngeneRecipe, ["--old_method", "sws"], renamed={"old_method": "method"})
