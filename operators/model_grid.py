"""Resampling of a preprocessed image onto a network's input grid.

One function, ``to_model_grid``, is used by both training and the application,
so the network sees the same geometry in both.

Geometry of a model grid (fixed, documented, the same for every scanner):

* **Orientation**: axes aligned with the patient LPS axes (identity direction
  cosines), whatever the acquisition's orientation or obliquity. Index ``i``
  runs right -> left (+x), ``j`` anterior -> posterior (+y), ``k`` inferior ->
  superior (+z).
* **Array axis order**: the returned numpy array has shape ``GridSpec.shape`` =
  ``(nx, ny, nz)`` and ``array[i, j, k]`` is the image at the LPS point
  ``origin + (i * sx, j * sy, k * sz)`` (this is the transpose of
  ``SimpleITK.GetArrayFromImage``, which is ``(z, y, x)``).
* **Physical extent**: a fixed spacing per grid (``GridSpec.spacing_mm``), so a
  field of view of ``shape x spacing`` mm centred on the centre of the brain
  mask's bounding box. The volume is *not* stretched to fill the grid: a thick
  slice acquisition is interpolated to the grid spacing and the brain keeps its
  true size and shape (children's brains are smaller than adults'; that is
  information the network may use).
* **Interpolation**: trilinear for intensities, nearest neighbour for masks;
  points outside the source image are 0.

Order of operations (exactly): the brain is extracted and min-max normalised on
the FLAIR acquisition grid, FLAIR3 is computed there (``operators.intensity``),
and only then is each normalised image resampled here. The values stay within
[0, 1] (linear interpolation is a convex combination); they are not
re-normalised after resampling, and voxels outside the brain are 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from operators.errors import PreprocessingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridSpec:
    """A network's input grid.

    Attributes:
        name: Identifier (e.g. ``"wae-net"``).
        shape: Array shape ``(nx, ny, nz)`` in LPS axis order.
        spacing_mm: Voxel spacing ``(sx, sy, sz)`` in mm.
    """

    name: str
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise ValueError(f"grid {self.name}: shape must be three positive integers, got {self.shape}")
        if len(self.spacing_mm) != 3 or any(float(s) <= 0 for s in self.spacing_mm):
            raise ValueError(f"grid {self.name}: spacing must be three positive numbers, got {self.spacing_mm}")

    @property
    def field_of_view_mm(self) -> tuple[float, float, float]:
        """Extent covered by the grid, voxel edge to voxel edge."""
        return tuple(float(n) * float(s) for n, s in zip(self.shape, self.spacing_mm))  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "GridSpec":
        """Build from a manifest entry such as ``{"shape": [128,128,128], "spacing_mm": [1.5,1.5,1.5]}``."""
        try:
            shape = tuple(int(v) for v in data["shape"])
            spacing = tuple(float(v) for v in data["spacing_mm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"grid {name}: needs 'shape' and 'spacing_mm' lists of 3 numbers ({exc})") from exc
        return cls(name, shape, spacing)  # type: ignore[arg-type]


# 128^3 as in WAE-Net, 1.5 mm isotropic: 192 mm field of view, enough for a
# 16-year-old's brain with margin.
WAE_NET_GRID = GridSpec("wae-net", (128, 128, 128), (1.5, 1.5, 1.5))
# 256 x 256 x 128 as in eTSC-Net: same 192 mm field of view, finer in-plane.
ETSC_NET_GRID = GridSpec("etsc-net", (256, 256, 128), (0.75, 0.75, 1.5))


def brain_center_lps(mask: sitk.Image) -> tuple[float, float, float]:
    """Centre of the brain mask's bounding box, as an LPS point in mm.

    The bounding box is taken in physical space (the 8 corners of the index
    bounding box mapped through the image geometry), so it does not depend on
    the acquisition's axis order.

    Raises:
        PreprocessingError: The mask is empty.
    """
    arr = sitk.GetArrayViewFromImage(mask)
    nz = np.nonzero(arr)
    if nz[0].size == 0:
        raise PreprocessingError("brain mask is empty: no centre for the model grid")
    lo = [int(a.min()) for a in nz][::-1]  # (x, y, z) index order
    hi = [int(a.max()) for a in nz][::-1]
    corners = np.array([mask.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz)))
                        for cx in (lo[0], hi[0]) for cy in (lo[1], hi[1]) for cz in (lo[2], hi[2])])
    return tuple(float(v) for v in (corners.min(axis=0) + corners.max(axis=0)) / 2.0)  # type: ignore[return-value]


def grid_reference(spec: GridSpec, center_lps: tuple[float, float, float]) -> sitk.Image:
    """An empty image with the grid's geometry, centred on ``center_lps``.

    The centre of the grid (the middle between the first and last voxel centres
    along each axis) is placed at ``center_lps``.
    """
    ref = sitk.Image([int(n) for n in spec.shape], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in spec.spacing_mm])
    ref.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    origin = [float(c) - float(s) * (int(n) - 1) / 2.0
              for c, s, n in zip(center_lps, spec.spacing_mm, spec.shape)]
    ref.SetOrigin(origin)
    return ref


def resample_to_grid_image(image: sitk.Image, spec: GridSpec, center_lps: tuple[float, float, float],
                           *, is_mask: bool = False) -> sitk.Image:
    """Resample ``image`` onto the grid as a SimpleITK image (geometry kept).

    Args:
        image: Source image (any orientation).
        spec: Target grid.
        center_lps: Where the grid centre goes (usually ``brain_center_lps(mask)``).
        is_mask: Nearest-neighbour interpolation and uint8 output when True,
            trilinear and float32 otherwise.

    Returns:
        The resampled image (0 outside the source).
    """
    ref = grid_reference(spec, center_lps)
    if is_mask:
        return sitk.Resample(sitk.Cast(image, sitk.sitkUInt8), ref, sitk.Transform(), sitk.sitkNearestNeighbor,
                             0, sitk.sitkUInt8)
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear,
                         0.0, sitk.sitkFloat32)


def image_to_xyz_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> numpy array indexed ``[i, j, k]`` (x, y, z), C-contiguous."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def to_model_grid(image: sitk.Image, brain_mask: sitk.Image, spec: GridSpec,
                  *, is_mask: bool = False) -> np.ndarray:
    """Resample a preprocessed image to a network's input grid (training and app).

    Args:
        image: A normalised image on the FLAIR grid (``Preprocessed.flair_norm``,
            ``t2_norm`` or ``flair3``), or a mask when ``is_mask``.
        brain_mask: The brain mask on the same grid; fixes the grid centre.
        spec: Target grid.
        is_mask: Resample with nearest neighbour (for masks).

    Returns:
        Array of shape ``spec.shape`` in (x, y, z) = LPS axis order, float32
        (uint8 for masks). See the module docstring for the exact geometry.
    """
    center = brain_center_lps(brain_mask)
    out = resample_to_grid_image(image, spec, center, is_mask=is_mask)
    return image_to_xyz_array(out)


def fraction_of_brain_inside_grid(brain_mask: sitk.Image, spec: GridSpec) -> float:
    """Fraction of the brain mask's volume that falls inside the grid's field of view.

    Used by quality control: below 1 means the model will see a cropped brain.
    """
    center = brain_center_lps(brain_mask)
    ref = grid_reference(spec, center)
    arr = sitk.GetArrayViewFromImage(brain_mask)
    idx = np.argwhere(arr > 0)[:, ::-1].astype(np.float64)  # (x, y, z) indices
    if idx.size == 0:
        return 0.0
    direction = np.array(brain_mask.GetDirection()).reshape(3, 3)
    pts = (idx * np.array(brain_mask.GetSpacing())) @ direction.T + np.array(brain_mask.GetOrigin())
    cont = (pts - np.array(ref.GetOrigin())) / np.array(ref.GetSpacing())
    inside = np.all((cont >= -0.5) & (cont <= np.array(spec.shape) - 0.5), axis=1)
    return float(inside.mean())
