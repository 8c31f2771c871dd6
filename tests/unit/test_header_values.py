"""Dirty patient/study headers: every object is still written, invalid values empty, the log says which.

Each dirty value below was met in real exports (PatientSex '0000' and PatientBirthDate
'***' in the issue's Philips and UIH studies) or breaks a rule of its value
representation the same way. The written objects are checked with dciodvfy
(dicom3tools) when it is installed.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from operators.errors import VolumeConversionError
from operators.header_values import clear_invalid, header_problems, identifying_copy
from operators.output_config import OutputConfig
from operators.study_outputs import write_not_analysable_outputs, write_study_outputs
from tests.output_fixtures import StudyHeader, make_prediction, make_preprocessed, make_selected

LONG = "Overlongcomponent" * 4  # 68 characters: a PN component may hold 64
#: keyword -> (VR, raw value as an export writes it, what the log must say)
DIRTY = {
    "PatientSex": ("CS", b"0000", "not one of F, M, O"),
    "PatientBirthDate": ("DA", b"***", "not a date (YYYYMMDD)"),
    "StudyTime": ("TM", b"256199", "not a time of day"),
    "StudyDate": ("DA", b"20231340", "not a date (YYYYMMDD)"),
    "ReferringPhysicianName": ("PN", f"{LONG}^Jane".encode(), "not a person name"),
    "PatientName": ("PN", f"Doe^{LONG}".encode(), "not a person name"),
    "StudyDescription": ("LO", b"MR\\Head", "several values (a backslash)"),
    "InstitutionName": ("LO", b"Children's\\Ward 4", "several values (a backslash)"),
    "PatientAge": ("AS", b"6Y", "not an age"),
}


def _set_raw(ds: pydicom.Dataset, keyword: str, vr: str, value: bytes) -> None:
    """Put a value into a dataset exactly as a file would carry it (pydicom would refuse to set it)."""
    tag = Tag(tag_for_keyword(keyword))
    padded = value + (b" " if len(value) % 2 else b"")
    ds._dict[tag] = RawDataElement(tag, vr, len(padded), padded, 0, False, True)


def _dirty_series(keywords: list[str]):  # noqa: ANN202
    t2, flair = make_selected(StudyHeader(), slices=2)
    for series in (t2, flair):
        for ds in series.datasets:
            ds.PatientAge = "006Y"
            for keyword in keywords:
                vr, value, _ = DIRTY[keyword]
                _set_raw(ds, keyword, vr, value)
    return t2, flair


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        return []
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("keyword", sorted(DIRTY))
def test_each_dirty_value_is_named_and_never_quoted(keyword: str) -> None:
    (t2, _) = _dirty_series([keyword])
    problems = header_problems(t2.datasets[0])
    assert [p.keyword for p in problems] == [keyword]
    assert DIRTY[keyword][2] in problems[0].problem
    assert DIRTY[keyword][1].decode() not in str(problems[0])


def test_valid_values_pass_unchanged() -> None:
    t2, _ = make_selected(StudyHeader(patient_name="Müller^Jürgen"), slices=2)
    ds = t2.datasets[0]
    ds.PatientSex, ds.PatientBirthDate, ds.PatientAge, ds.StudyTime = "F", "20190301", "006Y", "101530.25"
    ds.StudyDescription = "MR Kopf nativ"
    assert header_problems(ds) == []
    before = {k: ds[k].value for k in ("PatientName", "PatientSex", "PatientBirthDate", "StudyTime")}
    assert clear_invalid(ds) == [] and {k: ds[k].value for k in before} == before


@pytest.mark.parametrize("keyword", sorted(DIRTY))
def test_every_object_is_written_with_the_dirty_value_left_empty(keyword: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    t2, flair = _dirty_series([keyword])
    caplog.set_level(logging.WARNING)
    written = write_study_outputs(tmp_path / "out", make_prediction(), [t2, flair], make_preprocessed([t2, flair]),
                                  config=OutputConfig(flair3_series=True, pdf=True))
    assert written.failures == {}
    assert written.sr is not None and written.pdf is not None and len(written.flair3_series) == 2
    assert written.result_page is not None
    for path in [written.sr, written.pdf, written.result_page, written.flair3_series[0]]:
        ds = pydicom.dcmread(path)
        assert ds.get(keyword) in (None, ""), f"{keyword} copied into {path.name}"
        assert ds.PatientID == "TSC-TEST-001" and ds.StudyInstanceUID == t2.datasets[0].StudyInstanceUID
    for path in (written.sr, written.pdf, written.result_page):
        assert _dciodvfy_errors(path) == [], path.name
    log = caplog.text
    assert f"{keyword} ({DIRTY[keyword][2]}" in log and "left empty" in log
    assert DIRTY[keyword][1].decode() not in log


def test_the_issues_study_gets_a_not_analysable_sr(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PatientSex '0000', PatientBirthDate '***', a valid PatientAge: the not-analysable SR is written."""
    t2, _ = _dirty_series(["PatientSex", "PatientBirthDate"])
    caplog.set_level(logging.WARNING)
    written = write_not_analysable_outputs(tmp_path, VolumeConversionError("no FLAIR"), t2.datasets)
    sr = pydicom.dcmread(written.not_analysable_sr)
    assert sr.PatientSex == "" and sr.PatientBirthDate == "" and sr.PatientAge == "006Y"
    assert _dciodvfy_errors(written.not_analysable_sr) == []
    assert "PatientBirthDate (not a date" in caplog.text and "PatientSex (not one of" in caplog.text
    assert "***" not in caplog.text and "'0000'" not in caplog.text


