"""A one-study PDF report, encapsulated in DICOM, for radiologists to open in PACS.

Page 1: the result (the primary ensemble's predicted outcome with its verbal
confidence category, fused probability, spread, threshold), notices of degraded
modes, what the threshold and calibration mean, a chart of every member's and
ensemble's probability (both ensembles), the member table (ensemble, weights,
fold scores, why any member was left out), the clinical inputs with their
sources, quality notes and the analysed series. Page 2: key slices of FLAIR,
registered T2 and FLAIR3 with the brain-mask outline, the intended use (and the
intended-use check) and the model set's card summary. Every page carries
"Research use only". Wording and precision come from
:mod:`operators.report_wording`, shared with the SR and the result page.

The PDF deliberately prints no patient name or ID (the DICOM wrapper carries
them, and reportlab's fonts cannot render every script a name may use); it
shows the accession number and study date to tie it to the study.

:func:`render_report_pdf` makes the PDF bytes (matplotlib Agg for the figures,
reportlab for the layout); :func:`build_encapsulated_pdf` wraps them as an
Encapsulated PDF Storage instance in a new series of the source study.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

from operators import report_wording as words
from operators.datatypes import ClinicalData, Preprocessed, Prediction, Role, SelectedSeries
from operators.errors import OutputError
from operators.intended_use import IntendedUseCheck
from operators.output_common import code_item, copy_patient_study

logger = logging.getLogger(__name__)

DEFAULT_PDF_SERIES_NUMBER = 9003
DOCUMENT_TITLE = "TSC epilepsy outcome prognosis (research use only)"
RESEARCH_BANNER = "Research use only. Not for diagnosis."
SYNTHETIC_BANNER = "Models trained on synthetic data; not a clinical model."
_FONT = "DejaVuSans"
_FONT_BOLD = "DejaVuSans-Bold"


def key_slice_indices(mask: np.ndarray, count: int = 3) -> list[int]:
    """Slices at evenly spaced quantiles of the brain mask's extent (z, y, x array).

    Falls back to the middle slices when the mask is empty.
    """
    depth = mask.shape[0]
    areas = mask.reshape(depth, -1).sum(axis=1)
    filled = np.flatnonzero(areas)
    if filled.size == 0:
        filled = np.arange(depth)
    quantiles = np.linspace(0, 1, count + 2)[1:-1]
    picks = [int(filled[int(round(q * (filled.size - 1)))]) for q in quantiles]
    return sorted(dict.fromkeys(picks))


def _display_range(values: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    inside = values[mask > 0] if mask.any() else values.ravel()
    low, high = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1e-6))


def _figure_png(figure) -> BytesIO:
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    buffer.seek(0)
    return buffer


def _scores_chart(prediction: Prediction) -> BytesIO:
    """Every used member and every ensemble's fused probability, with each threshold."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    labels, values, colours = [], [], []
    for ensemble in [prediction, *(prediction.other_ensembles or {}).values()]:
        for member in ensemble.members:
            if member.used and member.score is not None:
                labels.append(f"{ensemble.ensemble}: {member.name}")
                values.append(float(member.score))
                colours.append("#7a9cc6" if ensemble is prediction else "#b8c7d9")
        labels.append(f"{ensemble.ensemble} fused" + (" (primary)" if ensemble is prediction else ""))
        values.append(float(ensemble.fused_score))
        colours.append(("#c0392b" if ensemble.predicted_uncontrolled else "#27ae60")
                       if ensemble is prediction else "#7f8c8d")
    figure = Figure(figsize=(6.4, 0.32 * len(labels) + 1.1))
    axes = figure.subplots()
    positions = np.arange(len(labels))[::-1]
    axes.barh(positions, values, color=colours)
    for y, value in zip(positions, values):
        axes.text(value + 0.01, y, words.prob(value), va="center", fontsize=7.5)
    thresholds = sorted({round(float(e.threshold), 6) for e in
                         [prediction, *(prediction.other_ensembles or {}).values()]})
    above = blended_transform_factory(axes.transData, axes.transAxes)
    for threshold in thresholds:
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1)
        # above the frame, so the frame never strikes the label through
        axes.text(threshold, 1.01, f"threshold {words.prob(threshold)}", transform=above,
                  ha="center", va="bottom", fontsize=8)
    axes.set_yticks(positions, labels, fontsize=7.5)
    axes.set_xlim(0, 1.08)
    axes.set_xticks(np.linspace(0, 1, 6))
    axes.set_xlabel("Probability of uncontrolled epilepsy at one year", fontsize=8)
    axes.tick_params(axis="x", labelsize=8)
    return _figure_png(figure)


