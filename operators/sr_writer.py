"""Results back to the radiologist: DICOM Comprehensive 3D SR (TID 1500).

Two documents, both TID 1500 "Imaging Measurement Report" in the source study
(IHE Radiology AI Results profile):

* :func:`build_result_sr` - the analysed study. Content tree::

    Imaging Measurement Report (TID 1500)
      Language, device observer (TID 1001/1004), Procedure reported (CID 100)
      Image Library (TID 1600): one group per analysed series (modality and
        shared geometry once), one bare entry per instance (no per-slice
        descriptors: they rendered as three footnotes per slice)
      Imaging Measurements
        Measurement Group (TID 1501) of the primary ensemble first: fused
          probability and decision threshold; then the other ensembles
        Measurement Group per used member of every ensemble (mean of folds)
        Measurement Group "preprocessing quality": brain volume (ml) and
          registration metric; algorithm = brain-extraction method
      Qualitative Evaluations (TID 1500 row 12), in reading order: predicted
        outcome (CODE); the result in one sentence with its confidence
        category; research-use and synthetic-model statements; degraded
        modes; intended-use check; threshold and calibration meaning; other
        ensembles; analysed series (number, description, UID); members used /
        left out; clinical inputs; quality notes; brain-extraction method

  Every container is SEPARATE (each item is its own statement, so renderers
  keep the labels) and numbers are rounded to the precision reports print
  (:mod:`operators.report_wording`).

  The predicted class sits at document level rather than inside a TID 1501
  group because PixelMed's validator reports a qualitative evaluation inside
  TID 1501 as "not in template"; TID 1500 row 12 is the place made for it.

* :func:`build_not_analysable_sr` - the study could not be analysed; same
  template, only a Qualitative Evaluations container saying why (and which
  series were analysed, if any were selected).

Both carry PRELIMINARY / UNVERIFIED flags, the private coding scheme of
:mod:`operators.private_codes`, a device observer whose UID is derived from the
model-set identity (a new model set gives a new device UID), and one
Contributing Equipment item for the app (highdicom adds one more for the
acquisition device of the source images).
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from operators import private_codes as pc
from operators import report_wording as words
from operators.datatypes import ClinicalData, Preprocessed, Prediction, QualityFlag, Role, SelectedSeries
from operators.errors import PipelineError
from operators.header_values import clear_invalid
from operators.intended_use import IntendedUseCheck

logger = logging.getLogger(__name__)

RESEARCH_USE_TEXT = "Research use only. Not for diagnosis."
SYNTHETIC_MODELS_TEXT = "Models trained on synthetic data; not a clinical model."
#: CID 100 entry; CID 100 has no brain MRI code (LN 24590-2 is rejected by validators).
PROCEDURE_REPORTED = Code("25056-3", "LN", "MRI unspecified body region")
UNITY = Code("1", "UCUM", "no units")
MILLILITER = Code("ml", "UCUM", "milliliter")
DEFAULT_SR_SERIES_NUMBER = 9001
LANGUAGE = Code("en-US", "RFC5646", "English (United States)")
_LIBRARY_ENTRY = Code("260753009", "SCT", "Source")

# Fixed namespace for name-based (UUID v5) UIDs of this app; never change it,
# or every device UID changes.
_UID_NAMESPACE = uuid.UUID("6f3d1c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")

# Patient/study attributes highdicom reads unconditionally from the first evidence item.
_TYPE2_SOURCE_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)


@dataclass(frozen=True)
class AppIdentity:
    """How the app names itself in the documents it writes.

    Attributes:
        name: Device observer name and algorithm family.
        manufacturer: Manufacturer (0008,0070) and device observer manufacturer.
        model_name: Manufacturer's Model Name of the app.
        version: Software version of the app.
        institution_name: Optional Institution Name written into the SR.
        serial_number: Device serial number; default derives from the model set.
    """

    name: str = "TSC Epilepsy Outcome"
    manufacturer: str = "tsc-epilepsy-outcome open-source project"
    model_name: str = "tsc-epilepsy-outcome"
    version: str = ""
    institution_name: str | None = None
    serial_number: str | None = None

    def resolved_version(self) -> str:
        """The version given, or the installed package's version, or ``"0+unknown"``."""
        if self.version:
            return self.version
        try:
            from importlib.metadata import version
            return version("tsc-epilepsy-outcome")
        except Exception:
            return "0+unknown"


