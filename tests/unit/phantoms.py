"""Small analytic head phantoms for preprocessing tests (not the synthetic study generator).

An ellipsoidal head in LPS mm centred near the origin: scalp, skull, extra-axial
CSF, brain (grey/white, ventricles, a few bright lesions placed asymmetrically so
that rotations are observable). ``render`` samples it on an axial thick-slice
grid with slab averaging through the slice thickness, as a 2D multi-slice MR
acquisition does; the T2 is rendered from anatomy moved by a known rigid
transform so that registration can be checked against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# (T2, FLAIR) intensities per tissue
CONTRAST = {
    "air": (0.0, 0.0), "scalp": (700.0, 650.0), "skull": (60.0, 50.0), "csf": (1000.0, 80.0),
    "gm": (520.0, 480.0), "wm": (380.0, 400.0), "lesion": (850.0, 820.0),
}
LESIONS = [((25.0, -30.0, 10.0), 7.0), ((-35.0, 10.0, 25.0), 5.0), ((15.0, 35.0, -8.0), 6.0)]


@dataclass(frozen=True)
class HeadShape:
    """Semi-axes (mm, x y z) of the brain; the head adds CSF, skull and scalp shells."""

    brain: tuple[float, float, float] = (62.0, 78.0, 52.0)
    csf_mm: float = 3.0
    skull_mm: float = 4.0
    scalp_mm: float = 5.0


def _radius(p: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return np.sqrt(((p / axes) ** 2).sum(axis=1))


def tissue_values(points: np.ndarray, shape: HeadShape, contrast: int) -> tuple[np.ndarray, np.ndarray]:
    """Intensities (contrast 0 = T2, 1 = FLAIR) and brain membership at LPS points (N, 3)."""
    b = np.array(shape.brain)
    r = _radius(points, b)
    # equivalent mm depth of the shells measured along the mean semi-axis
    mean_axis = float(b.mean())
    d = (r - 1.0) * mean_axis
    val = np.full(len(points), CONTRAST["air"][contrast])
    val[d < shape.csf_mm + shape.skull_mm + shape.scalp_mm] = CONTRAST["scalp"][contrast]
    val[d < shape.csf_mm + shape.skull_mm] = CONTRAST["skull"][contrast]
    val[d < shape.csf_mm] = CONTRAST["csf"][contrast]
    brain = r < 1.0
    val[brain] = CONTRAST["gm"][contrast]
    val[r < 0.85] = CONTRAST["wm"][contrast]
    # lateral ventricles: two small ellipsoids beside the midline
    for sx in (-1.0, 1.0):
        vent = _radius(points - np.array([sx * 9.0, -5.0, 8.0]), np.array([6.0, 22.0, 9.0])) < 1.0
        val[vent] = CONTRAST["csf"][contrast]
    for centre, radius in LESIONS:
        les = np.linalg.norm(points - np.array(centre), axis=1) < radius
        val[les & brain] = CONTRAST["lesion"][contrast]
    return val, brain


def make_grid(size: tuple[int, int, int], spacing: tuple[float, float, float],
              center: tuple[float, float, float] = (0.0, 0.0, 0.0),
              direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    img = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction])
    d = np.array(direction, dtype=float).reshape(3, 3)
    half = (np.array(size) - 1) / 2.0 * np.array(spacing)
    img.SetOrigin((np.array(center) - d @ half).tolist())
    return img


def render(grid: sitk.Image, contrast: int, *, shape: HeadShape = HeadShape(),
           world_to_anatomy: sitk.Transform | None = None, slab_mm: float = 5.0, slab_samples: int = 3,
           noise: float = 0.0, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """Render the phantom on ``grid``.

    Args:
        grid: Target geometry (values ignored).
        contrast: 0 = T2, 1 = FLAIR.
        shape: Head dimensions.
        world_to_anatomy: Maps a scanner point to the anatomy point seen there
            (None = identity). To render a T2 whose ``t2_to_flair`` truth is
            ``T`` (FLAIR point -> T2 point), pass ``T.GetInverse()``.
        slab_mm: Slice thickness averaged through-plane.
        slab_samples: Sub-samples through the slab.
        noise: Gaussian noise SD (then magnitude, Rician-like).
        seed: Noise seed.

    Returns:
        (image float32, brain mask uint8) on the grid.
    """
    size = grid.GetSize()
    idx = np.indices(size, dtype=np.float64).reshape(3, -1).T
    d = np.array(grid.GetDirection()).reshape(3, 3)
    pts = (idx * np.array(grid.GetSpacing())) @ d.T + np.array(grid.GetOrigin())
    if world_to_anatomy is not None:
        origin = np.array(world_to_anatomy.TransformPoint((0.0, 0.0, 0.0)))
        basis = np.array([np.array(world_to_anatomy.TransformPoint(tuple(e))) - origin for e in np.eye(3)])
    else:
        origin, basis = np.zeros(3), np.eye(3)
    acc = np.zeros(len(pts))
    offsets = np.linspace(-slab_mm / 2, slab_mm / 2, slab_samples + 2)[1:-1] if slab_samples > 1 else [0.0]
    for off in offsets:
        v, _ = tissue_values((pts + off * d[:, 2]) @ basis + origin, shape, contrast)
        acc += v
    acc /= len(offsets)
    _, brain_mid = tissue_values(pts @ basis + origin, shape, contrast)
    if noise > 0:
        rng = np.random.default_rng(seed)
        acc = np.sqrt((acc + rng.normal(0, noise, acc.shape)) ** 2 + rng.normal(0, noise, acc.shape) ** 2)
    arr = acc.reshape(size).transpose(2, 1, 0).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(grid)
    mask = sitk.GetImageFromArray(brain_mid.reshape(size).transpose(2, 1, 0).astype(np.uint8))
    mask.CopyInformation(grid)
    return img, mask


def rigid(rot_deg: tuple[float, float, float], trans_mm: tuple[float, float, float],
          center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> sitk.Euler3DTransform:
    t = sitk.Euler3DTransform()
    t.SetCenter(center)
    t.SetRotation(*[np.deg2rad(a) for a in rot_deg])
    t.SetTranslation(trans_mm)
    return t


def study(t2_to_flair: sitk.Euler3DTransform | None = None, *, flair_size=(112, 112, 22),
          flair_spacing=(1.75, 1.75, 6.0), t2_size=(128, 128, 22), t2_spacing=(1.5, 1.5, 6.0),
          t2_center=(0.0, 0.0, 2.0), noise: float = 15.0, shape: HeadShape = HeadShape(), seed: int = 0):
    """A FLAIR + T2 pair: returns (flair, t2, brain mask on the FLAIR grid, truth transform)."""
    truth = t2_to_flair or sitk.Euler3DTransform()
    flair, mask = render(make_grid(flair_size, flair_spacing), 1, shape=shape, noise=noise, seed=seed)
    t2, _ = render(make_grid(t2_size, t2_spacing, t2_center), 0, shape=shape,
                   world_to_anatomy=truth.GetInverse(), noise=noise, seed=seed + 1)
    return flair, t2, mask, truth
