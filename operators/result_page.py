"""The result page: one Secondary Capture image every viewer shows.

OHIF does not show a TID 1500 SR without image geometry, some viewers do not
open encapsulated PDF, but every PACS viewer shows a Secondary Capture image.
The page is rendered with matplotlib (Agg) as one RGB image and written with
highdicom (:class:`highdicom.sc.SCImage`) as a new series in the source study.

It holds, top to bottom: the research-use (and synthetic-model) banner; the
primary ensemble's prediction with its verbal confidence category; the fused
probability with the spread of members and fold models on a chart with the
threshold; notices of degraded modes and every quality flag; what the
threshold and the calibration mean; the other ensemble; the series used; the
intended-use check; the clinical inputs with their sources; and key FLAIR
slices with the brain-mask outline. No patient name or ID is burned in (the
DICOM header carries them).
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from operators import report_wording as words
from operators.datatypes import ClinicalData, Prediction, Preprocessed, SelectedSeries
from operators.errors import OutputError
from operators.intended_use import IntendedUseCheck

logger = logging.getLogger(__name__)

DEFAULT_RESULT_PAGE_SERIES_NUMBER = 9004
PAGE_INCHES = (11.0, 16.5)
PAGE_DPI = 100
_RED, _ORANGE, _GREEN, _GREY = "#b03a2e", "#d35400", "#1e8449", "#555555"


class _Cursor:
    """Writes wrapped text blocks down a figure, top to bottom."""

    def __init__(self, figure, top: float = 0.985, left: float = 0.04, width_chars: int = 126) -> None:
        self.figure, self.y, self.left, self.width = figure, top, left, width_chars
        self.line = 1.0 / (PAGE_INCHES[1] * 72 / 10.5)  # 10.5 pt in figure units

    def text(self, text: str, *, size: float = 10.5, weight: str = "normal", color: str = "black",
             box: str | None = None, gap: float = 0.25) -> None:
        width = int(self.width * 10.5 / size * (0.88 if weight == "bold" else 1.0))
        lines = [wrapped for paragraph in text.split("\n")
                 for wrapped in (textwrap.wrap(paragraph, width) or [""])]
        kwargs = {}
        if box:
            kwargs["bbox"] = dict(facecolor=box, edgecolor="none", pad=4)
        self.figure.text(self.left, self.y, "\n".join(lines), fontsize=size, weight=weight, color=color,
                         va="top", ha="left", family="DejaVu Sans", linespacing=1.25, **kwargs)
        self.y -= self.line * size / 10.5 * (len(lines) * 1.2 * 1.25 + gap)

    def heading(self, text: str) -> None:
        self.y -= self.line * 0.3
        self.text(text, size=12, weight="bold", gap=0.1)

    def lines(self, items: Sequence[str], **kwargs) -> None:
        for item in items:
            self.text("• " + item, gap=0.05, **kwargs)


def _chart(figure, rect: list[float], prediction: Prediction) -> None:
    """Members (dots, fold range as a bar) and the fused probability, with the threshold."""
    axes = figure.add_axes(rect)
    used = [m for m in prediction.members if m.used and m.score is not None]
    rows = [(f"{m.name} (weight {m.weight:.2f})", float(m.score), m.fold_scores) for m in used]
    rows.append((f"{prediction.ensemble} fused", float(prediction.fused_score), ()))
    positions = np.arange(len(rows))[::-1]
    for y, (label, value, folds) in zip(positions, rows):
        fused = not folds and label.endswith("fused")
        colour = (_RED if prediction.predicted_uncontrolled else _GREEN) if fused else "#2e5e8c"
        if folds:
            axes.plot([min(folds), max(folds)], [y, y], color="#9db4cf", linewidth=6,
                      solid_capstyle="butt")
            axes.plot(folds, [y] * len(folds), "|", color="#2e5e8c", markersize=10)
        axes.plot([value], [y], "D" if fused else "o", color=colour, markersize=10 if fused else 7)
        axes.annotate(words.prob(value), (value, y), xytext=(0, 9), textcoords="offset points",
                      ha="center", fontsize=9.5, color=colour, weight="bold" if fused else "normal")
    axes.axvline(prediction.threshold, color="black", linestyle="--", linewidth=1.2)
    axes.set_yticks(positions, [r[0] for r in rows], fontsize=9.5)
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.7, len(rows) - 0.2)
    axes.set_xlabel(f"Probability of uncontrolled epilepsy at one year (dashed line: threshold "
                    f"{words.prob(prediction.threshold)}; bars: range of the fold models)", fontsize=9.5)
    axes.tick_params(axis="x", labelsize=9)
    axes.grid(axis="x", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)


def _key_images(figure, rect: list[float], preprocessed: Preprocessed, count: int = 3) -> None:
    from operators.pdf_report import key_slice_indices

    mask = sitk.GetArrayFromImage(preprocessed.brain_mask) > 0
    flair = sitk.GetArrayFromImage(preprocessed.flair).astype(np.float32)
    if flair.shape != mask.shape:
        raise OutputError("FLAIR is not on the brain-mask grid", stage="result_page")
    inside = flair[mask] if mask.any() else flair.ravel()
    low, high = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
    spacing = preprocessed.flair.GetSpacing()
    indices = key_slice_indices(mask.astype(np.uint8), count)
    left, bottom, width, height = rect
    each = width / len(indices)
    for i, z in enumerate(indices):
        axes = figure.add_axes([left + i * each, bottom, each * 0.96, height])
        axes.imshow(flair[z], cmap="gray", vmin=low, vmax=max(high, low + 1e-6),
                    aspect=spacing[1] / spacing[0], interpolation="bilinear")
        if mask[z].any():
            axes.contour(mask[z].astype(float), levels=[0.5], colors="#f1c40f", linewidths=1.0)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(f"FLAIR slice {z + 1} of {mask.shape[0]}", fontsize=9.5)


def render_result_page(
    prediction: Prediction,
    selected_series: Sequence[SelectedSeries],
    preprocessed: Preprocessed | None = None,
    *,
    clinical: ClinicalData | None = None,
    intended_use: IntendedUseCheck | None = None,
) -> np.ndarray:
    """Render the result page.

    Args:
        prediction: The primary ensemble's prediction (others inside it).
        selected_series: The analysed series.
        preprocessed: Images for the key slices and the quality flags (optional).
        clinical: The clinical inputs and their sources (optional).
        intended_use: The intended-use check (optional).

    Returns:
        The page as an RGB ``uint8`` array (rows, columns, 3).
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PAGE_INCHES, dpi=PAGE_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    cursor = _Cursor(figure)
    banner = "RESEARCH USE ONLY. NOT FOR DIAGNOSIS OR TREATMENT DECISIONS."
    if prediction.model_set_synthetic:
        banner += " Models trained on SYNTHETIC data: not a clinical model."
    cursor.text(banner, size=12, weight="bold", color="white", box=_RED, gap=0.6)
    reference = next((s.datasets[0] for s in selected_series if s.datasets), Dataset())
    cursor.text(f"TSC epilepsy outcome prognosis. Study of {words.reader_date(reference.get('StudyDate'))}; "
                f"model set {prediction.model_set_name or '-'} {prediction.model_set_version}; "
                "preliminary, unverified.", size=10, color=_GREY)

    confidence = words.confidence(prediction)
    colour = _RED if prediction.predicted_uncontrolled else _GREEN
    cursor.text(f"{prediction.ensemble} (primary ensemble): {words.outcome(prediction).upper()} predicted",
                size=16, weight="bold", color=colour, gap=0.3)
    cursor.text(f"Confidence: {confidence.category.upper()} ({confidence.explanation}).", size=12,
                weight="bold", gap=0.1)
    cursor.text(f"Fused probability {words.prob(prediction.fused_score)}, threshold "
                f"{words.prob(prediction.threshold)}; spread: {words.spread(prediction)}.", size=12)

    used = sum(1 for m in prediction.members if m.used)
    chart_height = 0.026 * (used + 1) + 0.06
    _chart(figure, [0.27, cursor.y - chart_height + 0.045, 0.68, chart_height - 0.055], prediction)
    cursor.y -= chart_height
    if preprocessed is not None:
        height = 0.17
        _key_images(figure, [0.04, cursor.y - height, 0.92, height - 0.02], preprocessed)
        cursor.y -= height + 0.005

    degraded = words.degraded_modes(prediction, preprocessed)
    if degraded:
        cursor.heading("Degraded analysis: read with care")
        cursor.lines(degraded, color=_ORANGE, weight="bold")
    cursor.heading("What the numbers mean")
    cursor.lines([words.threshold_statement(prediction), words.calibration_statement(prediction)])
    others = words.other_ensemble_lines(prediction)
    if others:
        cursor.heading("Other ensemble (not the primary result)")
        cursor.lines(others)
    cursor.heading("Series used")
    cursor.lines(words.series_lines(selected_series))
    if preprocessed is not None:
        cursor.heading("Quality")
        cursor.lines([f"Brain extraction: {preprocessed.brain_extraction_method or 'unknown'}; brain volume "
                      f"{preprocessed.brain_volume_ml:.0f} ml", *words.quality_lines(preprocessed.flags)])
    cursor.heading("Intended use")
    cursor.lines([*(intended_use.statements() if intended_use is not None else []),
                  prediction.intended_use or "Research use only."])
    cursor.heading("Clinical inputs")
    cursor.text("; ".join(words.clinical_lines(clinical)) + ".")

    if cursor.y < 0.02:
        logger.warning("result page: text ran past the bottom of the page")
    figure.text(0.04, 0.008, "Key images: FLAIR with the brain-mask outline (yellow), radiological "
                "orientation. Research use only.", fontsize=9, color=_GREY)
    figure.canvas.draw()
    page = np.asarray(figure.canvas.buffer_rgba())[:, :, :3]
    return np.ascontiguousarray(page)