def uid_from_identity(*parts: str) -> str:
    """A deterministic UID (``2.25.<UUID v5>``) for the given identity strings."""
    return "2.25." + str(uuid.uuid5(_UID_NAMESPACE, "\x1f".join(parts)).int)


def model_set_identity(prediction: Prediction | None) -> str:
    """A string that changes whenever the model set changes.

    Uses an explicit identity from the prediction when the models stage provides
    one (``model_set_identity``, ``model_set_id`` or ``model_set_sha256``), else
    the ensemble, model-set version and member names.
    """
    if prediction is None:
        return "no-model-set"
    for attribute in ("model_set_identity", "model_set_id", "model_set_sha256"):
        value = getattr(prediction, attribute, None)
        if value:
            return str(value)
    members = ",".join(sorted(m.name for m in prediction.members))
    return f"{prediction.ensemble}|{prediction.model_set_version}|{members}"


def device_observer_uid(prediction: Prediction | None) -> str:
    """Device Observer UID: one per model set, stable across runs and hosts."""
    return uid_from_identity("device-observer", model_set_identity(prediction))


def _serial_number(app: AppIdentity, prediction: Prediction | None) -> str:
    if app.serial_number:
        return app.serial_number
    return uuid.uuid5(_UID_NAMESPACE, model_set_identity(prediction)).hex[:16].upper()


