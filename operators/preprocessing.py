"""The preprocessing stage: registration, brain extraction, normalisation, FLAIR3, quality checks.

Order (as in the published pipelines, see docs/preprocessing.md):

1. T2 rigidly registered into FLAIR space (``operators.registration``);
2. brain mask on the FLAIR grid (HD-BET or the fallback, ``operators.brain_extraction``);
3. min-max normalisation of FLAIR and registered T2 over the brain, then
   FLAIR3 = FLAIR^1.55 x T2^1.45 (``operators.intensity``), all on the FLAIR grid;
4. quality flags (``operators.quality``); a hard failure raises ``QualityCheckFailed``.

Resampling to each network's grid is not done here: the inference stage calls
``operators.model_grid.to_model_grid`` on the normalised images, the same
function training uses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from operators.brain_extraction import BrainExtractor
from operators.datatypes import Preprocessed, QualityFlag, Volume
from operators.errors import PreprocessingError
from operators.intensity import DEFAULT_NORMALISATION, NormalisationSpec, flair3, normalise_brain
from operators.lazy_operator import lazy_operator
from operators.model_grid import ETSC_NET_GRID, WAE_NET_GRID, GridSpec, fraction_of_brain_inside_grid
from operators.quality import (
    DEFAULT_THRESHOLDS,
    QualityThresholds,
    check_brain_volume,
    check_fov_overlap,
    check_mask_edges,
    check_model_grid,
    check_registration,
    check_registration_motion,
    mask_volume_ml,
    raise_on_failure,
)
from operators.registration import RegistrationSettings, head_mask, register_t2_to_flair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessingConfig:
    """Settings of the preprocessing stage.

    Attributes:
        registration: Rigid MI registration parameters.
        normalisation: How min and max of the brain min-max normalisation are taken.
        quality: Quality-check thresholds.
        model_grids: Grids checked for brain cropping (the networks' inputs).
        fail_on_quality: Raise ``QualityCheckFailed`` when a check fails (else only flag).
    """

    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    normalisation: NormalisationSpec = DEFAULT_NORMALISATION
    quality: QualityThresholds = DEFAULT_THRESHOLDS
    model_grids: tuple[GridSpec, ...] = (WAE_NET_GRID, ETSC_NET_GRID)
    fail_on_quality: bool = True


def _t2_coverage_on_flair(t2: sitk.Image, flair: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    ones = sitk.Image(t2.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(t2)
    return sitk.Resample(ones, flair, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def preprocess(t2: Volume, flair: Volume, *, extractor: BrainExtractor,
               patient_age_months: float | None = None,
               config: PreprocessingConfig | None = None) -> Preprocessed:
    """Run the whole preprocessing of one study.

    Args:
        t2: T2 volume (LPS, exact geometry).
        flair: FLAIR volume (LPS, exact geometry); its grid is the output grid.
        extractor: Brain extraction (built once per process: HD-BET or fallback).
        patient_age_months: Age at imaging, for the brain-volume plausibility check.
        config: Stage settings (defaults: ``PreprocessingConfig()``).

    Returns:
        ``Preprocessed`` with images on the FLAIR grid, the transform, numbers,
        quality flags and timings.

    Raises:
        PreprocessingError: A step failed (message names the series).
        QualityCheckFailed: A hard quality check failed and ``fail_on_quality``
            is set; its ``flags`` hold every flag of the study.
    """
    config = config or PreprocessingConfig()
    timings: dict[str, float] = {}
    ids = f"T2 series {t2.series_instance_uid}, FLAIR series {flair.series_instance_uid}"
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    flair_img = sitk.Cast(flair.image, sitk.sitkFloat32)
    t2_img = sitk.Cast(t2.image, sitk.sitkFloat32)
    try:
        flair_head = head_mask(flair_img)
        t2_head = head_mask(t2_img)
        reg = register_t2_to_flair(t2_img, flair_img, config.registration,
                                   flair_head=flair_head, t2_head=t2_head)
    except PreprocessingError as exc:
        raise PreprocessingError(f"{exc.reason} ({ids})", stage="registration") from exc
    timings["registration"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        bet = extractor.extract(flair_img, reg.t2_in_flair)
    except PreprocessingError as exc:
        raise PreprocessingError(f"{exc.reason} (FLAIR series {flair.series_instance_uid})",
                                 stage="brain_extraction") from exc
    mask = bet.mask
    timings["brain_extraction"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    coverage = _t2_coverage_on_flair(t2_img, flair_img, reg.transform)
    brain = sitk.GetArrayViewFromImage(mask) > 0
    covered = sitk.GetArrayViewFromImage(coverage) > 0
    brain_voxels = int(brain.sum())
    if brain_voxels == 0:
        raise PreprocessingError(f"brain mask is empty (FLAIR series {flair.series_instance_uid})",
                                 stage="brain_extraction")
    t2_brain_coverage = float((brain & covered).sum() / brain_voxels)
    flair_norm = normalise_brain(flair_img, mask, config.normalisation, name="FLAIR")
    # The T2 is normalised over the part of the brain it covers; elsewhere it is 0.
    t2_mask = sitk.GetImageFromArray((brain & covered).astype(np.uint8))
    t2_mask.CopyInformation(mask)
    t2_norm = normalise_brain(reg.t2_in_flair, t2_mask, config.normalisation, name="T2")
    f3 = flair3(flair_norm, t2_norm)
    timings["normalisation"] = time.perf_counter() - t0

    volume_ml = mask_volume_ml(mask)
    flags: list[QualityFlag] = []
    flags += check_registration(reg.nmi, config.quality)
    flags += check_registration_motion(reg.transform, reg.transform.GetCenter(), config.quality)
    flags += check_brain_volume(volume_ml, patient_age_months, config.quality)
    flags += check_mask_edges(mask, config.quality)
    flags += check_fov_overlap(t2_brain_coverage, config.quality)
    for grid in config.model_grids:
        flags += check_model_grid(fraction_of_brain_inside_grid(mask, grid), grid.name, config.quality)
    timings["total"] = time.perf_counter() - t_all

    details: dict[str, Any] = {
        "registration": {"metric": "Mattes mutual information", "initialisation": reg.initialisation,
                         "iterations": reg.iterations, **reg.parameters},
        "brain_extraction": dict(bet.details),
    }
    for f in flags:
        log = logger.warning if f.severity != "info" else logger.info
        log("quality %s (%s): %s", f.code, f.severity, f.message)
    result = Preprocessed(
        flair=flair_img, t2_in_flair=reg.t2_in_flair, brain_mask=mask, flair_norm=flair_norm,
        t2_norm=t2_norm, flair3=f3, t2_to_flair=reg.transform, registration_metric=reg.metric_value,
        brain_volume_ml=volume_ml, brain_extraction_method=bet.method, flags=flags,
        timings_s={k: round(v, 3) for k, v in timings.items()}, registration_nmi=reg.nmi,
        t2_brain_coverage=t2_brain_coverage, normalisation=config.normalisation.describe(), details=details)
    logger.info("preprocessed %s: brain %.0f ml (%s), NMI %.3f, %.1f s", ids, volume_ml, bet.method,
                reg.nmi, timings["total"])
    if config.fail_on_quality:
        raise_on_failure(flags)
    return result


def _build_operator() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class PreprocessingOperator(Operator):
        """Registers the T2 to the FLAIR, extracts the brain, normalises and synthesises FLAIR3.

        Named inputs:
            t2_volume: :class:`~operators.datatypes.Volume` of the T2 series.
            flair_volume: :class:`~operators.datatypes.Volume` of the FLAIR series.
            clinical: :class:`~operators.datatypes.ClinicalData` (its age at imaging feeds the
                brain-volume check; may be None).

        Named output:
            preprocessed: :class:`~operators.datatypes.Preprocessed`.
        """

        def __init__(self, fragment: Fragment, *args: Any, extractor: BrainExtractor | None = None,
                     config: PreprocessingConfig | None = None, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application (a Fragment) the operator belongs to.
                extractor: Brain extraction, built once and reused for every study
                    (default: ``BrainExtractor("auto")`` with the app's models folder
                    unknown, i.e. ``$TSC_HDBET_WEIGHTS`` or the fallback).
                config: Stage settings.
            """
            self.extractor = extractor or BrainExtractor("auto")
            self.config = config or PreprocessingConfig()
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("t2_volume")
            spec.input("flair_volume")
            spec.input("clinical")
            spec.output("preprocessed")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            t2 = op_input.receive("t2_volume")
            flair = op_input.receive("flair_volume")
            clinical = op_input.receive("clinical")
            age = getattr(clinical, "age_at_imaging_months", None) if clinical is not None else None
            result = preprocess(t2, flair, extractor=self.extractor,
                                patient_age_months=age.value if age is not None else None,
                                config=self.config)
            op_output.emit(result, "preprocessed")

    return PreprocessingOperator


__getattr__ = lazy_operator(globals(), "PreprocessingOperator", _build_operator)
