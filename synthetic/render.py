"""Render the phantom onto an acquisition grid: slab sampling, contrast, bias field, noise.

A :class:`SeriesGrid` is a stack of parallel slices as the scanner stores them
(first-slice position, row/column/normal directions, spacing, slice
thickness). A :class:`Pose` places the head frame in scanner coordinates
(``x_scanner = R @ a + t``). :func:`sample_labels` evaluates the phantom at
``n_sub`` points through each slice's thickness (partial-volume slab sampling)
and :func:`render_contrast` maps labels to intensities and averages them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .phantom import MAX_NODULES, MAX_TUBERS, NODULE_BASE, TUBER_BASE, HeadPhantom, Tissue

_CHUNK_POINTS = 600_000
_COARSE = 8  # pixels between samples of the coarse head-bounding test


@dataclass(frozen=True)
class Pose:
    """Rigid placement of the head frame in scanner (LPS) coordinates: ``x = R a + t``."""

    rotation: np.ndarray
    translation: np.ndarray

    def to_head(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) - self.translation) @ self.rotation

    def to_scanner(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a) @ self.rotation.T + self.translation


@dataclass(frozen=True)
class SeriesGrid:
    """Geometry of one stack of slices.

    Attributes:
        columns / rows / slices: Matrix size (x = columns along the row direction).
        pixel_mm: (column spacing along the row direction, row spacing along the column direction).
        slice_spacing_mm: Distance between slice centres.
        thickness_mm: Slice thickness (slab sampled over it).
        direction: 3x3, columns = row direction, column direction, slice normal (LPS).
        origin: Position of the centre of the first pixel of the first slice (LPS mm).
    """

    columns: int
    rows: int
    slices: int
    pixel_mm: tuple[float, float]
    slice_spacing_mm: float
    thickness_mm: float
    direction: np.ndarray
    origin: np.ndarray

    @classmethod
    def centred(cls, centre: np.ndarray, direction: np.ndarray, columns: int, rows: int, slices: int,
                pixel_mm: float | tuple[float, float], slice_spacing_mm: float, thickness_mm: float) -> "SeriesGrid":
        """A grid whose centre is at ``centre``."""
        px = (pixel_mm, pixel_mm) if isinstance(pixel_mm, (int, float)) else tuple(pixel_mm)
        d = np.asarray(direction, dtype=float)
        half = np.array([(columns - 1) * px[0], (rows - 1) * px[1], (slices - 1) * slice_spacing_mm]) / 2.0
        origin = np.asarray(centre, dtype=float) - d @ half
        return cls(columns, rows, slices, (float(px[0]), float(px[1])), float(slice_spacing_mm),
                   float(thickness_mm), d, origin)

    def centre(self) -> np.ndarray:
        """Physical centre of the grid (LPS mm)."""
        half = np.array([(self.columns - 1) * self.pixel_mm[0], (self.rows - 1) * self.pixel_mm[1],
                         (self.slices - 1) * self.slice_spacing_mm]) / 2.0
        return self.origin + self.direction @ half

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice ``k``."""
        return self.origin + self.direction[:, 2] * (k * self.slice_spacing_mm)

    def image_orientation(self) -> list[float]:
        return [*self.direction[:, 0].tolist(), *self.direction[:, 1].tolist()]

    def spacing(self) -> tuple[float, float, float]:
        return (self.pixel_mm[0], self.pixel_mm[1], self.slice_spacing_mm)

    def to_sitk(self, array_zyx: np.ndarray) -> sitk.Image:
        """Wrap a (slices, rows, columns) array with this grid's geometry."""
        img = sitk.GetImageFromArray(array_zyx)
        img.SetSpacing(self.spacing())
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return img


def slab_offsets(thickness_mm: float, n_sub: int) -> np.ndarray:
    """Centres of ``n_sub`` equal bins across the slice thickness (mm along the normal)."""
    return ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * thickness_mm