def build_result_page_sc(
    page: np.ndarray,
    selected_series: Sequence[SelectedSeries],
    *,
    series_number: int = DEFAULT_RESULT_PAGE_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    manufacturer: str = "tsc-epilepsy-outcome open-source project",
    software_version: str = "",
    series_description: str = "AI epilepsy outcome result page: RESEARCH USE ONLY",
) -> Dataset:
    """Wrap the rendered page as a Secondary Capture image in a new series of the source study.

    Args:
        page: RGB ``uint8`` array (rows, columns, 3).
        selected_series: The analysed series: the first instance gives the patient
            and study modules; all are listed as source images.
        series_number: Series Number of the new series.
        series_instance_uid: UID of the new series (generated when None).
        sop_instance_uid: UID of the instance (generated when None).
        manufacturer: Manufacturer of the equipment (the app).
        software_version: Software Versions of the app.
        series_description: Series Description.

    Returns:
        The Secondary Capture Image Storage dataset (file meta included).

    Raises:
        OutputError: Not an RGB uint8 page, or no source instance.
    """
    import highdicom as hd

    if page.ndim != 3 or page.shape[2] != 3 or page.dtype != np.uint8:
        raise OutputError(f"result page must be an RGB uint8 image, got {page.dtype} {page.shape}",
                          stage="result_page")
    sources = [ds for s in selected_series for ds in s.datasets]
    if not sources:
        raise OutputError("No source instance given for the result page", stage="result_page")
    from operators.output_common import copy_patient_study

    reference = Dataset()
    copy_patient_study(sources[0], reference)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference, pixel_array=page, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number, sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1, manufacturer=manufacturer, patient_orientation=("L", "P"),
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    for keyword in ("SpecificCharacterSet", "PatientAge", "StudyDescription"):
        if keyword in reference:
            sc[keyword] = reference[keyword]
    now = datetime.now()
    sc.SeriesDate = sc.ContentDate = now.strftime("%Y%m%d")
    sc.SeriesTime = sc.ContentTime = now.strftime("%H%M%S")
    sc.SeriesDescription = series_description[:64]
    sc.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    sc.DerivationDescription = "Result page of the TSC epilepsy outcome analysis (research use only)"
    sc.BurnedInAnnotation = "NO"
    if "Laterality" not in sc:
        sc.Laterality = None  # Type 2C; a page of both hemispheres has none (dciodvfy asks for it)
    sc.ImageComments = "Research use only. Not for diagnosis."
    if software_version:
        sc.SoftwareVersions = software_version
    items = []
    for source in sources:
        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        items.append(item)
    sc.SourceImageSequence = items
    logger.info("Result page %s built (%d x %d) for study %s", sc.SOPInstanceUID, page.shape[1],
                page.shape[0], sc.get("StudyInstanceUID", "?"))
    return sc


def save_result_page(ds: Dataset, output_folder: Path) -> Path:
    """Write the result page as ``<SOPInstanceUID>.dcm``."""
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
