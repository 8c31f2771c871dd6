"""An SR superseded by the node (Predecessor Documents Sequence + change note) stays a valid TID 1500 SR.

Checked with PixelMed's DicomSRValidator (Debian ``libpixelmed-java``), dcmtk's
``dsrdump`` and dicom3tools' ``dciodvfy`` where installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from operators.errors import SeriesSelectionError
from operators.sr_writer import PredecessorDocument, build_not_analysable_sr, save_sr, supersede_sr
from tests.node_helpers import make_instance

pytestmark = [pytest.mark.integration]
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")


@pytest.fixture()
def superseded(tmp_path: Path) -> tuple[Path, pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    sources = [make_instance(study, series, instance_number=i + 1, payload_bytes=256) for i in range(2)]
    first = build_not_analysable_sr(SeriesSelectionError("No FLAIR series among 1 series"), sources)
    second = save_sr(build_not_analysable_sr(SeriesSelectionError("No FLAIR series among 1 series"), sources),
                     tmp_path)
    note = ("Supersedes 1 earlier report(s) of this study (last one 2026-11-30 13:13 UTC: not analysable). "
            "More images arrived after that report: 1 instance(s). This report analyses everything "
            "received: 2 instance(s) in 1 series.")
    supersede_sr(second, [PredecessorDocument(str(first.SOPClassUID), str(first.SOPInstanceUID),
                                              str(first.SeriesInstanceUID), study)], note)
    return second, first


def test_predecessor_and_note_are_written(superseded) -> None:
    path, first = superseded
    sr = pydicom.dcmread(path)
    (study_item,) = sr.PredecessorDocumentsSequence
    (series_item,) = study_item.ReferencedSeriesSequence
    (ref,) = series_item.ReferencedSOPSequence
    assert ref.ReferencedSOPInstanceUID == first.SOPInstanceUID and study_item.StudyInstanceUID == sr.StudyInstanceUID
    assert "Supersedes 1 earlier report" in str(sr.to_json_dict())
    with pytest.raises(ValueError, match="another study"):
        supersede_sr(path, [PredecessorDocument("1.2", "1.2.3", "1.2.4", generate_uid())], "x")


@pytest.mark.skipif(shutil.which("java") is None or not PIXELMED_JAR.exists(), reason="PixelMed not installed")
def test_pixelmed_finds_no_error(superseded) -> None:
    path, _ = superseded
    out = subprocess.run(["java", "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
                          "-Djdk.xml.xpathTotalOpLimit=0", "-cp", str(PIXELMED_JAR),
                          "com.pixelmed.validate.DicomSRValidator", str(path)],
                         capture_output=True, text=True, timeout=300)
    report = out.stdout + out.stderr
    assert "Root Template Validation Complete" in report, report[-2000:]
    assert [line for line in report.splitlines() if line.startswith("Error")] == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_dciodvfy_finds_no_error(superseded) -> None:
    path, _ = superseded
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], out.stderr[-2000:]


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk not installed")
def test_dsrdump_reads_it(superseded) -> None:
    path, _ = superseded
    out = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Supersedes 1 earlier report" in out.stdout
    assert not [line for line in out.stderr.splitlines() if line.startswith(("E:", "F:"))]