def sample_labels(phantom: HeadPhantom, grid: SeriesGrid, pose: Pose, n_sub: int = 3
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Phantom labels at slab sub-samples of every voxel of ``grid``.

    Returns:
        ``(labels, in_brain)`` of shape (slices, n_sub, rows, columns), uint8 and bool.
    """
    offsets = slab_offsets(grid.thickness_mm, n_sub) if n_sub > 1 else np.zeros(1)
    # Head-frame coordinates are affine in the voxel indices.
    r_t = pose.rotation.T
    a0 = (grid.origin - pose.translation) @ pose.rotation
    e_col = r_t @ grid.direction[:, 0] * grid.pixel_mm[0]
    e_row = r_t @ grid.direction[:, 1] * grid.pixel_mm[1]
    e_n = r_t @ grid.direction[:, 2]
    ii = np.arange(grid.columns, dtype=np.float32)
    jj = np.arange(grid.rows, dtype=np.float32)
    e_row32, e_col32 = e_row.astype(np.float32), e_col.astype(np.float32)
    shape = (grid.slices, len(offsets), grid.rows, grid.columns)
    labels = np.zeros(shape, dtype=np.uint8)
    in_brain = np.zeros(shape, dtype=bool)

    # Most of a field of view is air: find each plane's head bounding box on a coarse grid first.
    ic = np.unique(np.append(np.arange(0, grid.columns, _COARSE), grid.columns - 1))
    jc = np.unique(np.append(np.arange(0, grid.rows, _COARSE), grid.rows - 1))
    coarse = (jc[:, None, None] * e_row[None, None, :] + ic[None, :, None] * e_col[None, None, :]).reshape(-1, 3)
    pending: list[tuple[int, int, int, int, int, int, np.ndarray]] = []
    pending_points = 0

    def flush() -> None:
        nonlocal pending, pending_points
        if not pending:
            return
        lab, brain = phantom.labels(np.concatenate([blk[-1] for blk in pending]))
        start = 0
        for k, s, j0, j1, i0, i1, pts in pending:
            n = pts.shape[0]
            labels[k, s, j0:j1, i0:i1] = lab[start:start + n].reshape(j1 - j0, i1 - i0)
            in_brain[k, s, j0:j1, i0:i1] = brain[start:start + n].reshape(j1 - j0, i1 - i0)
            start += n
        pending, pending_points = [], 0

    for k in range(grid.slices):
        for s, off in enumerate(offsets):
            base = a0 + e_n * (k * grid.slice_spacing_mm + off)
            hit = phantom.head_bound(base + coarse).reshape(len(jc), len(ic))
            if not hit.any():
                continue
            rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
            j0 = int(jc[max(rows[0] - 2, 0)])
            j1 = int(jc[min(rows[-1] + 2, len(jc) - 1)]) + 1
            i0 = int(ic[max(cols[0] - 2, 0)])
            i1 = int(ic[min(cols[-1] + 2, len(ic) - 1)]) + 1
            pts = (base.astype(np.float32) + jj[j0:j1, None, None] * e_row32
                   + ii[None, i0:i1, None] * e_col32).reshape(-1, 3)
            pending.append((k, s, j0, j1, i0, i1, pts))
            pending_points += pts.shape[0]
            if pending_points >= _CHUNK_POINTS:
                flush()
    flush()
    return labels, in_brain


# Contrast tables: intensity per tissue (arbitrary units, 3 T-like), tuber and nodule values
# and white matter before myelination.
CONTRASTS: dict[str, dict[str, float]] = {
    "T2": dict(air=0, scalp=1100, skull=60, csf=2000, gm=1000, wm=700, wm_unmyelinated=1250, deep_gm=860,
               soft=480, tuber=1480, nodule=720, noise=22),
    "FLAIR": dict(air=0, scalp=900, skull=40, csf=90, gm=780, wm=600, wm_unmyelinated=700, deep_gm=700,
                  soft=430, tuber=1120, nodule=840, noise=18),
    "T1": dict(air=0, scalp=1400, skull=50, csf=260, gm=700, wm=1000, wm_unmyelinated=620, deep_gm=780,
               soft=600, tuber=640, nodule=920, noise=20),
    "DWI_B0": dict(air=0, scalp=300, skull=30, csf=1500, gm=820, wm=620, wm_unmyelinated=950, deep_gm=700,
                   soft=250, tuber=1050, nodule=600, noise=25),
    "DWI_B1000": dict(air=0, scalp=40, skull=15, csf=60, gm=430, wm=380, wm_unmyelinated=330, deep_gm=420,
                      soft=90, tuber=400, nodule=460, noise=18),
    "LOCALIZER": dict(air=0, scalp=700, skull=80, csf=380, gm=520, wm=560, wm_unmyelinated=500, deep_gm=540,
                      soft=480, tuber=520, nodule=560, noise=20),
}


def myelination(age_months: float) -> float:
    """Fraction of adult white-matter T2/T1 appearance (logistic, half at 12 months)."""
    return 1.0 / (1.0 + math.exp(-(age_months - 12.0) / 4.0))


def contrast_lut(kind: str, phantom: HeadPhantom) -> np.ndarray:
    """Intensity per label code (256 entries) for one contrast and subject."""
    c = CONTRASTS[kind]
    m = myelination(phantom.subject.age_at_imaging_months)
    lut = np.zeros(256, dtype=np.float32)
    lut[Tissue.SCALP] = c["scalp"]
    lut[Tissue.SKULL] = c["skull"]
    lut[Tissue.CSF] = c["csf"]
    lut[Tissue.VENTRICLE] = c["csf"]
    lut[Tissue.GM] = c["gm"]
    lut[Tissue.WM] = m * c["wm"] + (1.0 - m) * c["wm_unmyelinated"]
    lut[Tissue.DEEP_GM] = c["deep_gm"]
    lut[Tissue.SOFT_TISSUE] = c["soft"]
    wm = lut[Tissue.WM]
    for i, t in enumerate(phantom.subject.tubers[:MAX_TUBERS]):
        lut[TUBER_BASE + i] = wm + (c["tuber"] - c["wm"]) * t.contrast
    lut[NODULE_BASE:NODULE_BASE + MAX_NODULES] = c["nodule"]
    return lut


def render_contrast(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Mean intensity over the slab sub-samples: (slices, n_sub, rows, cols) -> (slices, rows, cols)."""
    return lut[labels].mean(axis=1, dtype=np.float32)


def bias_field(grid: SeriesGrid, coefficients: np.ndarray, scale_mm: float = 100.0, step: int = 8) -> np.ndarray:
    """Smooth multiplicative field: exp of a quadratic polynomial in scanner coordinates.

    Evaluated every ``step`` pixels in-plane and linearly interpolated (the field is smooth).

    Args:
        grid: The grid to evaluate on.
        coefficients: 9 coefficients (x, y, z, x^2, y^2, z^2, xy, xz, yz) of the log field.
        scale_mm: Length that normalises the coordinates.
        step: In-plane subsampling of the exact evaluation.
    """
    ic = np.arange(0, grid.columns + step, step, dtype=np.float64)
    jc = np.arange(0, grid.rows + step, step, dtype=np.float64)
    kk = np.arange(grid.slices, dtype=np.float64)
    d = grid.direction
    pos = (grid.origin + kk[:, None, None, None] * grid.slice_spacing_mm * d[:, 2]
           + jc[None, :, None, None] * grid.pixel_mm[1] * d[:, 1]
           + ic[None, None, :, None] * grid.pixel_mm[0] * d[:, 0]) / scale_mm
    x, y, z = pos[..., 0], pos[..., 1], pos[..., 2]
    c = coefficients
    coarse = np.exp(c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z
                    + c[6] * x * y + c[7] * x * z + c[8] * y * z)
    # Separable linear interpolation from the coarse to the full in-plane grid.
    fi = np.arange(grid.columns) / step
    fj = np.arange(grid.rows) / step
    i0, j0 = fi.astype(int), fj.astype(int)
    wi, wj = (fi - i0)[None, None, :], (fj - j0)[None, :, None]
    rows = coarse[:, j0, :] * (1 - wj) + coarse[:, j0 + 1, :] * wj
    return (rows[:, :, i0] * (1 - wi) + rows[:, :, i0 + 1] * wi).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise (Rician statistics)."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    imag = rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.sqrt(real * real + imag * imag)
