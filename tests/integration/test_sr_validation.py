"""The app's result objects checked by independent DICOM tools.

* PixelMed's DicomSRValidator (Debian ``libpixelmed-java``): 0 errors on every SR
  the app writes (result SR, not-analysable SR with and without selected series,
  result SR over real Enhanced MR files), and it does flag a known violation.
* dcmtk's ``dsrdump`` reads every SR without warnings; the one exception is
  dcmtk 3.6.7's notice that its VR checker does not support a Specific Character
  Set other than ASCII/Latin-1 (printed for any ISO_IR 192 document).
* dcmtk's ``dcmdump +E`` reads the FLAIR3 series and the Encapsulated PDF without
  errors or warnings; ``pdftoppm`` renders the encapsulated PDF to PNG pages.

PixelMed takes ~10-30 s per document (JVM start and template compilation), so
this module is marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest

from operators.datatypes import Role, SelectedSeries, SelectionExplanation
from operators.errors import QualityCheckError, SeriesSelectionError
from operators.output_config import OutputConfig
from operators.sr_reader import read_result_sr
from operators.sr_writer import build_not_analysable_sr, build_result_sr, save_sr
from operators.study_outputs import write_study_outputs
from tests.output_fixtures import (
    NON_ASCII_NAME,
    StudyHeader,
    make_prediction,
    make_preprocessed,
    make_selected,
    shared_data_dir,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIXELMED_JAR = Path(os.environ.get("PIXELMED_JAR", "/usr/share/java/pixelmed.jar"))
BATCH_VALIDATOR = Path(__file__).resolve().parent / "pixelmed" / "ValidateMany.java"
DCMTK_CHARSET_NOTICE = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package dcmtk / poppler-utils / default-jre)")
    return path


def pixelmed_validate(paths: list[Path]) -> dict[Path, str]:
    """PixelMed's DicomSRValidator output for each file.

    With a JDK, all files are validated in one JVM (tests/integration/pixelmed/
    ValidateMany.java, run as a single-file source program), which compiles the
    validator's templates once; with a bare JRE, one JVM per file.
    """
    java = _need("java")
    if not PIXELMED_JAR.exists():
        pytest.skip(f"PixelMed not installed ({PIXELMED_JAR}; Debian libpixelmed-java)")
    options = [java, "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
               "-Djdk.xml.xpathTotalOpLimit=0", "-cp", str(PIXELMED_JAR)]
    if shutil.which("javac"):
        result = subprocess.run([*options, str(BATCH_VALIDATOR), *map(str, paths)],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        reports: dict[Path, str] = {}
        for path in paths:
            begin, end = f"=== BEGIN {path}\n", f"=== END {path}\n"
            start = result.stdout.index(begin) + len(begin)
            reports[path] = result.stdout[start:result.stdout.index(end, start)]
        return reports
    return {path: _run_single(options, path) for path in paths}


def _run_single(options: list[str], path: Path) -> str:
    result = subprocess.run([*options, "com.pixelmed.validate.DicomSRValidator", str(path)],
                            capture_output=True, text=True, timeout=300)
    return result.stdout + result.stderr


def _errors(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("Error")]


def _dcmtk_problems(tool: str, *args: str, path: Path) -> list[str]:
    result = subprocess.run([_need(tool), *args, str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith(("E:", "W:", "F:"))]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The SRs, FLAIR3 series and PDF the app writes for constructed studies."""
    root = tmp_path_factory.mktemp("outputs")
    utf8 = StudyHeader(patient_name=NON_ASCII_NAME)
    selected = make_selected(utf8, slices=4)
    prediction = make_prediction()
    outputs = write_study_outputs(root / "analysed", prediction, selected,
                                  make_preprocessed(selected),
                                  config=OutputConfig(flair3_series=True, pdf=True))
    ascii_study = StudyHeader(patient_name="Doe^Jane", character_set="ISO_IR 100")
    ascii_selected = make_selected(ascii_study, slices=2)
    files = {
        "result_utf8": outputs.sr,
        "result_latin1": save_sr(build_result_sr(make_prediction(synthetic=False), ascii_selected),
                                 root / "latin1"),
        "not_analysable_no_series": save_sr(build_not_analysable_sr(
            SeriesSelectionError("No FLAIR series among 1 series"), selected[0].datasets),
            root / "na1"),
        "not_analysable_after_selection": save_sr(build_not_analysable_sr(
            QualityCheckError("Brain volume 120 ml outside 400-2000 ml"), [],
            selected_series=selected), root / "na2"),
    }
    files["broken_procedure_code"] = _with_procedure_outside_cid_100(
        files["not_analysable_no_series"], root / "broken.dcm")
    enhanced = _result_sr_over_real_enhanced_mr(root / "enhanced")
    if enhanced is not None:
        files["result_real_enhanced_mr"] = enhanced
    return {"sr": files, "outputs": outputs, "selected": selected, "prediction": prediction}