def _key_slices_figure(preprocessed: Preprocessed, count: int) -> BytesIO:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    mask = sitk.GetArrayFromImage(preprocessed.brain_mask) > 0
    rows = [("FLAIR", preprocessed.flair), ("T2 registered", preprocessed.t2_in_flair),
            ("FLAIR3", preprocessed.flair3)]
    arrays = [(name, sitk.GetArrayFromImage(image).astype(np.float32)) for name, image in rows]
    for name, array in arrays:
        if array.shape != mask.shape:
            raise OutputError(f"{name} image is not on the brain-mask grid", stage="pdf_report")
    indices = key_slice_indices(mask.astype(np.uint8), count)
    spacing = preprocessed.flair.GetSpacing()
    figure = Figure(figsize=(2.1 * len(indices), 2.2 * len(rows)))
    axes = figure.subplots(len(rows), len(indices), squeeze=False)
    for r, (name, array) in enumerate(arrays):
        low, high = _display_range(array, mask)
        for c, z in enumerate(indices):
            ax = axes[r][c]
            ax.imshow(array[z], cmap="gray", vmin=low, vmax=high,
                      aspect=spacing[1] / spacing[0], interpolation="bilinear")
            if mask[z].any():
                ax.contour(mask[z].astype(float), levels=[0.5], colors="#f1c40f", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(f"slice {z + 1}", fontsize=8)
    figure.tight_layout()
    return _figure_png(figure)


def _register_fonts() -> None:
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if _FONT in pdfmetrics.getRegisteredFontNames():
        return
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(_FONT, str(fonts / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(_FONT_BOLD, str(fonts / "DejaVuSans-Bold.ttf")))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_report_pdf(
    prediction: Prediction,
    selected_series: Sequence[SelectedSeries],
    preprocessed: Preprocessed | None = None,
    *,
    model_card_summary: str = "",
    key_slices: int = 3,
    app_version: str = "",
    clinical: ClinicalData | None = None,
    intended_use: IntendedUseCheck | None = None,
) -> bytes:
    """Render the report as PDF bytes.

    Args:
        prediction: Scores, members, threshold, model-set facts and intended use.
        selected_series: The analysed T2/FLAIR series (study facts and series list).
        preprocessed: Images for the key-slice page and the quality notes; the
            page is left out when None.
        model_card_summary: Short model-card text (data, metrics, limits).
        key_slices: Number of key slices per row.
        app_version: Version printed in the footer.
        clinical: The clinical inputs and their sources.
        intended_use: The intended-use check (and any site widening).

    Returns:
        The PDF document.

    Raises:
        OutputError: When the images are not on one grid.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm
    from reportlab.platypus import (Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer,
                                    Table, TableStyle)

    _register_fonts()
    body = ParagraphStyle("body", fontName=_FONT, fontSize=9, leading=12)
    small = ParagraphStyle("small", parent=body, fontSize=8, leading=10)
    heading = ParagraphStyle("heading", parent=body, fontName=_FONT_BOLD, fontSize=12, leading=16,
                             spaceBefore=6, spaceAfter=4)
    title = ParagraphStyle("title", parent=heading, fontSize=15, leading=19)
    banner = ParagraphStyle("banner", parent=body, fontName=_FONT_BOLD, textColor=colors.white,
                            backColor=colors.HexColor("#b03a2e"), borderPadding=4, fontSize=10)
    warning = ParagraphStyle("warning", parent=body, fontName=_FONT_BOLD, textColor=colors.black,
                             backColor=colors.HexColor("#f8d7a8"), borderPadding=3)

    by_role = {s.role: s for s in selected_series}
    reference = next((s.datasets[0] for s in selected_series if s.datasets), Dataset())
    story: list = [Paragraph(_escape(DOCUMENT_TITLE), title)]
    banners = [RESEARCH_BANNER] + ([SYNTHETIC_BANNER] if prediction.model_set_synthetic else [])
    story += [Paragraph(_escape(" ".join(banners)), banner), Spacer(1, 0.3 * cm)]
    story.append(Paragraph(
        f"Accession number: {_escape(str(reference.get('AccessionNumber', '') or '-'))} &nbsp; "
        f"Study date: {_escape(words.reader_date(reference.get('StudyDate')))} &nbsp; "
        "Patient identification: see the DICOM header of this document.", small))

    confidence = words.confidence(prediction)
    story.append(Paragraph("Result", heading))
    story.append(Paragraph(
        f"<b>{_escape(prediction.ensemble)} (primary ensemble): {words.outcome(prediction).upper()} "
        f"predicted</b> (preliminary, unverified). Confidence: <b>{confidence.category}</b> "
        f"({_escape(confidence.explanation)}).", body))
    story.append(Paragraph(
        f"Fused probability of uncontrolled epilepsy <b>{words.prob(prediction.fused_score)}</b>; "
        f"decision threshold {words.prob(prediction.threshold)}; spread: "
        f"{_escape(words.spread(prediction))}. Model set {_escape(prediction.model_set_name or '-')} "
        f"{_escape(prediction.model_set_version or '')}"
        + (f"; inference engine {_escape(prediction.inference_engine)}." if prediction.inference_engine else "."),
        body))
    for line in words.other_ensemble_lines(prediction):
        story.append(Paragraph("Other ensemble: " + _escape(line), body))
    degraded = words.degraded_modes(prediction, preprocessed)
    if degraded:
        story.append(Spacer(1, 0.15 * cm))
        story.append(Paragraph("Degraded analysis, read with care: " + _escape(" ".join(degraded)), warning))
        story.append(Spacer(1, 0.15 * cm))
    story.append(Paragraph(_escape(words.threshold_statement(prediction)), small))
    story.append(Paragraph(_escape(words.calibration_statement(prediction)), small))
    agreement = prediction.agreement or {}
    notes = []
    if "member_sd" in agreement:
        notes.append(f"weighted SD of member probabilities {words.prob(agreement['member_sd'])}")
    if "member_weight_agreeing" in agreement:
        notes.append(f"{100 * agreement['member_weight_agreeing']:.0f}% of the weight on the "
                     "same side of the threshold")
    if "fold_sd_max" in agreement:
        notes.append(f"largest fold SD within a member {words.prob(agreement['fold_sd_max'])}")
    if notes:
        story.append(Paragraph("Agreement: " + "; ".join(notes) + ".", small))
    story.append(_scaled_image(Image, _scores_chart(prediction), 15 * cm, max_height=9 * cm))

    rows = [["Ensemble", "Member", "Used", "Weight", "Probability", "Fold probabilities / reason left out"]]
    for ensemble in [prediction, *(prediction.other_ensembles or {}).values()]:
        for member in ensemble.members:
            detail = (", ".join(words.prob(v) for v in member.fold_scores) if member.used
                      else member.reason_left_out or "-")
            rows.append([ensemble.ensemble, member.name, "yes" if member.used else "no",
                         f"{member.weight:.2f}", words.prob(member.score) if member.score is not None else "-",
                         Paragraph(_escape(detail), small)])
    table = Table(rows, colWidths=[2.1 * cm, 3.0 * cm, 1.1 * cm, 1.4 * cm, 1.9 * cm, 7.9 * cm],
                  repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTNAME", (0, 0), (-1, -1), _FONT), ("FONTNAME", (0, 0), (-1, 0), _FONT_BOLD),
        ("FONTSIZE", (0, 0), (-1, -1), 8), ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
        ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [Spacer(1, 0.2 * cm), table]

    story.append(Paragraph("Clinical inputs", heading))
    for line in words.clinical_lines(clinical):
        story.append(Paragraph(_escape(line), small))

    story.append(Paragraph("Analysed series", heading))
    for line in words.series_lines(selected_series):
        story.append(Paragraph(_escape(line), small))

    story.append(Paragraph("Quality notes", heading))
    if preprocessed is not None:
        story.append(Paragraph(
            f"Brain extraction: {_escape(preprocessed.brain_extraction_method or 'unknown')}; "
            f"brain volume {preprocessed.brain_volume_ml:.0f} ml; registration metric "
            f"{preprocessed.registration_metric:.2f}.", small))
        for line in words.quality_lines(preprocessed.flags):
            story.append(Paragraph(_escape(line), small))
    else:
        story.append(Paragraph("No preprocessing quality information was given.", small))

    if preprocessed is not None:
        story += [PageBreak(), Paragraph("Key slices", heading), Paragraph(
            "FLAIR, T2 registered into FLAIR space, and FLAIR3, with the brain-mask outline "
            "(yellow). Radiological orientation (patient's right on the image left).", small)]
        story.append(_scaled_image(Image, _key_slices_figure(preprocessed, key_slices), 16 * cm,
                                   max_height=20 * cm))

    story.append(Paragraph("Intended use", heading))
    intended = prediction.intended_use or (
        "Research use only: estimates the probability that epilepsy in a child with tuberous "
        "sclerosis complex remains uncontrolled after one year of antiseizure medication, from "
        "the pre-treatment T2 and FLAIR MRI (and clinical variables when available).")
    story.append(Paragraph(_escape(intended), body))
    if intended_use is not None:
        for line in intended_use.statements():
            story.append(Paragraph(_escape(line), small))
    story.append(Paragraph("Model card summary", heading))
    story.append(Paragraph(_escape(model_card_summary or (
        "The model set has no model card: its data, metrics and limits are unknown to this report."
    )), body))

    def footer(canvas, document) -> None:
        canvas.saveState()
        canvas.setFont(_FONT, 7)
        canvas.drawString(2 * cm, 1.2 * cm, f"{RESEARCH_BANNER} tsc-epilepsy-outcome "
                          f"{app_version}  -  page {document.page}")
        canvas.restoreState()

    buffer = BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, title=DOCUMENT_TITLE,
                                 author="tsc-epilepsy-outcome", leftMargin=1.8 * cm,
                                 rightMargin=1.8 * cm, topMargin=1.5 * cm, bottomMargin=2 * cm)
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _scaled_image(image_class, png: BytesIO, width: float, max_height: float = 600.0):
    """A reportlab image of at most ``width`` x ``max_height`` points, aspect kept."""
    from reportlab.lib.utils import ImageReader

    pixel_width, pixel_height = ImageReader(png).getSize()
    png.seek(0)
    scale = min(width / pixel_width, max_height / pixel_height)
    return image_class(png, width=pixel_width * scale, height=pixel_height * scale)


def build_encapsulated_pdf(
    pdf: bytes,
    selected_series: Sequence[SelectedSeries],
    *,
    series_number: int = DEFAULT_PDF_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    manufacturer: str = "tsc-epilepsy-outcome open-source project",
    software_version: str = "",
) -> Dataset:
    """Wrap PDF bytes as an Encapsulated PDF Storage instance in the source study.

    Args:
        pdf: The PDF document.
        selected_series: The analysed series: the first instance gives the patient
            and study modules; all instances are listed as source instances.
        series_number: Series Number of the new series.
        series_instance_uid: UID of the new series (generated when None).
        sop_instance_uid: UID of the instance (generated when None).
        manufacturer: Manufacturer of the equipment (the app).
        software_version: Software Versions of the app.

    Returns:
        The Encapsulated PDF dataset (file meta included).

    Raises:
        OutputError: When ``pdf`` is not a PDF or no source instance is given.
    """
    if not pdf.startswith(b"%PDF-"):
        raise OutputError("Report bytes are not a PDF document", stage="pdf_report")
    sources = [ds for s in selected_series for ds in s.datasets]
    if not sources:
        raise OutputError("No source instance given for the PDF report", stage="pdf_report")
    now = datetime.now()
    ds = Dataset()
    copy_patient_study(sources[0], ds)
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "AI epilepsy outcome report: RESEARCH USE ONLY"
    ds.ConversionType = "SYN"
    ds.Manufacturer = manufacturer
    if software_version:
        ds.SoftwareVersions = software_version
    ds.InstanceNumber = 1
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = DOCUMENT_TITLE
    ds.ConceptNameCodeSequence = [code_item("18748-4", "LN", "Diagnostic imaging report")]
    ds.VerificationFlag = "UNVERIFIED"
    source_items = []
    for source in sources:
        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        source_items.append(item)
    ds.SourceInstanceSequence = source_items
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    logger.info("Encapsulated PDF %s built (%d bytes) for study %s", ds.SOPInstanceUID, len(pdf),
                ds.get("StudyInstanceUID", "?"))
    return ds


def save_pdf_instance(ds: Dataset, output_folder: Path) -> Path:
    """Write the Encapsulated PDF instance as ``<SOPInstanceUID>.dcm``."""
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
