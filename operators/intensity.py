"""Intensity normalisation over the brain and FLAIR3 synthesis.

The published WAE-Net pipeline (Wang et al., AJNR 2023) normalises each
brain-extracted image to [0, 1] with ``(x - min) / (max - min)`` and then
synthesises ``FLAIR3 = FLAIR^1.55 x T2^1.45`` voxel-wise on the normalised
images. This module implements exactly that formula; the only choice left open
by the paper is what ``min`` and ``max`` are:

* ``NormalisationSpec(lower_percentile=0.0, upper_percentile=100.0)`` is the
  literal brain minimum and maximum (the paper's wording);
* the default, ``NormalisationSpec()`` = 0.5th and 99.5th brain percentiles,
  is the same formula with ``min``/``max`` taken as robust brain extremes and the
  result clipped to [0, 1]. A handful of hot voxels (flow artefact, a vessel,
  a mis-stripped scalp voxel) otherwise compress the whole brain towards 0,
  and FLAIR3, a product of powers, amplifies that (see docs/preprocessing.md and
  tests/unit/test_intensity.py for the measured effect).

Training and the application must use the same spec: both import it from here.
Normalisation happens on the FLAIR grid, over the brain mask, before any
resampling to a model grid (see ``operators.model_grid``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from operators.errors import PreprocessingError

logger = logging.getLogger(__name__)

FLAIR3_FLAIR_EXPONENT = 1.55
FLAIR3_T2_EXPONENT = 1.45


@dataclass(frozen=True)
class NormalisationSpec:
    """How ``min`` and ``max`` of the min-max normalisation are taken over the brain.

    Attributes:
        lower_percentile: Brain percentile used as ``min`` (0 = true minimum).
        upper_percentile: Brain percentile used as ``max`` (100 = true maximum).
    """

    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                f"need 0 <= lower_percentile < upper_percentile <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}")

    def describe(self) -> str:
        """A short label for reports and model cards."""
        if self.lower_percentile == 0.0 and self.upper_percentile == 100.0:
            return "min-max over brain"
        return (f"min-max over brain, min/max = brain percentiles "
                f"{self.lower_percentile:g}/{self.upper_percentile:g}, clipped to [0, 1]")


PAPER_MINMAX = NormalisationSpec(lower_percentile=0.0, upper_percentile=100.0)
DEFAULT_NORMALISATION = NormalisationSpec()


def brain_minmax_array(values: np.ndarray, mask: np.ndarray,
                       spec: NormalisationSpec = DEFAULT_NORMALISATION,
                       *, name: str = "image") -> np.ndarray:
    """Min-max normalise ``values`` over ``mask`` to [0, 1]; 0 outside the mask.

    Args:
        values: Image intensities (any shape).
        mask: Boolean-like array of the same shape; non-zero = brain.
        spec: Which brain extremes are used as min and max.
        name: What the image is, for error messages.

    Returns:
        float32 array, ``clip((x - lo) / (hi - lo), 0, 1)`` inside the mask, 0 outside.

    Raises:
        PreprocessingError: Empty mask, non-finite values or constant brain intensity.
    """
    if values.shape != mask.shape:
        raise PreprocessingError(f"{name}: image shape {values.shape} differs from mask shape {mask.shape}")
    inside = mask.astype(bool)
    brain = values[inside].astype(np.float64)
    if brain.size == 0:
        raise PreprocessingError(f"{name}: brain mask is empty, cannot normalise")
    if not np.all(np.isfinite(brain)):
        raise PreprocessingError(f"{name}: non-finite intensities inside the brain mask")
    lo, hi = np.percentile(brain, [spec.lower_percentile, spec.upper_percentile])
    if not hi > lo:
        raise PreprocessingError(f"{name}: brain intensity is constant ({lo:g}), cannot normalise")
    out = np.zeros(values.shape, dtype=np.float32)
    out[inside] = np.clip((brain - lo) / (hi - lo), 0.0, 1.0)
    return out


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5))


def _check_grid(image: sitk.Image, reference: sitk.Image, what: str, reference_name: str) -> None:
    if not _same_grid(image, reference):
        raise PreprocessingError(f"{what} is not on the same grid as the {reference_name} "
                                 f"(size {image.GetSize()} vs {reference.GetSize()})")


def normalise_brain(image: sitk.Image, mask: sitk.Image,
                    spec: NormalisationSpec = DEFAULT_NORMALISATION,
                    *, name: str = "image") -> sitk.Image:
    """Min-max normalise a SimpleITK image over its brain mask (see ``brain_minmax_array``).

    Args:
        image: Intensities on the same grid as ``mask``.
        mask: Brain mask (non-zero = brain).
        spec: Normalisation spec.
        name: What the image is (e.g. ``"FLAIR"``), for error messages.

    Returns:
        float32 image in [0, 1] with the geometry of ``image``; 0 outside the brain.
    """
    _check_grid(image, mask, name, "brain mask")
    arr = brain_minmax_array(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(mask) > 0,
                             spec, name=name)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out


def flair3_array(flair_norm: np.ndarray, t2_norm: np.ndarray) -> np.ndarray:
    """``FLAIR^1.55 x T2^1.45`` voxel-wise on normalised arrays (values in [0, 1]).

    Args:
        flair_norm: Normalised FLAIR, in [0, 1].
        t2_norm: Normalised T2 in FLAIR space, in [0, 1], same shape.

    Returns:
        float32 array in [0, 1].
    """
    if flair_norm.shape != t2_norm.shape:
        raise PreprocessingError(f"FLAIR3: FLAIR shape {flair_norm.shape} differs from T2 shape {t2_norm.shape}")
    f = np.clip(flair_norm.astype(np.float64), 0.0, 1.0)
    t = np.clip(t2_norm.astype(np.float64), 0.0, 1.0)
    return (np.power(f, FLAIR3_FLAIR_EXPONENT) * np.power(t, FLAIR3_T2_EXPONENT)).astype(np.float32)


def flair3(flair_norm: sitk.Image, t2_norm: sitk.Image) -> sitk.Image:
    """FLAIR3 image from the normalised FLAIR and normalised T2 (same grid).

    Args:
        flair_norm: Output of ``normalise_brain`` on the FLAIR.
        t2_norm: Output of ``normalise_brain`` on the T2 resampled into FLAIR space.

    Returns:
        float32 image in [0, 1] with the FLAIR geometry (0 outside the brain,
        since both inputs are 0 there).
    """
    _check_grid(t2_norm, flair_norm, "normalised T2", "normalised FLAIR")
    out = sitk.GetImageFromArray(flair3_array(sitk.GetArrayViewFromImage(flair_norm),
                                              sitk.GetArrayViewFromImage(t2_norm)))
    out.CopyInformation(flair_norm)
    return out