def test_a_result_sr_that_cannot_be_built_becomes_a_not_analysable_sr(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A NaN measurement makes highdicom refuse the result SR; the study still gets an SR saying so."""
    t2, flair = make_selected(StudyHeader(), slices=2)
    preprocessed = make_preprocessed([t2, flair])
    preprocessed.brain_volume_ml = math.nan
    written = write_study_outputs(tmp_path, make_prediction(), [t2, flair], preprocessed)
    assert written.sr is None and written.not_analysable_sr is not None and written.pdf is not None
    assert written.result_page is not None
    assert written.failures["sr"] == "the result SR could not be built (ValueError)"
    sr = pydicom.dcmread(written.not_analysable_sr)
    texts = [item.get("TextValue") for container in sr.ContentSequence for item in
             getattr(container, "ContentSequence", [])]
    assert "the result SR could not be built (ValueError)" in texts
    assert "Traceback" not in caplog.text


def test_a_not_analysable_sr_that_cannot_be_built_becomes_a_minimal_one(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """One source instance without a SOP Instance UID breaks the evidence list: identifiers only."""
    t2, flair = make_selected(StudyHeader(), slices=2)
    broken = flair.datasets[0]
    del broken.SOPInstanceUID
    caplog.set_level(logging.ERROR)
    written = write_not_analysable_outputs(tmp_path, VolumeConversionError("bad slice position"),
                                           [t2.datasets[0], broken])
    assert "writing a minimal one" in caplog.text and "Traceback" not in caplog.text
    sr = pydicom.dcmread(written.not_analysable_sr)
    assert sr.StudyInstanceUID == t2.datasets[0].StudyInstanceUID and sr.PatientID == "TSC-TEST-001"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(evidence) == 1 and len(evidence[0].ReferencedSOPSequence) == 1  # the identifying instance only
    texts = [item.get("TextValue") for container in sr.ContentSequence for item in
             getattr(container, "ContentSequence", [])]
    assert "bad slice position" in texts
    assert _dciodvfy_errors(written.not_analysable_sr) == []


def test_identifying_copy_keeps_only_valid_identifiers() -> None:
    t2, _ = _dirty_series(["PatientSex", "PatientName"])
    bare = identifying_copy(t2.datasets[0])
    assert bare.PatientID == "TSC-TEST-001" and bare.PatientSex is None and bare.PatientName is None
    assert bare.SOPInstanceUID == t2.datasets[0].SOPInstanceUID
    assert "PatientAge" not in bare and "PixelData" not in bare
