"""Quality checks on preprocessing that protect the radiologist from a silently wrong result.

Each check returns ``QualityFlag`` objects (shown in the report). Severity
``"warning"`` means the result is produced but should be read with care;
``"fail"`` means the output cannot be trusted and the stage raises
``QualityCheckFailed`` (the application then writes a "not analysable" report
carrying the flags).

Checks:

* ``REGISTRATION_POOR`` - normalised mutual information between the FLAIR and
  the registered T2 over the head is low (misregistration, wrong series, or
  heavy motion).
* ``REGISTRATION_LARGE_MOTION`` - the estimated T2-to-FLAIR motion is larger
  than a child moves between two series of one session.
* ``BRAIN_VOLUME_IMPLAUSIBLE`` - brain-mask volume far from what is expected for
  the child's age (failed brain extraction, wrong anatomy, or a truncated field
  of view).
* ``BRAIN_MASK_AT_EDGE`` - the brain mask touches the in-plane border of the
  volume (field of view too small or the mask leaked into the background);
  ``BRAIN_CUT_BY_SLAB`` - the brain continues beyond the first/last slice.
* ``FOV_OVERLAP_LOW`` - the registered T2 covers little of the FLAIR brain.
* ``MODEL_GRID_CROP`` - part of the brain falls outside a network's grid.
* ``BRAIN_EXTRACTION_FALLBACK`` - the brain mask comes from the weight-free
  fallback, not HD-BET (parameters not installed, or the fallback configured);
  it is tuned on synthetic studies and less accurate on real scans.

The thresholds are configurable (``QualityThresholds``); the defaults were set
on synthetic studies (docs/preprocessing.md) and are deliberately loose.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from operators.datatypes import QualityFlag
from operators.errors import QualityCheckFailed

logger = logging.getLogger(__name__)

INFO, WARNING, FAIL = "info", "warning", "fail"


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the quality checks.

    Attributes:
        nmi_warn / nmi_fail: Normalised mutual information (1 = independent,
            2 = identical) below which registration is doubtful / not trusted.
            It separates gross failures (wrong series, divergence, > 10 mm off)
            from success, not millimetre errors: correctly registered synthetic
            studies scored 1.09-1.25, the same studies shifted by 12 mm 1.04-1.06.
        motion_warn_deg / motion_warn_mm: Head motion between the two series
            (rotation angle; displacement of the head centre) above which the
            registration result is flagged: both series come from one session,
            so a large estimated motion more likely means a failed registration.
        volume_warn_ratio / volume_fail_ratio: Allowed (low, high) ratio of the
            brain volume to the age-expected volume.
        volume_abs_ml: (low, high) plausible brain volume at any age, used when
            the age is unknown and as an outer limit.
        edge_warn_fraction / edge_fail_fraction: Fraction of brain-mask voxels
            in the outermost in-plane ring of the volume.
        slab_cut_ratio: Area of the brain in the first/last slice relative to
            its largest slice above which the brain is cut by the slab.
        overlap_warn / overlap_fail: Fraction of the FLAIR brain covered by the T2.
        grid_crop_warn: Fraction of the brain inside a model grid below which a
            warning is given.
    """

    nmi_warn: float = 1.06
    nmi_fail: float = 1.03
    motion_warn_deg: float = 10.0
    motion_warn_mm: float = 20.0
    volume_warn_ratio: tuple[float, float] = (0.6, 1.5)
    volume_fail_ratio: tuple[float, float] = (0.35, 2.2)
    volume_abs_ml: tuple[float, float] = (250.0, 2300.0)
    edge_warn_fraction: float = 0.0
    edge_fail_fraction: float = 0.02
    slab_cut_ratio: float = 0.5
    overlap_warn: float = 0.9
    overlap_fail: float = 0.6
    grid_crop_warn: float = 0.995


DEFAULT_THRESHOLDS = QualityThresholds()


