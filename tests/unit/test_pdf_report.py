"""Unit tests of the PDF report and its DICOM encapsulation (operators.pdf_report)."""

from __future__ import annotations

import shutil
import subprocess
from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.uid import EncapsulatedPDFStorage

from operators.errors import OutputError
from operators.pdf_report import (
    RESEARCH_BANNER,
    SYNTHETIC_BANNER,
    build_encapsulated_pdf,
    key_slice_indices,
    render_report_pdf,
)
from tests.output_fixtures import (
    NON_ASCII_NAME,
    StudyHeader,
    make_prediction,
    make_preprocessed,
    make_selected,
)


@pytest.fixture(scope="module")
def report():
    study = StudyHeader(patient_name=NON_ASCII_NAME)
    selected = make_selected(study, slices=6, rows=48, columns=40)
    prediction = make_prediction()
    pdf = render_report_pdf(prediction, selected, make_preprocessed(selected),
                            model_card_summary="Demo model card: synthetic cohort, AUC 0.9.")
    return study, selected, prediction, pdf


def _pdf_text(pdf: bytes, tmp_path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_key_slices_spread_over_the_brain():
    mask = np.zeros((20, 8, 8), np.uint8)
    mask[5:15, 2:6, 2:6] = 1
    low, middle, high = key_slice_indices(mask, 3)
    assert 5 <= low < 9 and abs(middle - 9.5) <= 1 and 10 < high < 15  # quartiles of 5..14
    assert key_slice_indices(np.zeros((4, 2, 2), np.uint8), 1) == [2]
    assert all(5 <= z < 15 for z in key_slice_indices(mask, 5))


def test_report_states_result_members_and_use(report, tmp_path):
    _, _, prediction, pdf = report
    assert pdf.startswith(b"%PDF-")
    text = " ".join(_pdf_text(pdf, tmp_path).split())
    assert RESEARCH_BANNER in text and SYNTHETIC_BANNER in text
    assert f"Fused probability of uncontrolled epilepsy {prediction.fused_score:.3f}" in text
    assert "WAE-Net (primary ensemble): UNCONTROLLED EPILEPSY AT ONE YEAR predicted" in text
    assert "Confidence: consistent" in text
    assert "Decision threshold 0.500 on the fused probability" in text and "Platt-calibrated" not in text
    assert "Degraded analysis, read with care: Members left out" in text
    assert "Study date: 5 Jan 2024" in text and "20240105" not in text
    assert "Clinical inputs" in text
    for member in prediction.members:
        assert member.name in text
    assert "clinical.json missing" in text
    assert "Key slices" in text and "Demo model card" in text
    assert NON_ASCII_NAME.split("^")[0] not in text  # no patient name in the PDF body


def test_report_without_images_has_no_key_slice_page(tmp_path):
    selected = make_selected(StudyHeader())
    pdf = render_report_pdf(make_prediction(synthetic=False), selected)
    text = _pdf_text(pdf, tmp_path)
    assert "Key slices" not in text and SYNTHETIC_BANNER not in " ".join(text.split())


def test_encapsulated_pdf_round_trip(report):
    study, selected, _, pdf = report
    ds = build_encapsulated_pdf(pdf, selected, series_number=9100)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    back = pydicom.dcmread(buffer)
    assert back.SOPClassUID == EncapsulatedPDFStorage
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(back.EncapsulatedDocument)[:back.EncapsulatedDocumentLength] == pdf
    assert back.StudyInstanceUID == study.study_uid and back.SeriesNumber == 9100
    assert str(back.PatientName) == NON_ASCII_NAME and back.SpecificCharacterSet == "ISO_IR 192"
    assert {i.ReferencedSOPInstanceUID for i in back.SourceInstanceSequence} == {
        d.SOPInstanceUID for s in selected for d in s.datasets}


def test_encapsulation_rejects_non_pdf_and_missing_source(report):
    _, selected, _, pdf = report
    with pytest.raises(OutputError, match="not a PDF"):
        build_encapsulated_pdf(b"<html>", selected)
    with pytest.raises(OutputError, match="No source instance"):
        build_encapsulated_pdf(pdf, [])


@pytest.mark.parametrize("slices, rows, columns", [(1, 16, 16), (4, 32, 28), (30, 24, 64)])
def test_report_fits_any_grid_on_the_page(slices, rows, columns):
    selected = make_selected(StudyHeader(), slices=slices, rows=rows, columns=columns)
    pdf = render_report_pdf(make_prediction(), selected, make_preprocessed(selected))
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


def test_report_shows_both_ensembles_and_the_model_cards_summary(tmp_path):
    from dataclasses import replace

    from operators.output_config import OutputConfig
    from operators.study_outputs import write_study_outputs

    selected = make_selected(StudyHeader(), slices=3)
    prediction = make_prediction()
    prediction.other_ensembles = {"eTSC-Net": replace(make_prediction(fused=0.42), ensemble="eTSC-Net")}
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Model card\n\n> **Trained on SYNTHETIC data.**\n\n## Data\n\nSixty children. More.\n",
                    encoding="utf-8")
    written = write_study_outputs(tmp_path / "out", prediction, selected, None, model_card=card,
                                  config=OutputConfig(result_page=False))
    pdf = bytes(pydicom.dcmread(written.pdf).EncapsulatedDocument).rstrip(b"\0")
    text = " ".join(_pdf_text(pdf, tmp_path).split())
    assert "Other ensemble: eTSC-Net: fused probability 0.420 -> controlled epilepsy at one year" in text
    assert "eTSC-Net FLAIR-ResNet3D yes 0.33 0.800" in text  # the member table has both ensembles
    assert "Trained on SYNTHETIC data. Sixty children." in text
    assert "No model card summary was provided" not in text