def _observation_context(app: AppIdentity, prediction: Prediction | None) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(prediction),
        name=app.name,
        manufacturer_name=app.manufacturer,
        model_name=app.model_name,
        serial_number=_serial_number(app, prediction),
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _contributing_equipment(app: AppIdentity, prediction: Prediction | None,
                            description: str) -> hd.ContributingEquipment:
    return hd.ContributingEquipment(
        manufacturer=app.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=app.model_name,
        software_versions=app.resolved_version(),
        device_serial_number=_serial_number(app, prediction),
        institution_name=app.institution_name,
        contribution_description=description,
    )


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _code(name: Code, value: Code) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _qualitative_container(items: Sequence[hd.sr.ContentItem]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=Code("C0034375", "UMLS", "Qualitative Evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(list(items))
    return container


def _coded_modality(dataset: Dataset) -> Code:
    try:
        from highdicom.sr.templates import _get_coded_modality
        return _get_coded_modality(dataset.SOPClassUID)
    except (ImportError, ValueError):
        return codes.cid29.MagneticResonance


def _image_library(datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1600 Image Library: one entry per analysed series, grouped by modality.

    The measurements of this report refer to whole series, never to an image or
    a location in one, so the library only has to say which series were used:
    one entry per series (its first instance) in a group per modality (the T2
    and FLAIR are both MR: one group), and no geometry descriptors (TID 1602
    makes them optional; renderers showed them as three footnotes per slice,
    thousands of lines before the result). Every analysed instance is listed in
    the Current Requested Procedure Evidence Sequence of the header, where
    machines look for them.
    """
    first_of_series: dict[str, Dataset] = {}
    for ds in datasets:
        first_of_series.setdefault(str(ds.SeriesInstanceUID), ds)
    by_modality: dict[str, list[Dataset]] = {}
    for ds in first_of_series.values():
        by_modality.setdefault(str(ds.get("Modality", "")), []).append(ds)
    library = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibrary,
                                         relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence()
    for entries in by_modality.values():
        group = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibraryGroup,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        group.ContentSequence = hd.sr.ContentSequence([hd.sr.CodeContentItem(
            name=codes.DCM.Modality, value=_coded_modality(entries[0]),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT)])
        for ds in entries:
            group.ContentSequence.append(hd.sr.ImageContentItem(
                name=_LIBRARY_ENTRY, referenced_sop_class_uid=ds.SOPClassUID,
                referenced_sop_instance_uid=ds.SOPInstanceUID,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
        library.ContentSequence.append(group)
    return library


def _report_root(app: AppIdentity, prediction: Prediction | None,
                 image_datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """Root container with rows 1-5 of TID 1500 (language, observer, procedure, library)."""
    root = hd.sr.ContainerContentItem(name=codes.cid7021.ImagingMeasurementReport,
                                      template_id="1500")
    items: list[Any] = []
    items.extend(hd.sr.LanguageOfContentItemAndDescendants(LANGUAGE))
    items.extend(_observation_context(app, prediction))
    items.append(hd.sr.CodeContentItem(
        name=codes.DCM.ProcedureReported, value=PROCEDURE_REPORTED,
        relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD))
    if image_datasets:
        items.append(_image_library(image_datasets))
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def research_series_description(title: str, prediction: Prediction | None) -> str:
    """A Series Description (LO, 64 characters) that says research use, and synthetic models if so.

    PACS lists series by this text and SR renderers print it first, so the
    usage statement is seen before anything else.
    """
    synthetic = prediction is not None and prediction.model_set_synthetic
    suffix = ": RESEARCH ONLY, SYNTHETIC MODEL" if synthetic else ": RESEARCH USE ONLY"
    return (title[:64 - len(suffix)] + suffix)[:64]


def _usage_statements(prediction: Prediction | None) -> list[str]:
    statements = [RESEARCH_USE_TEXT]
    if prediction is not None and prediction.model_set_synthetic:
        statements.append(SYNTHETIC_MODELS_TEXT)
    intended_use = getattr(prediction, "intended_use", "") if prediction is not None else ""
    if intended_use:
        statements.append(f"Intended use: {intended_use}")
    return statements


def _series_by_role(selected_series: Sequence[SelectedSeries]) -> dict[Role, SelectedSeries]:
    by_role: dict[Role, SelectedSeries] = {}
    for series in selected_series:
        if series.role in by_role:
            raise ValueError(f"Two series selected for role {series.role.value}: "
                             f"{by_role[series.role].series_instance_uid} and "
                             f"{series.series_instance_uid}")
        by_role[series.role] = series
    return by_role


def series_label(series: SelectedSeries) -> str:
    """``series 3 "t2_tse_tra" (24 images), UID 1.2...`` (the UID always last)."""
    return words.series_lines([series])[0].partition(": ")[2]


def _analysed_series_items(by_role: dict[Role, SelectedSeries]) -> list[hd.sr.TextContentItem]:
    items = []
    if Role.T2 in by_role:
        items.append(_text(pc.ANALYSED_T2_SERIES, series_label(by_role[Role.T2])))
    if Role.FLAIR in by_role:
        items.append(_text(pc.ANALYSED_FLAIR_SERIES, series_label(by_role[Role.FLAIR])))
    return items


def _format_weight(value: float) -> str:
    return f"{value:.4g}"


def _ensemble_group(prediction: Prediction, study_uid: str, version: str
                    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    weights = ",".join(f"{m.name}:{_format_weight(m.weight)}" for m in prediction.members if m.used)
    # Few parameters: they render before the probability. The threshold is a measurement
    # of the group, renormalisation a degraded-mode statement, the model set the version.
    weights_kind = "renormalised" if prediction.weights_renormalised else "nominal"
    parameters = [f"weighted average, {weights_kind} weights {weights}"]
    if prediction.model_set_identity:
        parameters.append(f"model set {prediction.model_set_name} {prediction.model_set_identity[:16]}")
    if prediction.inference_engine:
        parameters.append(f"inference engine {prediction.inference_engine}")
    algorithm = hd.sr.AlgorithmIdentification(
        name=prediction.ensemble, version=prediction.model_set_version or version,
        parameters=parameters)
    measurements = [
        hd.sr.Measurement(name=pc.PROBABILITY_UNCONTROLLED, value=words.rounded(prediction.fused_score),
                          unit=UNITY),
        hd.sr.Measurement(name=pc.DECISION_THRESHOLD, value=words.rounded(prediction.threshold), unit=UNITY),
    ]
    agreement = prediction.agreement or {}
    spread = agreement.get("member_sd", agreement.get("member_std"))
    if spread is not None:
        measurements.append(hd.sr.Measurement(
            name=pc.MEMBER_AGREEMENT, value=words.rounded(spread), unit=UNITY,
            derivation=codes.SCT.StandardDeviation))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            identifier=f"ensemble {prediction.ensemble}",
            uid=uid_from_identity("ensemble", study_uid, prediction.ensemble,
                                  model_set_identity(prediction))),
        finding_type=pc.ASM_OUTCOME_PROGNOSIS,
        algorithm_id=algorithm,
        measurements=measurements,
    )


def _member_groups(prediction: Prediction, study_uid: str, version: str
                   ) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    groups = []
    for member in prediction.members:
        if not member.used or member.score is None:
            continue
        parameters = [f"ensemble={prediction.ensemble}", f"weight={_format_weight(member.weight)}",
                      f"folds={len(member.fold_scores)}"]
        if member.nominal_weight:
            parameters.append(f"nominal_weight={_format_weight(member.nominal_weight)}")
        if member.architecture:
            parameters.append(f"architecture={member.architecture}")
        if member.input_key:
            parameters.append(f"input={member.input_key}")
        if member.calibration:
            parameters.append(f"calibration={member.calibration}")
        algorithm = hd.sr.AlgorithmIdentification(
            name=member.name, version=prediction.model_set_version or version, parameters=parameters)
        derivation = codes.SCT.Mean if len(member.fold_scores) > 1 else None
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                identifier=f"member {member.name}",
                uid=uid_from_identity("member", study_uid, prediction.ensemble, member.name,
                                      model_set_identity(prediction))),
            finding_type=pc.ASM_OUTCOME_PROGNOSIS,
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(
                name=pc.PROBABILITY_UNCONTROLLED, value=words.rounded(member.score), unit=UNITY,
                derivation=derivation)],
        ))
    return groups


def _quality_group(preprocessed: Preprocessed, study_uid: str, version: str
                   ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = hd.sr.AlgorithmIdentification(
        name=preprocessed.brain_extraction_method or "unknown", version=version)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            identifier="preprocessing quality",
            uid=uid_from_identity("quality", study_uid)),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Volume, value=round(float(preprocessed.brain_volume_ml)),
                              unit=MILLILITER),
            hd.sr.Measurement(name=pc.REGISTRATION_METRIC,
                              value=round(float(preprocessed.registration_metric), 3), unit=UNITY),
        ],
    )


def _member_items(prediction: Prediction) -> list[hd.sr.TextContentItem]:
    items = []
    for member in prediction.members:
        if member.used:
            folds = ", ".join(words.prob(v) for v in member.fold_scores)
            items.append(_text(pc.ENSEMBLE_MEMBER_USED,
                               f"{member.name}: {prediction.ensemble}, probability {words.prob(member.score)}, "
                               f"weight {member.weight:.2f}, folds {folds}"))
        else:
            reason = member.reason_left_out or "not given"
            items.append(_text(pc.ENSEMBLE_MEMBER_NOT_USED, f"{member.name}: {reason}"))
    return items


def result_sentence(prediction: Prediction) -> str:
    """The result in one sentence: primary ensemble, class, fused probability, spread, category."""
    confidence = words.confidence(prediction)
    return (f"{prediction.ensemble} (primary ensemble): {words.outcome(prediction)} predicted, "
            f"{confidence.category}. Fused probability {words.prob(prediction.fused_score)} "
            f"(threshold {words.prob(prediction.threshold)}; {words.spread(prediction)}).")


def _separate_containers(items: Sequence[Dataset]) -> None:
    """Mark every container SEPARATE: its items are separate statements, not one running text."""
    for item in items:
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        if "ContentSequence" in item:
            _separate_containers(item.ContentSequence)


def _patient_study_source(dataset: Dataset) -> Dataset:
    """A shallow copy of ``dataset``, invalid patient/study values emptied, the Type 2 ones highdicom needs present."""
    source = Dataset()
    for element in dataset:
        if element.tag.group != 0x7FE0:
            source.add(element)
    source.file_meta = getattr(dataset, "file_meta", Dataset())
    clear_invalid(source)
    for keyword in _TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in source:
            setattr(source, keyword, None)
    return source


def _evidence(datasets: Sequence[Dataset]) -> list[Dataset]:
    if not datasets:
        raise ValueError("No source instance given: the SR needs the study's patient/study module")
    return [_patient_study_source(datasets[0]), *datasets[1:]]


def _build_sr(evidence: list[Dataset], content: Any, app: AppIdentity, prediction: Prediction | None, *,
              series_number: int, series_instance_uid: str | None, sop_instance_uid: str | None,
              equipment_description: str, series_description: str) -> hd.sr.Comprehensive3DSR:
    """The preliminary, unverified Comprehensive 3D SR both documents are, with the app's identification."""
    # highdicom warns about unusual person names and quotes them; the names come
    # unchanged from the source study, and patient names must never reach logs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=content,
            series_instance_uid=series_instance_uid or generate_uid(),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(),
            instance_number=1,
            manufacturer=app.manufacturer,
            institution_name=app.institution_name,
            is_complete=True,
            is_final=False,
            is_verified=False,
            contributing_equipment=[_contributing_equipment(app, prediction, equipment_description)],
        )
    pc.declare_private_scheme(sr)
    _separate_containers(sr.ContentSequence)
    sr.ContinuityOfContent = "SEPARATE"
    sr.SeriesDate = sr.ContentDate
    sr.SeriesTime = sr.ContentTime
    sr.SeriesDescription = series_description
    sr.ManufacturerModelName = app.model_name
    sr.SoftwareVersions = app.resolved_version()
    return sr


def build_result_sr(
    prediction: Prediction,
    selected_series: Sequence[SelectedSeries],
    preprocessed: Preprocessed | None = None,
    *,
    app: AppIdentity | None = None,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    clinical: ClinicalData | None = None,
    intended_use: IntendedUseCheck | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 result SR of an analysed study.

    Args:
        prediction: The fused prediction (members, scores, threshold, model set).
        selected_series: The T2 and FLAIR series analysed (their datasets are the
            evidence and image library; pixel data is not copied).
        preprocessed: Quality numbers, flags and brain-extraction method, if available.
        app: How the app identifies itself; defaults to :class:`AppIdentity`.
        series_number: Series Number of the new SR series.
        series_instance_uid: UID of the new series (generated when None).
        sop_instance_uid: UID of the SR instance (generated when None).
        clinical: The clinical inputs and their sources, if known.
        intended_use: The intended-use gate's decision (and any site widening).

    Returns:
        The SR document (a ``pydicom.Dataset`` subclass), ready to save.

    Raises:
        ValueError: When no series is given or a role is given twice.
    """
    app = app or AppIdentity()
    version = app.resolved_version()
    by_role = _series_by_role(selected_series)
    image_datasets = [ds for role in (Role.T2, Role.FLAIR) if role in by_role
                      for ds in by_role[role].datasets]
    evidence = _evidence(image_datasets)
    study_uid = str(evidence[0].StudyInstanceUID)

    root = _report_root(app, prediction, image_datasets)
    ensembles = [prediction, *(prediction.other_ensembles or {}).values()]
    groups = [_ensemble_group(ensemble, study_uid, version) for ensemble in ensembles]
    for ensemble in ensembles:
        groups.extend(_member_groups(ensemble, study_uid, version))
    if preprocessed is not None:
        groups.append(_quality_group(preprocessed, study_uid, version))
    measurements = hd.sr.ContainerContentItem(
        name=codes.DCM.ImagingMeasurements, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    measurements.ContentSequence = hd.sr.ContentSequence(
        [item for group in groups for item in group])
    root.ContentSequence.append(measurements)

    outcome = pc.UNCONTROLLED if prediction.predicted_uncontrolled else pc.CONTROLLED
    confidence = words.confidence(prediction)
    evaluations: list[Any] = [
        _code(pc.PREDICTED_OUTCOME, outcome),
        _text(pc.RESULT_SUMMARY, result_sentence(prediction)),
        _text(pc.CONFIDENCE_CATEGORY, f"{confidence.category}: {confidence.explanation}"),
    ]
    evaluations.extend(_text(pc.USAGE_STATEMENT, s) for s in _usage_statements(prediction))
    evaluations.extend(_text(pc.DEGRADED_MODE, note)
                       for note in words.degraded_modes(prediction, preprocessed))
    if intended_use is not None:
        evaluations.extend(_text(pc.INTENDED_USE_CHECK, line) for line in intended_use.statements())
    evaluations.append(_text(pc.THRESHOLD_MEANING, words.threshold_statement(prediction)))
    evaluations.append(_text(pc.CALIBRATION_STATEMENT, words.calibration_statement(prediction)))
    evaluations.extend(_text(pc.OTHER_ENSEMBLE_RESULT, line)
                       for line in words.other_ensemble_lines(prediction))
    evaluations.extend(_analysed_series_items(by_role))
    for ensemble in [prediction, *(prediction.other_ensembles or {}).values()]:
        evaluations.extend(_member_items(ensemble))
    if clinical is not None:
        evaluations.extend(_text(pc.CLINICAL_INPUT, line) for line in words.clinical_lines(clinical))
    if preprocessed is not None:
        evaluations.extend(_text(pc.QUALITY_NOTE, line) for line in words.quality_lines(preprocessed.flags))
        evaluations.append(_text(pc.BRAIN_EXTRACTION_METHOD,
                                 preprocessed.brain_extraction_method or "unknown"))
    root.ContentSequence.append(_qualitative_container(evaluations))

    sr = _build_sr(evidence, root, app, prediction, series_number=series_number,
                   series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid,
                   equipment_description=f"AI prognosis {prediction.ensemble} (research use only)",
                   series_description=research_series_description(
                       f"AI epilepsy outcome {prediction.ensemble}", prediction))
    logger.info("Result SR %s built for study %s: %s p=%.3f", sr.SOPInstanceUID, study_uid,
                "uncontrolled" if prediction.predicted_uncontrolled else "controlled",
                prediction.fused_score)
    return sr


def build_not_analysable_sr(
    error: PipelineError,
    source_datasets: Sequence[Dataset],
    *,
    selected_series: Sequence[SelectedSeries] = (),
    quality_flags: Sequence[QualityFlag] = (),
    prediction: Prediction | None = None,
    app: AppIdentity | None = None,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    intended_use_statements: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the short TID 1500 SR that says why a study could not be analysed.

    The image library lists the instances of the selected T2/FLAIR series when
    selection got that far (e.g. a failed quality check), and is left out
    otherwise: TID 1500 makes it optional, and listing every instance of a study
    in which no suitable series was found would point the reader at images that
    were not analysed. All ``source_datasets`` are recorded as evidence (Current
    Requested Procedure Evidence), i.e. what the app was given.

    Args:
        error: The failure; its ``stage`` and ``reason`` are reported verbatim.
        source_datasets: Any instances of the study (headers suffice); the first
            gives the patient and study modules.
        selected_series: Series selected before the failure, if any.
        quality_flags: Quality notes known at the time of failure (default: the
            error's own ``flags``, when it carries them).
        prediction: Gives the model-set identity (device UID) when known.
        app: How the app identifies itself.
        series_number: Series Number of the new SR series.
        series_instance_uid: UID of the new series (generated when None).
        sop_instance_uid: UID of the SR instance (generated when None).
        intended_use_statements: E.g. the site's widening of the intended use,
            which every report states.

    Returns:
        The SR document.

    Raises:
        ValueError: When no source dataset is given.
    """
    app = app or AppIdentity()
    by_role = _series_by_role(selected_series)
    image_datasets = [ds for role in (Role.T2, Role.FLAIR) if role in by_role
                      for ds in by_role[role].datasets]
    seen = {str(ds.SOPInstanceUID) for ds in image_datasets}
    others = [ds for ds in source_datasets if str(ds.SOPInstanceUID) not in seen]
    evidence = _evidence([*others, *image_datasets])

    root = _report_root(app, prediction, image_datasets)
    evaluations: list[Any] = [
        _code(pc.ANALYSIS_STATUS, pc.NOT_ANALYSABLE),
        _text(pc.REASON_NOT_ANALYSABLE, error.reason),
        _text(pc.FAILED_STAGE, error.stage),
    ]
    evaluations.extend(_text(pc.USAGE_STATEMENT, s) for s in _usage_statements(prediction))
    evaluations.extend(_text(pc.INTENDED_USE_CHECK, s) for s in intended_use_statements if s)
    evaluations.extend(_analysed_series_items(by_role))
    flags = list(quality_flags) or list(getattr(error, "flags", None) or [])
    evaluations.extend(_text(pc.QUALITY_NOTE, line) for line in words.quality_lines(flags))
    root.ContentSequence.append(_qualitative_container(evaluations))

    sr = _build_sr(evidence, root, app, prediction, series_number=series_number,
                   series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid,
                   equipment_description="AI prognosis not performed: study not analysable (research use only)",
                   series_description=research_series_description(
                       "AI epilepsy outcome NOT ANALYSABLE", prediction))
    logger.info("Not-analysable SR %s built for study %s (stage %s)", sr.SOPInstanceUID,
                sr.StudyInstanceUID, error.stage)
    return sr


def save_sr(sr: Dataset, output_folder: Path) -> Path:
    """Write ``sr`` as ``<SOPInstanceUID>.dcm`` in ``output_folder`` and return the path."""
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / f"{sr.SOPInstanceUID}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path



# Superseding an earlier SR of the same study ------------------------------------
# Kept apart from the builders above: the DICOM node calls it on an SR this app has
# just written, before the SR leaves the node, when a study it already reported on
# was re-analysed with more instances.


@dataclass(frozen=True)
class PredecessorDocument:
    """An SR sent earlier for the same study, as referenced by its successor."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


def supersede_sr(path: Path, predecessors: Sequence[PredecessorDocument], change_note: str) -> None:
    """Make the SR at ``path`` supersede ``predecessors``, saying what changed.

    Adds the Predecessor Documents Sequence (0040,A360) of the SR Document General
    module (what ``highdicom``'s ``previous_versions`` writes) and a TEXT item
    (DCM 121106 "Comment") holding ``change_note`` to the Qualitative Evaluations
    container (to the root container when there is none). The file is rewritten in
    place; its SOP Instance UID is unchanged.

    Raises:
        ValueError: ``path`` is not an SR document, or a predecessor is of another study.
    """
    from pydicom import dcmread
    from pydicom.sequence import Sequence as DicomSequence

    sr = dcmread(path)
    if getattr(sr, "Modality", "") != "SR" or "ContentSequence" not in sr:
        raise ValueError(f"{path.name} is not an SR document")
    if not predecessors:
        return
    studies: dict[str, dict[str, list[PredecessorDocument]]] = {}
    for p in predecessors:
        if p.study_instance_uid != sr.StudyInstanceUID:
            raise ValueError(f"predecessor {p.sop_instance_uid} belongs to another study")
        studies.setdefault(p.study_instance_uid, {}).setdefault(p.series_instance_uid, []).append(p)
    items = []
    for study_uid, series in studies.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study_uid
        series_items = []
        for series_uid, docs in series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series_uid
            refs = []
            for doc in docs:
                ref = Dataset()
                ref.ReferencedSOPClassUID = doc.sop_class_uid
                ref.ReferencedSOPInstanceUID = doc.sop_instance_uid
                refs.append(ref)
            series_item.ReferencedSOPSequence = DicomSequence(refs)
            series_items.append(series_item)
        study_item.ReferencedSeriesSequence = DicomSequence(series_items)
        items.append(study_item)
    sr.PredecessorDocumentsSequence = DicomSequence(items)
    note = hd.sr.TextContentItem(name=codes.DCM.Comment, value=change_note[:1024],
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    target = sr
    for item in sr.ContentSequence:
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "CONTAINER" and name and name[0].CodeValue == "C0034375":
            target = item
    target.ContentSequence.append(note)
    sr.save_as(path, enforce_file_format=True)
