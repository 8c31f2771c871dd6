"""``python -m app`` on studies with dirty patient/study headers, several studies, unreadable files.

Synthetic studies (the project's generator) get the values real exports carry:
PatientSex '0000' and PatientBirthDate '***' beside a valid PatientAge (the issue's
case, which ended in "internal error"), an invalid StudyTime, an over-long person
name component and a backslash in a single-valued LO. The app runs with the demo
model set in models/ and the fallback brain mask (for speed). Every object the app
writes is checked with dciodvfy (dicom3tools) when it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pydicom.uid
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from synthetic import StudyOptions, generate_study

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
LONG = "Overlongcomponent" * 4
DIRTY = {
    "PatientSex": ("CS", b"0000"),
    "PatientBirthDate": ("DA", b"***"),
    "StudyTime": ("TM", b"256199"),
    "ReferringPhysicianName": ("PN", f"{LONG}^Jane".encode()),
    "StudyDescription": ("LO", b"MR\\Head"),
}
SMALL = StudyOptions(decoys=False, t2_matrix=(128, 128), flair_matrix=(128, 128), slices=16)


def run_app(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLOSCAN_")}
    cmd = ["bash", "-c", 'ulimit -s 32768; exec "$0" -m app "$@"', sys.executable, *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def dirty_study(root: Path, seed: int, **options: object) -> Path:
    study = generate_study(root, seed, StudyOptions(**{**SMALL.__dict__, **options}))
    for path in study.input_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientAge = "006Y"
        for keyword, (vr, value) in DIRTY.items():
            tag = Tag(tag_for_keyword(keyword))
            padded = value + (b" " if len(value) % 2 else b"")
            ds._dict[tag] = RawDataElement(tag, vr, len(padded), padded, 0, False, True)
        ds.save_as(path)
    return study.input_dir


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "app.yaml"
    path.write_text("brain_extraction: fallback\noutputs:\n  flair3_series: true\n", encoding="utf-8")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        return []
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def assert_clean_log(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    for value in ("***", "'0000'", "256199", LONG, "MR\\Head"):
        assert value not in out, f"a dirty value reached the log: {value!r}"
    assert "internal error" not in out and "no readable DICOM study" not in out


def test_analysed_study_with_dirty_headers_gets_every_object(tmp_path: Path, config: Path) -> None:
    result = run_app("-i", dirty_study(tmp_path / "s", 501), "-o", tmp_path / "out", "-m", REPO / "models",
                     "-c", config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_clean_log(result)
    assert "PatientSex (not one of F, M, O)" in result.stderr and "PatientBirthDate (not a date" in result.stderr
    written = sorted((tmp_path / "out").glob("*.dcm"))
    modalities = {}
    for path in written:
        ds = pydicom.dcmread(path)
        modalities.setdefault(ds.Modality, []).append(path)
        assert ds.PatientSex == "" and ds.PatientBirthDate == "" and ds.StudyTime == ""
        assert ds.get("StudyDescription") in (None, "")
    assert set(modalities) == {"SR", "DOC", "MR", "OT"} and len(modalities["SR"]) == 1
    assert pydicom.dcmread(modalities["SR"][0]).PatientAge == "006Y"
    for path in modalities["SR"] + modalities["DOC"] + modalities["OT"]:
        assert dciodvfy_errors(path) == [], path.name
    # the FLAIR3 series: nothing wrong in what was copied from the patient and study
    patient_study = ("Module=<Patient>", "Module=<GeneralStudy>", "Module=<PatientStudy>", *DIRTY)
    for path in modalities["MR"][:2]:
        assert not [e for e in dciodvfy_errors(path) if any(word in e for word in patient_study)], path.name


def test_not_analysable_study_with_dirty_headers_gets_its_sr(tmp_path: Path, config: Path) -> None:
    """No FLAIR, an unreadable file: a not-analysable SR, and the file's warning appears once."""
    study = dirty_study(tmp_path / "s", 502, include_flair=False)
    (study / "junk.dcm").write_bytes(b"not a DICOM file")
    result = run_app("-i", study, "-o", tmp_path / "out", "-m", REPO / "models", "-c", config)
    assert result.returncode == 2, result.stderr[-2000:]
    assert_clean_log(result)
    assert result.stderr.count("skipping junk.dcm") == 1
    (reason,) = [line for line in result.stderr.splitlines() if line.startswith("NOT ANALYSABLE")]
    assert "no suitable FLAIR series" in reason
    (sr_path,) = (tmp_path / "out").glob("*.dcm")
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR" and sr.PatientSex == "" and sr.PatientAge == "006Y"
    assert dciodvfy_errors(sr_path) == []


def test_a_folder_with_several_studies_gets_a_short_reason(tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(dirty_study(tmp_path / "s", 503, include_flair=False), folder / "a")
    other_study = pydicom.uid.generate_uid()
    for path in sorted((folder / "a").rglob("*.dcm")):  # the same images filed under a second study
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = other_study
        target = folder / "b" / path.relative_to(folder / "a")
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    result = run_app("-i", folder, "-o", tmp_path / "out", "-m", REPO / "models", "-c", config)
    assert result.returncode == 2
    assert_clean_log(result)
    (reason,) = [line for line in result.stderr.splitlines() if line.startswith("NOT ANALYSABLE")]
    assert "input holds 2 studies" in reason and "one study per run" in reason and len(reason) < 120
    assert len(list((tmp_path / "out").glob("*.dcm"))) == 2  # each study still gets its SR
