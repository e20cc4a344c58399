"""The wheel holds the whole source tree: every package, recipe YAML and card template (setup.py finds them, so a
new method's folders need no packaging edit). Built from this checkout with the installed setuptools."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> where it lands in the wheel
ROOTS = {
    "hf_methods": "hf_methods",
    "trainers": "hf_methods/trainers",
    "recipes": "hf_methods/recipes",
    "hub_cards": "hf_methods/hub_cards",
}


def _expected() -> set[str]:
    files = set()
    for folder, target in ROOTS.items():
        for path in (ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in (".py", ".yaml", ".md"):
                files.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return files


def test_the_wheel_holds_every_package_recipe_and_card_template(tmp_path):
    # built from a clean copy: a build/ folder left in the checkout would let stale files into the wheel
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "outputs", "__pycache__")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("hf_methods-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _expected()
    assert {
        "hf_methods/recipes/tleg/digits.yaml",
        "hf_methods/hub_cards/learngene.md",
        "hf_methods/trainers/__init__.py",
        "hf_methods/models/tleg/__init__.py",
    } <= expected
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}"
    assert any(n.startswith("hf_methods-") and n.endswith("/licenses/LICENSE") for n in names)  # Apache-2.0 text
    stray = sorted(n for n in names if not n.startswith(("hf_methods/", "hf_methods-")))
    assert not stray, f"the wheel installs files outside hf_methods/: {stray}"
