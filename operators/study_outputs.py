"""Write the configured results of one study into an output folder.

The result SR is the product and is written first; the result page (a
Secondary Capture image), the optional FLAIR3 series and the PDF report follow. A failure of an optional output is logged and recorded
in :class:`WrittenOutputs` without taking the SR with it. All files go flat into
the output folder as ``<SOPInstanceUID>.dcm`` (the MONAI Deploy convention; the
DICOM node's outbox sends every file it finds there).

The thin operator :class:`StudyOutputsOperator` is built on first access so
that importing this module does not import the SDK.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from operators.datatypes import ClinicalData, Prediction, Preprocessed, QualityFlag, SelectedSeries
from operators.errors import PipelineError
from operators.flair3_series import build_flair3_series, save_series
from operators.header_values import identifying_copy, log_header_problems
from operators.intended_use import IntendedUseCheck
from operators.output_config import OutputConfig, load_output_config
from operators.pdf_report import build_encapsulated_pdf, render_report_pdf, save_pdf_instance
from operators.report_wording import model_card_summary_from
from operators.result_page import build_result_page_sc, render_result_page, save_result_page
from operators.sr_writer import AppIdentity, build_not_analysable_sr, build_result_sr, save_sr
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)


@dataclass
class WrittenOutputs:
    """Files written for one study, by kind, and optional outputs that failed."""

    sr: Path | None = None
    not_analysable_sr: Path | None = None
    flair3_series: list[Path] = field(default_factory=list)
    pdf: Path | None = None
    result_page: Path | None = None
    failures: dict[str, str] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        """Every file written."""
        single = [p for p in (self.sr, self.not_analysable_sr, self.result_page, self.pdf) if p is not None]
        return single + list(self.flair3_series)


def write_study_outputs(
    output_folder: Path,
    prediction: Prediction,
    selected_series: Sequence[SelectedSeries],
    preprocessed: Preprocessed | None = None,
    *,
    config: OutputConfig | None = None,
    app: AppIdentity | None = None,
    model_card_base_dir: Path | None = None,
    clinical: ClinicalData | None = None,
    intended_use: IntendedUseCheck | None = None,
    model_card: Path | None = None,
) -> WrittenOutputs:
    """Write the configured outputs of an analysed study.

    Args:
        output_folder: Where the DICOM files go (created if needed).
        prediction: The fused prediction.
        selected_series: The analysed T2 and FLAIR series.
        preprocessed: Images and quality numbers (needed for FLAIR3 and key slices).
        config: Which outputs to write; defaults to :class:`OutputConfig`.
        app: How the app identifies itself.
        model_card_base_dir: Folder against which a relative model-card file resolves.
        clinical: The clinical inputs and their sources (shown in every report).
        intended_use: The intended-use gate's decision (shown in every report).
        model_card: The model set's card; its summary is printed unless the
            configuration gives one.

    Returns:
        What was written.
    """
    config = config or OutputConfig()
    app = app or AppIdentity(institution_name=config.institution_name)
    written = WrittenOutputs()
    sources = [ds for series in selected_series for ds in series.datasets[:1]]
    if sources:
        log_header_problems(sources[0])
    notes = _selection_notes(selected_series)
    if notes and preprocessed is not None:
        preprocessed = dataclasses.replace(preprocessed, flags=[*notes, *preprocessed.flags])
    if config.sr:
        try:
            sr = build_result_sr(prediction, selected_series, preprocessed, app=app,
                                 series_number=config.sr_series_number, clinical=clinical,
                                 intended_use=intended_use)
            written.sr = save_sr(sr, output_folder)
        except Exception as error:  # the study must still get a report: say why in a not-analysable SR
            written.failures["sr"] = f"the result SR could not be built ({_failure_text(error)})"
            logger.error("%s; writing a not-analysable SR instead", written.failures["sr"])
            logger.debug("result SR failure", exc_info=True)
            failure = PipelineError(written.failures["sr"], stage="outputs")
            written.not_analysable_sr = _save_not_analysable_sr(
                output_folder, failure, sources, selected_series, prediction, config, app)
    app_version = app.resolved_version()

    def result_page() -> Path:
        page = render_result_page(prediction, selected_series, preprocessed, clinical=clinical,
                                  intended_use=intended_use)
        return save_result_page(build_result_page_sc(
            page, selected_series, series_number=config.result_page_series_number,
            manufacturer=app.manufacturer, software_version=app_version), output_folder)

    def flair3_series() -> list[Path]:
        return save_series(build_flair3_series(
            preprocessed, selected_series, series_number=config.flair3_series_number,
            manufacturer=app.manufacturer, software_version=app_version), output_folder)

    def pdf() -> Path:
        summary = config.model_card_text(model_card_base_dir) or model_card_summary_from(model_card)
        document = render_report_pdf(prediction, selected_series, preprocessed, model_card_summary=summary,
                                     app_version=app_version, clinical=clinical, intended_use=intended_use)
        return save_pdf_instance(build_encapsulated_pdf(
            document, selected_series, series_number=config.pdf_series_number,
            manufacturer=app.manufacturer, software_version=app_version), output_folder)

    if config.result_page:
        _write_optional(written, "result_page", "Result page", result_page)
    if config.flair3_series:
        if preprocessed is None:
            written.failures["flair3_series"] = "no preprocessed images"
        else:
            _write_optional(written, "flair3_series", "FLAIR3 series", flair3_series)
    if config.pdf:
        _write_optional(written, "pdf", "PDF report", pdf)
    logger.info("Study outputs written: %d file(s)%s", len(written.paths()),
                f", failed: {sorted(written.failures)}" if written.failures else "")
    return written


def _write_optional(written: WrittenOutputs, key: str, label: str, write: Callable[[], Any]) -> None:
    """Write one optional output into ``written.<key>``; a failure is recorded and logged, the rest goes on."""
    try:
        setattr(written, key, write())
    except Exception as error:  # optional output: keep the SR going
        written.failures[key] = _failure_text(error)
        logger.error("%s not written: %s", label, written.failures[key])
        logger.debug("%s not written", label, exc_info=True)


def write_not_analysable_outputs(
    output_folder: Path,
    error: PipelineError,
    source_datasets: Sequence[Dataset],
    *,
    selected_series: Sequence[SelectedSeries] = (),
    prediction: Prediction | None = None,
    config: OutputConfig | None = None,
    app: AppIdentity | None = None,
    intended_use_statements: Sequence[str] = (),
) -> WrittenOutputs:
    """Write the not-analysable SR (when configured) for a study that failed.

    Args:
        output_folder: Where the DICOM file goes.
        error: The failure to report.
        source_datasets: Any instances of the study (headers suffice).
        selected_series: Series selected before the failure, if any.
        prediction: Gives the model-set identity, when known.
        config: Which outputs to write.
        app: How the app identifies itself.
        intended_use_statements: The site's widening of the intended use, if any.

    Returns:
        What was written.
    """
    config = config or OutputConfig()
    app = app or AppIdentity(institution_name=config.institution_name)
    written = WrittenOutputs()
    if config.not_analysable_sr:
        if source_datasets:
            log_header_problems(source_datasets[0])
        written.not_analysable_sr = _save_not_analysable_sr(
            output_folder, error, source_datasets, selected_series, prediction, config, app,
            intended_use_statements=intended_use_statements)
    return written


def _failure_text(error: Exception) -> str:
    """What failed, for logs and reports.

    The reason of the app's own errors (free of patient data by contract), else only the
    exception type: library messages may quote header values.
    """
    return error.reason if isinstance(error, PipelineError) else type(error).__name__


def _selection_notes(selected_series: Sequence[SelectedSeries]) -> list[QualityFlag]:
    """Quality notes of series selection (e.g. a tie broken by the tie rule), for the report."""
    return [flag for series in selected_series for flag in series.explanation.flags]


def _save_not_analysable_sr(output_folder: Path, error: PipelineError, source_datasets: Sequence[Dataset],
                            selected_series: Sequence[SelectedSeries], prediction: Prediction | None,
                            config: OutputConfig, app: AppIdentity,
                            intended_use_statements: Sequence[str] = ()) -> Path:
    """Write the not-analysable SR; when it cannot be built from the study's headers, a minimal one."""
    notes = [*_selection_notes(selected_series), *(getattr(error, "flags", None) or [])]
    try:
        sr = build_not_analysable_sr(error, source_datasets, selected_series=selected_series, quality_flags=notes,
                                     prediction=prediction, app=app, series_number=config.sr_series_number,
                                     intended_use_statements=intended_use_statements)
    except Exception as failure:  # noqa: BLE001 - fall back to the identifiers only, below
        sources = list(source_datasets) or [ds for s in selected_series for ds in s.datasets[:1]]
        if not sources:
            raise
        logger.error("the not-analysable SR could not be built from the study's headers (%s); "
                     "writing a minimal one (study identifiers and reason only)", type(failure).__name__)
        logger.debug("not-analysable SR failure", exc_info=True)
        sr = build_not_analysable_sr(error, [identifying_copy(sources[0])], app=app,
                                     series_number=config.sr_series_number,
                                     intended_use_statements=intended_use_statements)
    return save_sr(sr, output_folder)


