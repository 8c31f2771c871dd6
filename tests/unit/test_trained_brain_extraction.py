"""``brain_extraction: auto`` follows how the model set's training cases were skull-stripped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.pipeline import brain_extraction_mode
from operators.errors import ModelConfigurationError
from operators.model_manifest import load_model_set
from tests.unit._model_sets import make_model_set

REPO = Path(__file__).resolve().parents[2]


def _set_declaring(tmp_path: Path, trained_with: str | None) -> Path:
    make_model_set(tmp_path, {"t2_wae": [0.6], "flair_wae": [0.7]})
    folder = tmp_path / "set"
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    if trained_with is not None:
        manifest.setdefault("preprocessing", {})["brain_extraction"] = trained_with
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return folder


@pytest.mark.parametrize("trained_with", ["fallback", "hd-bet"])
def test_auto_runs_what_the_set_was_trained_with(tmp_path: Path, trained_with: str) -> None:
    assert brain_extraction_mode("auto", _set_declaring(tmp_path, trained_with)) == trained_with


def test_an_explicit_setting_wins_and_an_undeclared_set_keeps_auto(tmp_path: Path) -> None:
    assert brain_extraction_mode("hd-bet", _set_declaring(tmp_path / "a", "fallback")) == "hd-bet"
    assert brain_extraction_mode("auto", _set_declaring(tmp_path / "b", None)) == "auto"
    assert brain_extraction_mode("auto", tmp_path / "no-set-here") == "auto"


def test_an_unknown_declaration_is_a_manifest_error_naming_the_field(tmp_path: Path) -> None:
    folder = _set_declaring(tmp_path, "bet2")
    with pytest.raises(ModelConfigurationError, match="preprocessing.brain_extraction"):
        load_model_set(folder, verify_checksums=False)


def test_the_demo_set_declares_the_fallback_it_was_prepared_with() -> None:
    assert load_model_set(REPO / "models", verify_checksums=False).trained_brain_extraction == "fallback"