def expected_brain_volume_ml(age_months: float) -> float:
    """Typical brain volume (ml, inside the brain surface incl. ventricles) at an age.

    A saturating growth curve, ``1250 - 850 exp(-age / 14 months)``: about 400 ml
    at birth, 700 ml at 6 months, 900 ml at 1 year, 1100 ml at 2 years, 1240 ml
    from 5 years on; within the ranges of paediatric MRI volumetry. It is a
    plausibility reference, not a norm: TSC brains vary, hence the wide ratios.
    """
    return 1250.0 - 850.0 * math.exp(-max(0.0, float(age_months)) / 14.0)


def mask_volume_ml(mask: sitk.Image) -> float:
    """Volume of the non-zero voxels in ml."""
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * voxel_ml


def check_registration(nmi: float, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> list[QualityFlag]:
    """Flag a poor T2-to-FLAIR registration from its normalised mutual information."""
    if not math.isfinite(nmi) or nmi < thresholds.nmi_fail:
        return [QualityFlag("REGISTRATION_POOR",
                            f"T2-to-FLAIR registration not trusted: normalised mutual information {nmi:.3f} "
                            f"< {thresholds.nmi_fail:.2f}", FAIL, nmi)]
    if nmi < thresholds.nmi_warn:
        return [QualityFlag("REGISTRATION_POOR",
                            f"T2-to-FLAIR registration doubtful: normalised mutual information {nmi:.3f} "
                            f"< {thresholds.nmi_warn:.2f}; check the T2 alignment", WARNING, nmi)]
    return []


def check_registration_motion(transform: sitk.Transform, center_lps: tuple[float, float, float],
                              thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> list[QualityFlag]:
    """Flag an implausibly large head motion between the T2 and the FLAIR.

    Args:
        transform: Estimated rigid transform (fixed = FLAIR, moving = T2).
        center_lps: A point at the centre of the head (mm); its displacement is the translation.
    """
    c = np.asarray(center_lps, dtype=float)
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.array([np.asarray(transform.TransformPoint(tuple(e))) - origin for e in np.eye(3)]).T
    angle = math.degrees(math.acos(float(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))))
    shift = float(np.linalg.norm(np.asarray(transform.TransformPoint(tuple(c))) - c))
    if angle > thresholds.motion_warn_deg or shift > thresholds.motion_warn_mm:
        return [QualityFlag("REGISTRATION_LARGE_MOTION",
                            f"estimated head motion between T2 and FLAIR is {angle:.1f} degrees and {shift:.1f} mm; "
                            "check the T2 alignment", WARNING, max(angle, shift))]
    return []


def check_brain_volume(volume_ml: float, age_months: float | None,
                       thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> list[QualityFlag]:
    """Flag a brain volume implausible for the age (or for any age when the age is unknown)."""
    lo_abs, hi_abs = thresholds.volume_abs_ml
    if not lo_abs <= volume_ml <= hi_abs:
        return [QualityFlag("BRAIN_VOLUME_IMPLAUSIBLE",
                            f"brain mask volume {volume_ml:.0f} ml outside {lo_abs:.0f}-{hi_abs:.0f} ml at any age",
                            FAIL, volume_ml)]
    if age_months is None:
        return [QualityFlag("BRAIN_VOLUME_AGE_UNKNOWN",
                            f"brain mask volume {volume_ml:.0f} ml not checked against age (age unknown)",
                            INFO, volume_ml)]
    expected = expected_brain_volume_ml(age_months)
    ratio = volume_ml / expected
    text = (f"brain mask volume {volume_ml:.0f} ml is {ratio:.2f} x the {expected:.0f} ml expected "
            f"at {age_months:.0f} months")
    if not thresholds.volume_fail_ratio[0] <= ratio <= thresholds.volume_fail_ratio[1]:
        return [QualityFlag("BRAIN_VOLUME_IMPLAUSIBLE", text + "; brain extraction not trusted", FAIL, volume_ml)]
    if not thresholds.volume_warn_ratio[0] <= ratio <= thresholds.volume_warn_ratio[1]:
        return [QualityFlag("BRAIN_VOLUME_IMPLAUSIBLE", text + "; check the brain mask", WARNING, volume_ml)]
    return []


def check_mask_edges(mask: sitk.Image, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> list[QualityFlag]:
    """Flag a brain mask touching the in-plane border, or cut by the first/last slice.

    The in-plane border is the outermost ring of voxels of every slice (array
    axes 1 and 2 of a SimpleITK array); through-plane, a brain whose first or
    last slice is still large was cut by the slab.
    """
    arr = sitk.GetArrayViewFromImage(mask) > 0
    total = int(arr.sum())
    flags: list[QualityFlag] = []
    if total == 0:
        return [QualityFlag("BRAIN_MASK_EMPTY", "brain mask is empty", FAIL, 0.0)]
    ring = np.zeros(arr.shape[1:], dtype=bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    on_edge = int(arr[:, ring].sum())
    frac = on_edge / total
    if frac > thresholds.edge_fail_fraction:
        flags.append(QualityFlag("BRAIN_MASK_AT_EDGE",
                                 f"{100 * frac:.1f}% of the brain mask lies on the in-plane border of the volume: "
                                 "field of view too small or the mask leaked", FAIL, frac))
    elif frac > thresholds.edge_warn_fraction:
        flags.append(QualityFlag("BRAIN_MASK_AT_EDGE",
                                 f"brain mask touches the in-plane border of the volume ({on_edge} voxels)",
                                 WARNING, frac))
    areas = arr.reshape(arr.shape[0], -1).sum(axis=1)
    largest = float(areas.max())
    end_ratio = max(float(areas[0]), float(areas[-1])) / largest if arr.shape[0] > 1 else 1.0
    if end_ratio > thresholds.slab_cut_ratio:
        flags.append(QualityFlag("BRAIN_CUT_BY_SLAB",
                                 f"brain continues beyond the first or last slice (end-slice area "
                                 f"{100 * end_ratio:.0f}% of the largest): volume and model input are truncated",
                                 WARNING, end_ratio))
    return flags


def check_fov_overlap(brain_coverage: float, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
                      ) -> list[QualityFlag]:
    """Flag a T2 whose field of view covers too little of the FLAIR brain.

    Args:
        brain_coverage: Fraction of FLAIR brain-mask voxels inside the registered T2's field of view.
    """
    if brain_coverage < thresholds.overlap_fail:
        return [QualityFlag("FOV_OVERLAP_LOW",
                            f"T2 covers only {100 * brain_coverage:.0f}% of the FLAIR brain: T2-based inputs "
                            "not trusted", FAIL, brain_coverage)]
    if brain_coverage < thresholds.overlap_warn:
        return [QualityFlag("FOV_OVERLAP_LOW",
                            f"T2 covers {100 * brain_coverage:.0f}% of the FLAIR brain", WARNING, brain_coverage)]
    return []


def check_model_grid(fraction_inside: float, grid_name: str,
                     thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> list[QualityFlag]:
    """Flag a brain that does not fit in a network's input grid."""
    if fraction_inside < thresholds.grid_crop_warn:
        return [QualityFlag("MODEL_GRID_CROP",
                            f"{100 * (1 - fraction_inside):.1f}% of the brain falls outside the {grid_name} grid",
                            WARNING, fraction_inside)]
    return []


def check_brain_extraction_method(method: str, note: str = "") -> list[QualityFlag]:
    """Warn when the brain mask comes from the weight-free fallback instead of HD-BET.

    Args:
        method: The brain-extraction method that ran (``"fallback-morphology"`` for the fallback).
        note: Why the fallback ran (e.g. ``"HD-BET parameters not installed"``).
    """
    from operators.brain_extraction import METHOD_FALLBACK

    if method != METHOD_FALLBACK:
        return []
    why = f" ({note})" if note else ""
    return [QualityFlag("BRAIN_EXTRACTION_FALLBACK",
                        f"brain mask from the weight-free fallback, not HD-BET{why}: less accurate on real scans "
                        "(measured Dice 0.88 against HD-BET on a real FLAIR); check the mask", WARNING)]


def failures(flags: list[QualityFlag]) -> list[QualityFlag]:
    """The flags with severity ``"fail"``."""
    return [f for f in flags if f.severity == FAIL]


def raise_on_failure(flags: list[QualityFlag]) -> None:
    """Raise ``QualityCheckFailed`` (carrying all flags) when any flag is a failure."""
    failed = failures(flags)
    if failed:
        raise QualityCheckFailed("; ".join(f.message for f in failed), flags=list(flags))
