"""Options of the synthetic study generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .protocols import DECOY_KINDS
from .subject import SubjectParams


@dataclass
class StudyOptions:
    """What to generate.

    Attributes:
        encoding: ``"classic"`` (default), ``"enhanced"``, ``"jpeg2000"``, ``"jpegls"`` or ``"rle"``.
        include_t2 / include_flair: Write these series (truth is always computed).
        decoys: True (all of localizer, t1, flair_derived, dwi), False (none), a list of kinds,
            or ``"random"`` (a random subset, possibly empty).
        descriptions: ``"standard"``, ``"blank"``, ``"misleading"`` or ``"random"``.
        t2_matrix / t2_pixel_mm / flair_matrix / flair_pixel_mm: (columns, rows) and pixel size.
        slices: Slices per T2/FLAIR/DWI series; slice_thickness_mm + slice_gap_mm = spacing.
        max_rotation_deg / max_translation_mm: Bound of the T2-to-FLAIR head motion.
        patient_name: DICOM PN string (default ``Synthetic^Subject<seed>``).
        study_description: Study Description of every series. The default does not match the
            shipped Orthanc routing rule (app/node/orthanc); ``"MR BRAIN TSC PROTOCOL"`` does.
        procedure_code: (code value, coding scheme designator, code meaning) written as the
            Procedure Code Sequence (0008,1032) of every instance, or None for none.
        subject: Use these subject parameters instead of drawing them from the seed.
        t2_rescale / flair_rescale: (slope, intercept) written to the T2/FLAIR files.
        slab_samples: Sub-samples through the slice thickness (partial volume).
        noise_scale / bias_strength: Multipliers of the default noise and bias field (0 disables).
        t1_variant: ``"3d"``, ``"2d"`` or ``"random"`` (T1 decoy as 3D MPRAGE-like or 2D SE).
        decoy_matrix_scale: Matrix (and 3D slice count) factor of the decoy series at constant field of
            view; None = ``min(1, flair_matrix[0] / 320)``, so small test studies get small decoys.
    """

    encoding: str = "classic"
    include_t2: bool = True
    include_flair: bool = True
    decoys: bool | Sequence[str] | str = True
    descriptions: str = "standard"
    t2_matrix: tuple[int, int] = (384, 384)
    t2_pixel_mm: float = 0.6
    flair_matrix: tuple[int, int] = (320, 320)
    flair_pixel_mm: float = 0.7
    slices: int = 24
    slice_thickness_mm: float = 5.0
    slice_gap_mm: float = 1.0
    max_rotation_deg: float = 5.0
    max_translation_mm: float = 10.0
    patient_name: str | None = None
    study_description: str = "MRI BRAIN WITHOUT CONTRAST"
    procedure_code: tuple[str, str, str] | None = None
    subject: SubjectParams | None = None
    t2_rescale: tuple[float, float] = (1.0, 0.0)
    flair_rescale: tuple[float, float] = (1.0, 0.0)
    slab_samples: int = 3
    noise_scale: float = 1.0
    bias_strength: float = 1.0
    t1_variant: str = "random"
    decoy_matrix_scale: float | None = None

    def decoy_kinds(self, rng: np.random.Generator) -> list[str]:
        """The decoy kinds to write, in canonical order (``rng`` is used by ``"random"`` only).

        Raises:
            ValueError: Unknown decoy kind.
        """
        if self.decoys is True:
            return list(DECOY_KINDS)
        if self.decoys is False or self.decoys is None:
            return []
        if isinstance(self.decoys, str):
            if self.decoys == "random":
                return [k for k in DECOY_KINDS if rng.random() < 0.6]
            kinds = [self.decoys]
        else:
            kinds = list(self.decoys)
        unknown = [k for k in kinds if k not in DECOY_KINDS]
        if unknown:
            raise ValueError(f"unknown decoy kinds {unknown}; expected some of {DECOY_KINDS}")
        return [k for k in DECOY_KINDS if k in kinds]
