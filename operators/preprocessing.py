"""Preprocessing: registration, brain extraction, normalisation, FLAIR3, quality checks.

Order (as in the published pipelines, see docs/preprocessing.md), one stage core each:

1. T2 rigidly registered into FLAIR space (``operators.registration.register_volumes``);
2. brain mask on the FLAIR grid (HD-BET or the fallback, ``operators.brain_extraction.extract_brain``);
3. ``finish_preprocessing`` (this module): min-max normalisation of FLAIR and registered T2 over
   the brain, FLAIR3 = FLAIR^1.55 x T2^1.45 (``operators.intensity``), all on the FLAIR grid,
   and the quality flags (``operators.quality``); a hard failure raises ``QualityCheckFailed``.

``preprocess`` chains the three (training, the DICOM node's warm worker and the
tests call it); the MAP runs them as separate operators, the third together
with the resampling to the model grids (``operators.model_inputs``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from operators.brain_extraction import BrainExtractor, extract_brain
from operators.datatypes import BrainExtracted, Preprocessed, QualityFlag, Volume
from operators.intensity import DEFAULT_NORMALISATION, NormalisationSpec, flair3, normalise_brain
from operators.model_grid import ETSC_NET_GRID, WAE_NET_GRID, GridSpec, fraction_of_brain_inside_grid
from operators.quality import (
    DEFAULT_THRESHOLDS,
    QualityThresholds,
    check_brain_extraction_method,
    check_brain_volume,
    check_fov_overlap,
    check_mask_edges,
    check_model_grid,
    check_registration,
    check_registration_motion,
    mask_volume_ml,
    raise_on_failure,
)
from operators.registration import RegistrationSettings, register_volumes

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
    """Run the whole preprocessing of one study (the three stage cores in order).

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
    pair = register_volumes(t2, flair, config.registration)
    return finish_preprocessing(extract_brain(pair, extractor), patient_age_months=patient_age_months,
                                config=config)


def finish_preprocessing(brain: BrainExtracted, *, patient_age_months: float | None = None,
                         config: PreprocessingConfig | None = None) -> Preprocessed:
    """Normalise, synthesise FLAIR3 and check quality (the stage after brain extraction).

    Args:
        brain: The brain-extraction stage's output (which carries the registration's).
        patient_age_months: Age at imaging, for the brain-volume plausibility check.
        config: Stage settings (defaults: ``PreprocessingConfig()``).

    Returns:
        ``Preprocessed``.

    Raises:
        QualityCheckFailed: A hard quality check failed and ``fail_on_quality`` is set.
    """
    config = config or PreprocessingConfig()
    pair, mask = brain.registered, brain.mask
    t0 = time.perf_counter()
    coverage = _t2_coverage_on_flair(pair.t2_image, pair.flair_image, pair.transform)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    covered = sitk.GetArrayViewFromImage(coverage) > 0
    t2_brain_coverage = float((inside & covered).sum() / inside.sum())
    flair_norm = normalise_brain(pair.flair_image, mask, config.normalisation, name="FLAIR")
    # The T2 is normalised over the part of the brain it covers; elsewhere it is 0.
    t2_mask = sitk.GetImageFromArray((inside & covered).astype(np.uint8))
    t2_mask.CopyInformation(mask)
    t2_norm = normalise_brain(pair.t2_in_flair, t2_mask, config.normalisation, name="T2")
    f3 = flair3(flair_norm, t2_norm)
    timings = {"registration": pair.seconds, "brain_extraction": brain.seconds,
               "normalisation": time.perf_counter() - t0}
    timings["total"] = sum(timings.values())

    volume_ml = mask_volume_ml(mask)
    flags: list[QualityFlag] = []
    flags += check_brain_extraction_method(brain.method, str(brain.details.get("note", "")))
    flags += check_registration(pair.nmi, config.quality)
    flags += check_registration_motion(pair.transform, pair.transform.GetCenter(), config.quality)
    flags += check_brain_volume(volume_ml, patient_age_months, config.quality)
    flags += check_mask_edges(mask, config.quality)
    flags += check_fov_overlap(t2_brain_coverage, config.quality)
    for grid in config.model_grids:
        flags += check_model_grid(fraction_of_brain_inside_grid(mask, grid), grid.name, config.quality)
    for f in flags:
        log = logger.warning if f.severity != "info" else logger.info
        log("quality %s (%s): %s", f.code, f.severity, f.message)
    result = Preprocessed(
        flair=pair.flair_image, t2_in_flair=pair.t2_in_flair, brain_mask=mask, flair_norm=flair_norm,
        t2_norm=t2_norm, flair3=f3, t2_to_flair=pair.transform, registration_metric=pair.metric_value,
        brain_volume_ml=volume_ml, brain_extraction_method=brain.method, flags=flags,
        timings_s={k: round(v, 3) for k, v in timings.items()}, registration_nmi=pair.nmi,
        t2_brain_coverage=t2_brain_coverage, normalisation=config.normalisation.describe(),
        details={"registration": dict(pair.details), "brain_extraction": dict(brain.details)})
    logger.info("preprocessed %s: brain %.0f ml (%s), NMI %.3f, %.1f s", pair.series_ids, volume_ml, brain.method,
                pair.nmi, timings["total"])
    if config.fail_on_quality:
        raise_on_failure(flags)
    return result
