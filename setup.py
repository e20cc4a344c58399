"""Packages are found, not listed: every folder with an `__init__.py` under the four source roots is installed, and
every recipe YAML and card template ships with it. A new method's folders need no edit here or in pyproject.toml
(`tests/test_packaging.py` builds the wheel and checks it holds every package, recipe YAML and card template)."""

from pathlib import Path

from setuptools import find_packages, setup

# import name -> source folder (the project's layout: trainers/, recipes/ and hub_cards/ install inside hf_methods)
ROOTS = {
    "hf_methods": "hf_methods",
    "hf_methods.trainers": "trainers",
    "hf_methods.recipes": "recipes",
    "hf_methods.hub_cards": "hub_cards",
}
DATA = ["*.yaml", "*.md"]  # recipe files and card templates, in whichever package they sit

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]
    assert (Path(__file__).parent / folder / "__init__.py").is_file(), f"{folder}/ has no __init__.py"

setup(packages=packages, package_dir=package_dir, package_data={name: DATA for name in packages})
