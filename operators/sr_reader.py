"""Read back what the app's SR documents state (used by tests and for audit).

The reader works from the DICOM content with highdicom, independently of the
writer's in-memory inputs, so a round trip checks what a PACS consumer sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from operators import private_codes as pc

_QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")


@dataclass
class ReportedOutcome:
    """What one SR says, as plain values.

    Attributes:
        analysed: False for a not-analysable report.
        ensemble_probabilities: Fused probability per ensemble name.
        member_probabilities: Probability per member name (used members only).
        members_used: Member names listed as used.
        members_not_used: Member name -> reason, for members left out.
        threshold: Decision threshold of the primary ensemble.
        member_spread: Weighted SD of the member probabilities (primary ensemble).
        predicted_uncontrolled: Predicted class (None when not analysed).
        t2_series_uid / flair_series_uid: The series named as analysed.
        evidence_series_uids: Series listed in the evidence sequences.
        image_library_sop_uids: SOP Instance UIDs in the image library.
        device_observer_uid: UID of the device observer.
        brain_volume_ml: Reported brain volume.
        brain_extraction_method: Reported brain-extraction method.
        quality_notes: Quality note texts.
        usage_statements: Usage statement texts.
        reason / failed_stage: Why the study was not analysable.
        result_summary: The one-sentence result.
        confidence_category: The verbal category (``borderline``, ``leaning``, ``consistent``).
        degraded_modes: Notices of degraded analysis (fallback brain extraction ...).
        intended_use_checks: The intended-use check and any site widening.
        clinical_inputs: The clinical inputs with their sources.
        member_ensembles: Member name -> the ensemble it was reported under.
    """

    analysed: bool
    ensemble_probabilities: dict[str, float] = field(default_factory=dict)
    member_probabilities: dict[str, float] = field(default_factory=dict)
    members_used: list[str] = field(default_factory=list)
    members_not_used: dict[str, str] = field(default_factory=dict)
    threshold: float | None = None
    member_spread: float | None = None
    predicted_uncontrolled: bool | None = None
    t2_series_uid: str | None = None
    flair_series_uid: str | None = None
    evidence_series_uids: set[str] = field(default_factory=set)
    image_library_sop_uids: list[str] = field(default_factory=list)
    device_observer_uid: str | None = None
    brain_volume_ml: float | None = None
    brain_extraction_method: str | None = None
    quality_notes: list[str] = field(default_factory=list)
    usage_statements: list[str] = field(default_factory=list)
    reason: str | None = None
    failed_stage: str | None = None
    result_summary: str | None = None
    confidence_category: str | None = None
    degraded_modes: list[str] = field(default_factory=list)
    intended_use_checks: list[str] = field(default_factory=list)
    clinical_inputs: list[str] = field(default_factory=list)
    member_ensembles: dict[str, str] = field(default_factory=dict)


def _is(item: Dataset, code: Code) -> bool:
    concept = item.ConceptNameCodeSequence[0]
    return (concept.CodeValue == code.value
            and concept.CodingSchemeDesignator == code.scheme_designator)


def _algorithm_name(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> str | None:
    for item in group[0].ContentSequence:
        if _is(item, codes.DCM.AlgorithmName):
            return str(item.TextValue)
    return None


def _series_uid(text: str) -> str:
    """The UID of an analysed-series item (``series 3 "..." (24 images), UID 1.2...``, or a bare UID)."""
    return text.rsplit("UID ", 1)[-1].strip()


def read_result_sr(dataset: Dataset) -> ReportedOutcome:
    """Parse a result or not-analysable SR written by :mod:`operators.sr_writer`.

    Args:
        dataset: The SR document as read by pydicom.

    Returns:
        The values the document states.

    Raises:
        ValueError: When the dataset is not a TID 1500 SR.
    """
    sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError("Not a TID 1500 Measurement Report")
    root = report[0]
    result = ReportedOutcome(analysed=True)

    for observer in report.get_observer_contexts(observer_type=codes.DCM.Device):
        result.device_observer_uid = str(observer.observer_identifying_attributes.uid)
    for item in dataset.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in item.ReferencedSeriesSequence:
            result.evidence_series_uids.add(str(series.SeriesInstanceUID))
    for image in hd.sr.utils.find_content_items(root, name=codes.DCM.ImageLibrary):
        for group in image.ContentSequence:
            for entry in group.ContentSequence:
                if entry.ValueType == "IMAGE":
                    result.image_library_sop_uids.append(
                        str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))

    for group in report.get_image_measurement_groups():
        identifier = group.tracking_identifier or ""
        name = _algorithm_name(group)
        for measurement in group.get_measurements():
            if measurement.name == pc.PROBABILITY_UNCONTROLLED and name:
                if identifier.startswith("ensemble "):
                    result.ensemble_probabilities[name] = float(measurement.value)
                elif identifier.startswith("member "):
                    result.member_probabilities[name] = float(measurement.value)
            elif measurement.name == pc.DECISION_THRESHOLD and result.threshold is None:
                result.threshold = float(measurement.value)
            elif measurement.name == pc.MEMBER_AGREEMENT and result.member_spread is None:
                result.member_spread = float(measurement.value)
            elif measurement.name == codes.SCT.Volume:
                result.brain_volume_ml = float(measurement.value)

    for container in root.ContentSequence:
        if container.ValueType != "CONTAINER" or not _is(container, _QUALITATIVE_EVALUATIONS):
            continue
        for item in container.ContentSequence:
            if item.ValueType == "CODE":
                value = item.ConceptCodeSequence[0].CodeValue
                if _is(item, pc.PREDICTED_OUTCOME):
                    result.predicted_uncontrolled = value == pc.UNCONTROLLED.value
                elif _is(item, pc.ANALYSIS_STATUS) and value == pc.NOT_ANALYSABLE.value:
                    result.analysed = False
                continue
            text = str(item.get("TextValue", ""))
            if _is(item, pc.ANALYSED_T2_SERIES):
                result.t2_series_uid = _series_uid(text)
            elif _is(item, pc.ANALYSED_FLAIR_SERIES):
                result.flair_series_uid = _series_uid(text)
            elif _is(item, pc.ENSEMBLE_MEMBER_USED):
                name, _, rest = text.partition(": ")
                result.members_used.append(name)
                if rest:
                    result.member_ensembles[name] = rest.split(",")[0]
            elif _is(item, pc.RESULT_SUMMARY):
                result.result_summary = text
            elif _is(item, pc.CONFIDENCE_CATEGORY):
                result.confidence_category = text.partition(":")[0]
            elif _is(item, pc.DEGRADED_MODE):
                result.degraded_modes.append(text)
            elif _is(item, pc.INTENDED_USE_CHECK):
                result.intended_use_checks.append(text)
            elif _is(item, pc.CLINICAL_INPUT):
                result.clinical_inputs.append(text)
            elif _is(item, pc.ENSEMBLE_MEMBER_NOT_USED):
                name, _, reason = text.partition(": ")
                result.members_not_used[name] = reason
            elif _is(item, pc.QUALITY_NOTE):
                result.quality_notes.append(text)
            elif _is(item, pc.BRAIN_EXTRACTION_METHOD):
                result.brain_extraction_method = text
            elif _is(item, pc.USAGE_STATEMENT):
                result.usage_statements.append(text)
            elif _is(item, pc.REASON_NOT_ANALYSABLE):
                result.reason = text
            elif _is(item, pc.FAILED_STAGE):
                result.failed_stage = text
    return result
