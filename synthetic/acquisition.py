"""Where the head is and how each series is placed: poses, the T2-to-FLAIR motion, slice stacks.

The head frame is placed in the scanner by the FLAIR pose ``x = R_F a + c``
(a small tilt, head centre ``c``). Between the two acquisitions the head moves
by a rigid transform ``T(x) = R (x - c) + c + d`` about ``c``; the T2 is
acquired from the moved head, ``x_T2 = T(R_F a + c)``. ``T`` is ITK's
fixed-to-moving mapping with fixed = FLAIR and moving = T2. Both stacks stay
axial on the scanner, centred on the head with a few millimetres of jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .options import StudyOptions
from .render import Pose, SeriesGrid

AXIAL = np.eye(3)
SAGITTAL = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # rows A->P, cols S->I
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # rows R->L, cols S->I
MAX_HEAD_TILT_DEG = 3.0


@dataclass(frozen=True)
class AcquisitionPlan:
    """Poses and grids of one study.

    Attributes:
        head_centre: Centre of the head frame in FLAIR scanner coordinates (``c``).
        flair_pose / t2_pose: Head frame to scanner, for each acquisition.
        t2_to_flair: ``T`` as an Euler3DTransform (centre ``c``, rotation ``R``, translation ``d``).
        motion_rotation: ``R``; motion_translation: ``d``.
        flair_grid / t2_grid: The two axial stacks.
    """

    head_centre: np.ndarray
    flair_pose: Pose
    t2_pose: Pose
    t2_to_flair: sitk.Euler3DTransform
    motion_rotation: np.ndarray
    motion_translation: np.ndarray
    flair_grid: SeriesGrid
    t2_grid: SeriesGrid

    def rotation_deg(self) -> float:
        cos = (float(np.trace(self.motion_rotation)) - 1.0) / 2.0
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def rotation_from_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A direction uniform on the sphere."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def plan_acquisition(rng: np.random.Generator, options: StudyOptions) -> AcquisitionPlan:
    """Draw the head poses, the T2-to-FLAIR motion and the two stacks.

    The motion has a uniformly random axis and an angle uniform in
    [0, ``max_rotation_deg``], and a uniformly random direction with a length
    uniform in [0, ``max_translation_mm``].
    """
    flair_rot = rotation_from_axis_angle(random_unit(rng), math.radians(rng.uniform(0.0, MAX_HEAD_TILT_DEG)))
    head_centre = np.array([rng.uniform(-5, 5), rng.uniform(-15, 5), rng.uniform(-10, 10)])
    rel = rotation_from_axis_angle(random_unit(rng), math.radians(rng.uniform(0.0, options.max_rotation_deg)))
    shift = random_unit(rng) * rng.uniform(0.0, options.max_translation_mm)
    tfm = sitk.Euler3DTransform()
    tfm.SetCenter(tuple(float(v) for v in head_centre))
    tfm.SetMatrix(rel.ravel().tolist())
    tfm.SetTranslation(tuple(float(v) for v in shift))
    rel = np.array(tfm.GetMatrix()).reshape(3, 3)  # render with exactly what the file will say

    spacing = options.slice_thickness_mm + options.slice_gap_mm
    thick = options.slice_thickness_mm
    flair_grid = SeriesGrid.centred(
        head_centre + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-6, 6)]), AXIAL,
        options.flair_matrix[0], options.flair_matrix[1], options.slices, options.flair_pixel_mm, spacing, thick)
    t2_grid = SeriesGrid.centred(
        head_centre + shift + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-6, 6)]), AXIAL,
        options.t2_matrix[0], options.t2_matrix[1], options.slices, options.t2_pixel_mm, spacing, thick)
    return AcquisitionPlan(
        head_centre=head_centre, flair_pose=Pose(flair_rot, head_centre), t2_pose=Pose(rel @ flair_rot, head_centre + shift),
        t2_to_flair=tfm, motion_rotation=rel, motion_translation=shift, flair_grid=flair_grid, t2_grid=t2_grid)