def _build_operator() -> type:
    from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec

    class StudyOutputsOperator(Operator):
        """Writes the result SR and the configured FLAIR3 series and PDF report.

        Named inputs:
            prediction: :class:`~operators.datatypes.Prediction`.
            t2_series: :class:`~operators.datatypes.SelectedSeries` (T2).
            flair_series: :class:`~operators.datatypes.SelectedSeries` (FLAIR).
            preprocessed: :class:`~operators.datatypes.Preprocessed` (optional).
            clinical: :class:`~operators.datatypes.ClinicalData` (optional).
            intended_use: :class:`~operators.intended_use.IntendedUseCheck` (optional).

        Named output:
            outputs: :class:`WrittenOutputs` (the files written).

        File output:
            DICOM files ``<SOPInstanceUID>.dcm`` in ``output_folder``.
        """

        def __init__(self, fragment: Fragment, *args: Any, output_folder: Path | str,
                     config: OutputConfig | Path | str | None = None,
                     app: AppIdentity | None = None, model_card: Path | None = None,
                     **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application (a Fragment) the operator belongs to.
                output_folder: Folder for the DICOM files.
                config: An :class:`OutputConfig`, or a YAML file path, or None for defaults.
                app: How the app identifies itself in the objects it writes.
                model_card: The model set's card (its summary goes into the PDF).
            """
            self.output_folder = Path(output_folder)
            self.config_dir = Path(config).parent if isinstance(config, (str, Path)) else None
            self.config = (config if isinstance(config, OutputConfig)
                           else load_output_config(config))
            self.app = app
            self.model_card = model_card
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("prediction")
            spec.input("t2_series").condition(ConditionType.NONE)
            spec.input("flair_series")
            spec.input("preprocessed").condition(ConditionType.NONE)
            spec.input("clinical").condition(ConditionType.NONE)
            spec.input("intended_use").condition(ConditionType.NONE)
            spec.output("outputs").condition(ConditionType.NONE)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            selected = [s for s in (op_input.receive("t2_series"), op_input.receive("flair_series"))
                        if s is not None]
            written = write_study_outputs(
                self.output_folder, op_input.receive("prediction"), selected,
                op_input.receive("preprocessed"), config=self.config, app=self.app,
                model_card_base_dir=self.config_dir, clinical=op_input.receive("clinical"),
                intended_use=op_input.receive("intended_use"), model_card=self.model_card)
            op_output.emit(written, "outputs")

    return StudyOutputsOperator


__getattr__ = lazy_operator(globals(), "StudyOutputsOperator", _build_operator)
