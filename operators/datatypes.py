"""Typed data passed between pipeline stages.

Each stage owns the dataclass it produces; downstream stages only read it.
Images are ``SimpleITK.Image`` in LPS physical space with exact geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from pydicom import Dataset


class Role(str, Enum):
    """The part a series plays in the analysis."""

    T2 = "T2"
    FLAIR = "FLAIR"


@dataclass(frozen=True)
class CandidateScore:
    """How one series scored for one role during selection (for the report)."""

    series_instance_uid: str
    series_number: int | None
    series_description: str
    score: float
    eligible: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SelectionExplanation:
    """Why a series was chosen for a role: the rule and attribute values that decided.

    ``flags`` are quality notes for the report (e.g. two candidates that could only be
    told apart by the tie rule).
    """

    role: Role
    rule: str
    deciding_attributes: dict[str, Any]
    candidates: tuple[CandidateScore, ...] = ()
    flags: tuple["QualityFlag", ...] = ()


@dataclass
class SelectedSeries:
    """One series chosen for a role, with its datasets in acquisition order.

    Attributes:
        role: T2 or FLAIR.
        series_instance_uid: The Series Instance UID of the chosen series.
        datasets: The series' instances (pixel data loaded lazily by pydicom).
        files: Paths the datasets were read from, same order as ``datasets``.
        explanation: Why it was chosen.
    """

    role: Role
    series_instance_uid: str
    datasets: list[Dataset]
    files: list[Path]
    explanation: SelectionExplanation


@dataclass
class Volume:
    """A 3D image converted from one series.

    Attributes:
        image: ``SimpleITK.Image`` (float32) in LPS, spacing/origin/direction from
            ImagePositionPatient/ImageOrientationPatient.
        series_instance_uid: Source series.
        role: The role of the source series, if it was selected for one.
        sop_instance_uids: SOP Instance UIDs of the source instances (for references).
        sop_class_uid: SOP Class UID of the source instances.
    """

    image: sitk.Image
    series_instance_uid: str
    role: Role | None = None
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uid: str = ""


@dataclass(frozen=True)
class QualityFlag:
    """A quality-check outcome shown in the report.

    Attributes:
        code: Stable machine-readable code (e.g. ``"REGISTRATION_METRIC_POOR"``).
        message: Human-readable explanation with the measured value.
        severity: ``"info"``, ``"warning"`` or ``"fail"`` (fail = result not trusted).
        value: The measured value, where there is one.
    """

    code: str
    message: str
    severity: str
    value: float | None = None


@dataclass
class RegisteredPair:
    """Output of registration: the FLAIR and the T2 moved onto its grid.

    Attributes:
        t2 / flair: The input volumes (their series UIDs name them in errors).
        flair_image: FLAIR as float32; its grid is the grid of every later image.
        t2_image: T2 as float32 on its own grid (its field of view is checked later).
        t2_in_flair: T2 resampled onto the FLAIR grid (0 outside the T2).
        transform: Rigid transform (fixed = FLAIR, moving = T2; ITK convention).
        metric_value: Final Mattes mutual-information value.
        nmi: Normalised mutual information FLAIR vs registered T2 over the head.
        details: Initialisation, iterations and parameters, for the report.
        seconds: Wall time of the stage.
    """

    t2: Volume
    flair: Volume
    flair_image: sitk.Image
    t2_image: sitk.Image
    t2_in_flair: sitk.Image
    transform: sitk.Transform
    metric_value: float
    nmi: float
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def series_ids(self) -> str:
        """Both series named for messages."""
        return f"T2 series {self.t2.series_instance_uid}, FLAIR series {self.flair.series_instance_uid}"


@dataclass
class BrainExtracted:
    """Output of brain extraction: the registered pair and its brain mask on the FLAIR grid.

    Attributes:
        registered: The registration stage's output.
        mask: uint8 brain mask (1 = brain) on the FLAIR grid.
        method: ``"hd-bet"`` or ``"fallback-morphology"``.
        details: Method parameters and numbers for the report.
        seconds: Wall time of the stage.
    """

    registered: RegisteredPair
    mask: sitk.Image
    method: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Preprocessed:
    """Output of preprocessing, all on the FLAIR grid.

    Attributes:
        flair: FLAIR volume (original intensities).
        t2_in_flair: T2 resampled into FLAIR space after rigid registration.
        brain_mask: uint8 brain mask on the FLAIR grid.
        flair_norm / t2_norm / flair3: normalised images in [0, 1] inside the brain.
        t2_to_flair: rigid transform (fixed = FLAIR, moving = T2; ITK convention).
        registration_metric: final metric value of the registration.
        brain_volume_ml: brain mask volume.
        brain_extraction_method: e.g. ``"hd-bet"`` or ``"fallback-morphology"``.
        flags: quality flags.
        timings_s: seconds spent per step.
        registration_nmi: normalised mutual information FLAIR vs registered T2
            over the head (1 = independent, 2 = identical); used by quality control.
        t2_brain_coverage: fraction of the brain mask inside the T2's field of view.
        normalisation: how min/max of the min-max normalisation were taken
            (``operators.intensity.NormalisationSpec.describe()``).
        details: method parameters and numbers for the report (registration
            initialisation and iterations, brain-extraction device/settings...).
    """

    flair: sitk.Image
    t2_in_flair: sitk.Image
    brain_mask: sitk.Image
    flair_norm: sitk.Image
    t2_norm: sitk.Image
    flair3: sitk.Image
    t2_to_flair: sitk.Transform
    registration_metric: float
    brain_volume_ml: float
    brain_extraction_method: str
    flags: list[QualityFlag] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    registration_nmi: float = float("nan")
    t2_brain_coverage: float = 1.0
    normalisation: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClinicalValue:
    """One clinical variable with where it came from."""

    name: str
    value: float | None
    source: str


@dataclass
class ClinicalData:
    """The four clinical variables of the published model, each with its source.

    ``missing_reason`` is set when the clinical member cannot be run.
    """

    age_at_onset_months: ClinicalValue | None
    age_at_imaging_months: ClinicalValue | None
    infantile_spasms: ClinicalValue | None
    asm_count_ge_3: ClinicalValue | None
    missing_reason: str | None = None

    def as_vector(self) -> list[float] | None:
        """The model input (onset, imaging age, spasms, ASM>=3), or None if incomplete."""
        values = [self.age_at_onset_months, self.age_at_imaging_months,
                  self.infantile_spasms, self.asm_count_ge_3]
        if self.missing_reason or any(v is None or v.value is None for v in values):
            return None
        return [float(v.value) for v in values]  # type: ignore[union-attr]


@dataclass(frozen=True)
class MemberResult:
    """One ensemble member's output on a study.

    Attributes:
        name: Member name from the manifest.
        used: Whether it contributed to the fused score.
        fold_scores: Probability per fold model (empty if not used).
        score: Mean over folds (None if not used).
        reason_left_out: Why it was not used.
        weight: Weight after renormalisation (0 if not used).
        nominal_weight: Weight in the manifest, before renormalisation.
        input_key: The member's input (e.g. ``"flair@wae"`` or ``"clinical"``).
        architecture: The member's network (e.g. ``"resnet3d-34"``).
        calibration: How its fold probabilities were calibrated (e.g. ``"platt slope 7.36 intercept
            -0.89"``), or ``""`` when they are the networks' raw outputs.
    """

    name: str
    used: bool
    fold_scores: tuple[float, ...] = ()
    score: float | None = None
    reason_left_out: str | None = None
    weight: float = 0.0
    nominal_weight: float = 0.0
    input_key: str = ""
    architecture: str = ""
    calibration: str = ""


@dataclass
class Prediction:
    """Fused prediction of one ensemble on one study.

    Attributes:
        ensemble: Ensemble name (e.g. ``"WAE-Net"``).
        members: Per-member results, used and left out.
        fused_score: Weighted probability of "uncontrolled at one year".
        threshold: Decision threshold.
        predicted_uncontrolled: fused_score >= threshold.
        agreement: Spread across folds and members (e.g. std of member scores).
        weights_renormalised: True when a member was missing and weights rescaled.
        model_set_version: Version string of the model set.
        model_set_synthetic: True when the models were trained on synthetic data.
        other_ensembles: Results of non-primary ensembles, by name.
        withheld_ensembles: Non-primary ensembles with no result, by name, with the reason
            (withheld by the model set because they did not learn, or not computable for this study).
        model_set_name: Name of the model set (manifest ``name``).
        model_set_identity: SHA-256 over the manifest and its weight hashes; changes
            whenever the model set changes (use it to derive the device UID).
        intended_use: Intended-use statement of the model set (for the report).
        threshold_rule: How the threshold was chosen, from the manifest's ``threshold``
            block: ``rule``, ``description``, ``fitted_on`` and its metrics
            (``sensitivity``, ``sensitivity_ci``, ``specificity``, ...); empty when the
            manifest gives a plain number.
        inference_engine: Engine and precision the networks ran with (e.g. ``"openvino 2026.4.1
            CPU fp32"``, or an int8 mode with its validation); printed in every report.
    """

    ensemble: str
    members: list[MemberResult]
    fused_score: float
    threshold: float
    predicted_uncontrolled: bool
    agreement: dict[str, float] = field(default_factory=dict)
    weights_renormalised: bool = False
    model_set_version: str = ""
    model_set_synthetic: bool = False
    other_ensembles: dict[str, "Prediction"] = field(default_factory=dict)
    withheld_ensembles: dict[str, str] = field(default_factory=dict)
    model_set_name: str = ""
    model_set_identity: str = ""
    intended_use: str = ""
    threshold_rule: dict[str, Any] = field(default_factory=dict)
    inference_engine: str = ""