@pytest.fixture(scope="module")
def pixelmed(written):
    """PixelMed output per SR kind (one validator run for the whole module).

    The Latin-1 result SR differs from the UTF-8 one only in character set, which
    the template validation does not look at; it is left out to save a JVM run
    where no JDK is installed.
    """
    kinds = {k: p for k, p in written["sr"].items() if k != "result_latin1"}
    reports = pixelmed_validate(list(kinds.values()))
    return {kind: reports[path] for kind, path in kinds.items()}


def _with_procedure_outside_cid_100(source: Path, target: Path) -> Path:
    ds = pydicom.dcmread(source)
    for item in ds.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "121058":  # Procedure reported
            item.ConceptCodeSequence[0].CodeValue = "24590-2"
            item.ConceptCodeSequence[0].CodeMeaning = "Brain MRI"
    ds.save_as(target)
    return target


def _real_enhanced_mr_selection() -> list[SelectedSeries] | None:
    """Two real Siemens XA30 Enhanced MR instances standing in for T2 and FLAIR."""
    folder = shared_data_dir() / "data" / "dicom-variety" / "dcm_qa_xa30" / "In"
    files = sorted(folder.glob("*/*.dcm")) if folder.is_dir() else []
    if len(files) < 2:
        return None
    selected = []
    for role, path in zip((Role.T2, Role.FLAIR), files):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        selected.append(SelectedSeries(role, ds.SeriesInstanceUID, [ds], [path],
                                       SelectionExplanation(role, "test", {})))
    return selected


def _result_sr_over_real_enhanced_mr(folder: Path) -> Path | None:
    selected = _real_enhanced_mr_selection()
    if selected is None:
        return None
    return save_sr(build_result_sr(make_prediction(), selected), folder)


VALID_KINDS = ["result_utf8", "result_latin1", "not_analysable_no_series",
               "not_analysable_after_selection", "result_real_enhanced_mr"]


@pytest.mark.parametrize("kind", [k for k in VALID_KINDS if k != "result_latin1"])
def test_pixelmed_reports_no_errors(written, pixelmed, kind):
    if kind not in pixelmed:
        pytest.skip("shared real DICOM (dcm_qa_xa30) not found; set TSC_SHARED_DIR")
    report = pixelmed[kind]
    assert "Found Root Template TID_1500" in report, report[-2000:]
    assert "Root Template Validation Complete" in report, report[-2000:]
    assert _errors(report) == []


def test_pixelmed_flags_a_procedure_code_outside_cid_100(pixelmed):
    errors = _errors(pixelmed["broken_procedure_code"])
    assert len(errors) == 1 and "context group 100" in errors[0]


@pytest.mark.parametrize("kind", VALID_KINDS)
def test_dsrdump_reads_without_warnings(written, kind):
    if kind not in written["sr"]:
        pytest.skip("shared real DICOM (dcm_qa_xa30) not found; set TSC_SHARED_DIR")
    path = written["sr"][kind]
    problems = _dcmtk_problems("dsrdump", path=path)
    if pydicom.dcmread(path).SpecificCharacterSet == "ISO_IR 192":
        assert problems == [DCMTK_CHARSET_NOTICE]
    else:
        assert problems == []


def test_flair3_series_and_pdf_pass_dcmdump(written):
    outputs = written["outputs"]
    assert len(outputs.flair3_series) == 4 and outputs.pdf is not None
    for path in [*outputs.flair3_series, outputs.pdf]:
        assert _dcmtk_problems("dcmdump", "+E", path=path) == [], path.name


def test_encapsulated_pdf_renders_to_png(written, tmp_path):
    pdftoppm = _need("pdftoppm")
    ds = pydicom.dcmread(written["outputs"].pdf)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(bytes(ds.EncapsulatedDocument)[:ds.EncapsulatedDocumentLength])
    subprocess.run([pdftoppm, "-r", "50", "-png", str(pdf), str(tmp_path / "page")],
                   check=True, capture_output=True, timeout=120)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 2
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 5000 for p in pages)


def test_real_enhanced_mr_references_and_no_name_in_warnings(tmp_path):
    """Enhanced MR sources: references read back, and no warning quotes the patient name."""
    selected = _real_enhanced_mr_selection()
    if selected is None:
        pytest.skip("shared real DICOM (dcm_qa_xa30) not found; set TSC_SHARED_DIR")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sr = build_result_sr(make_prediction(), selected)
    patient_name = str(selected[0].datasets[0].PatientName)
    assert not any(patient_name in str(w.message) for w in caught)
    reported = read_result_sr(pydicom.dcmread(save_sr(sr, tmp_path)))
    assert reported.image_library_sop_uids == [s.datasets[0].SOPInstanceUID for s in selected]
    assert reported.evidence_series_uids == {s.series_instance_uid for s in selected}
