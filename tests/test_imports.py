"""Every module of the installed package imports, recipes included: an import-time break (a renamed name in a
dependency, a module missing from the package list) shows up here as one failure listing every module that broke."""

import importlib
import pkgutil
import traceback

# Installed from other source folders (pyproject's package-dir), so not found by walking hf_methods/ itself.
MAPPED_PACKAGES = ("hf_methods.trainers", "hf_methods.recipes", "hf_methods.hub_cards")


def _all_modules() -> list[str]:
    names = {"hf_methods"}
    for root in ("hf_methods", *MAPPED_PACKAGES):
        package = importlib.import_module(root)
        names.add(root)
        names.update(info.name for info in pkgutil.walk_packages(package.__path__, prefix=root + "."))
    return sorted(names)


def test_every_module_and_recipe_imports():
    names = _all_modules()
    # the package's own layout: the trainers, recipes (each method's pipeline) and card templates are found too
    for expected in (
        "hf_methods.compat",
        "hf_methods.trainers.distillation_trainer",
        "hf_methods.recipes.tleg.pipeline",
        "hf_methods.recipes.cpt.pipeline",
        "hf_methods.recipes.gtl.pipeline",
        "hf_methods.cli",
    ):
        assert expected in names, f"{expected} is not part of the installed package (pyproject packages?)"
    broken = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - every failure is reported, with its traceback's last line
            broken[name] = traceback.format_exc().strip().splitlines()[-1]
    assert not broken, "modules that fail to import:\n" + "\n".join(f"  {k}: {v}" for k, v in broken.items())
