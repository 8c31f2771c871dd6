"""Model manifest: validation errors name the file and field; checksums are verified at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from operators.errors import ModelConfigurationError
from operators.inference import EnsembleRunner
from operators.model_manifest import load_model_set
from tests.unit._model_sets import make_model_set

PROBS = {"t2_wae": [0.2, 0.4], "flair_wae": [0.6, 0.8], "flair3_wae": [0.5, 0.5], "clinical": [0.3, 0.7],
         "t2_etsc": [0.4, 0.4], "flair_etsc": [0.9, 0.9]}


@pytest.fixture(scope="module")
def model_set_dir(tmp_path_factory) -> Path:
    return make_model_set(tmp_path_factory.mktemp("ms"), PROBS).root


def _edited(src: Path, dst: Path, edit) -> Path:
    """Copy a model set (weights hard-linked/copied) and apply ``edit`` to its manifest dict."""
    dst.mkdir()
    (dst / "weights").mkdir()
    for f in (src / "weights").iterdir():
        (dst / "weights" / f.name).write_bytes(f.read_bytes())
    (dst / "MODEL_CARD.md").write_text((src / "MODEL_CARD.md").read_text())
    data = yaml.safe_load((src / "manifest.yaml").read_text())
    edit(data)
    (dst / "manifest.yaml").write_text(yaml.safe_dump(data))
    return dst


def test_valid_model_set_loads_into_typed_specs(model_set_dir):
    ms = load_model_set(model_set_dir)
    assert ms.primary == "WAE-Net" and ms.synthetic is True
    assert ms.primary_ensemble.weights == {m: 0.25 for m in ("t2_wae", "flair_wae", "flair3_wae", "clinical")}
    assert ms.ensembles["eTSC-Net"].weights == {"t2_etsc": 0.6, "flair_etsc": 0.4}
    flair = ms.members["flair_wae"]
    assert flair.contrast == "flair" and flair.grid.shape == (16, 16, 16) and len(flair.folds) == 2
    assert ms.members["clinical"].is_clinical and ms.members["clinical"].grid is None
    assert set(ms.input_keys()) == {"t2@wae", "flair@wae", "flair3@wae", "t2@etsc", "flair@etsc"}
    assert len(ms.identity) == 64


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.pop("intended_use"), "intended_use: missing"),
    (lambda d: d.update(format="tsc-model-set/9"), "format"),
    (lambda d: d.update(synthetic="yes"), "synthetic: must be bool"),
    (lambda d: d["members"]["t2_wae"].update(architecture="vgg"), "members.t2_wae.architecture"),
    (lambda d: d["members"]["t2_wae"].update(input="pd@wae"), "members.t2_wae.input"),
    (lambda d: d["members"]["t2_wae"].update(input="t2@nogrid"), "members.t2_wae.input"),
    (lambda d: d["members"]["clinical"].update(input="t2@wae"), "members.clinical.input"),
    (lambda d: d["members"]["t2_wae"]["hyperparameters"].update(depth=3), "members.t2_wae.hyperparameters"),
    (lambda d: d["members"]["t2_wae"]["folds"][1].update(sha256="abc"), "members.t2_wae.folds[1].sha256"),
    (lambda d: d["members"]["t2_wae"]["folds"][0].update(file="../../etc/passwd"),
     "members.t2_wae.folds[0].file"),
    (lambda d: d["members"]["t2_wae"].update(folds=[]), "members.t2_wae.folds"),
    (lambda d: d["ensembles"]["WAE-Net"]["weights"].update(t2_wae=0.5), "ensembles.WAE-Net.weights: must sum to 1"),
    (lambda d: d["ensembles"]["WAE-Net"]["weights"].update(ghost=0.0), "ensembles.WAE-Net.weights.ghost"),
    (lambda d: d["ensembles"]["eTSC-Net"].update(threshold=1.5), "ensembles.eTSC-Net.threshold"),
    (lambda d: d.update(primary="Other-Net"), "primary"),
    (lambda d: d["grids"].update(etsc={"shape": [16, 16, 16], "spacing_mm": [1, 1, 1]}),
     "members.flair_etsc.input: efficientnet3d-b0 needs at least 32"),
    (lambda d: d["grids"].update(wae={"shape": [16, 16], "spacing_mm": [1, 1, 1]}), "grids.wae"),
])
def test_invalid_manifest_names_file_and_field(model_set_dir, tmp_path, edit, field):
    bad = _edited(model_set_dir, tmp_path / "bad", edit)
    with pytest.raises(ModelConfigurationError) as err:
        load_model_set(bad)
    msg = str(err.value)
    assert str(bad / "manifest.yaml") in msg
    assert field in msg


def test_unparseable_or_absent_manifest(tmp_path):
    with pytest.raises(ModelConfigurationError, match="not found"):
        load_model_set(tmp_path)
    (tmp_path / "manifest.yaml").write_text("members: [unclosed\n")
    with pytest.raises(ModelConfigurationError, match="YAML"):
        load_model_set(tmp_path)


def test_checksum_mismatch_is_a_startup_error(model_set_dir, tmp_path):
    bad = _edited(model_set_dir, tmp_path / "tampered", lambda d: None)
    victim = bad / "weights" / "flair_wae.fold1.pt"
    blob = bytearray(victim.read_bytes())
    blob[-10] ^= 0xFF
    victim.write_bytes(bytes(blob))
    with pytest.raises(ModelConfigurationError) as err:
        EnsembleRunner(bad)
    assert "members.flair_wae.folds[1]" in str(err.value) and "checksum mismatch" in str(err.value)


def test_missing_weight_file_is_a_startup_error(model_set_dir, tmp_path):
    bad = _edited(model_set_dir, tmp_path / "missing", lambda d: None)
    (bad / "weights" / "clinical.fold0.pt").unlink()
    with pytest.raises(ModelConfigurationError, match=r"members\.clinical\.folds\[0\]: weight file not found"):
        load_model_set(bad)


def test_weights_that_do_not_fit_the_architecture_fail_at_startup(model_set_dir, tmp_path):
    from operators.model_manifest import sha256_file

    bad = _edited(model_set_dir, tmp_path / "wrongarch", lambda d: None)
    victim = bad / "weights" / "t2_wae.fold0.pt"
    torch.save({"not": torch.zeros(1)}, victim)
    data = yaml.safe_load((bad / "manifest.yaml").read_text())
    data["members"]["t2_wae"]["folds"][0]["sha256"] = sha256_file(victim)
    (bad / "manifest.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelConfigurationError, match="member t2_wae fold 0"):
        EnsembleRunner(bad)


def test_identity_changes_when_any_weight_or_weighting_changes(model_set_dir, tmp_path):
    base = load_model_set(model_set_dir).identity
    same = load_model_set(_edited(model_set_dir, tmp_path / "same", lambda d: None)).identity
    reweighted = load_model_set(_edited(
        model_set_dir, tmp_path / "rew",
        lambda d: d["ensembles"]["eTSC-Net"].update(weights={"t2_etsc": 0.5, "flair_etsc": 0.5}))).identity
    assert same == base
    assert reweighted != base
