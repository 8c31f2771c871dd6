"""Acquisition protocols of the synthetic study: physics attributes and series descriptions.

Each series kind carries the attributes a selection stage can use to tell
contrasts apart by physics (ScanningSequence, SequenceVariant, ScanOptions,
TR/TE/TI, echo train length, acquisition type, ImageType), loosely modelled on a
3 T Siemens paediatric brain protocol. Descriptions come from vendor-style,
multilingual, blank or deliberately misleading pools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SERIES_KINDS = ("t2", "flair", "localizer", "t1", "flair_derived", "dwi")
DECOY_KINDS = ("localizer", "t1", "flair_derived", "dwi")
DESCRIPTION_MODES = ("standard", "blank", "misleading", "random")


@dataclass(frozen=True)
class SeriesProtocol:
    """Acquisition attributes of one series kind (classic DICOM keywords -> values)."""

    kind: str
    contrast: str
    image_type: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)


PROTOCOLS: dict[str, SeriesProtocol] = {
    "t2": SeriesProtocol("t2", "T2", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), {
        "ScanningSequence": "SE", "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": "",
        "MRAcquisitionType": "2D", "SequenceName": "*tse2d1_16", "RepetitionTime": 2790.0,
        "EchoTime": 93.0, "EchoTrainLength": 16, "FlipAngle": 150.0, "NumberOfAverages": 2.0,
        "PixelBandwidth": 220.0, "ProtocolName": "t2_tse_tra",
    }),
    "flair": SeriesProtocol("flair", "FLAIR", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), {
        "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": "IR",
        "MRAcquisitionType": "2D", "SequenceName": "*tir2d1_16", "RepetitionTime": 9000.0,
        "EchoTime": 132.0, "InversionTime": 2500.0, "EchoTrainLength": 16, "FlipAngle": 150.0,
        "NumberOfAverages": 1.0, "PixelBandwidth": 250.0, "ProtocolName": "t2_tirm_tra_dark-fluid",
    }),
    "localizer": SeriesProtocol("localizer", "LOCALIZER", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), {
        "ScanningSequence": "GR", "SequenceVariant": ["SP", "OSP"], "ScanOptions": "",
        "MRAcquisitionType": "2D", "SequenceName": "*fl2d1", "RepetitionTime": 8.6, "EchoTime": 4.0,
        "EchoTrainLength": 1, "FlipAngle": 20.0, "NumberOfAverages": 1.0, "PixelBandwidth": 320.0,
        "ProtocolName": "localizer",
    }),
    "t1_3d": SeriesProtocol("t1", "T1", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), {
        "ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": "IR",
        "MRAcquisitionType": "3D", "SequenceName": "*tfl3d1_16ns", "RepetitionTime": 1900.0,
        "EchoTime": 2.5, "InversionTime": 900.0, "EchoTrainLength": 1, "FlipAngle": 9.0,
        "NumberOfAverages": 1.0, "PixelBandwidth": 180.0, "ProtocolName": "t1_mprage_sag",
    }),
    "t1_2d": SeriesProtocol("t1", "T1", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), {
        "ScanningSequence": "SE", "SequenceVariant": ["SP", "OSP"], "ScanOptions": "",
        "MRAcquisitionType": "2D", "SequenceName": "*se2d1", "RepetitionTime": 500.0, "EchoTime": 10.0,
        "EchoTrainLength": 1, "FlipAngle": 90.0, "NumberOfAverages": 1.0, "PixelBandwidth": 200.0,
        "ProtocolName": "t1_se_tra",
    }),
    "flair_derived": SeriesProtocol("flair_derived", "FLAIR", ("DERIVED", "SECONDARY", "M", "ND", "NORM"), {}),
    "dwi": SeriesProtocol("dwi", "DWI", ("ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "NORM"), {
        "ScanningSequence": "EP", "SequenceVariant": ["SK", "SP"], "ScanOptions": ["PFP", "FS"],
        "MRAcquisitionType": "2D", "SequenceName": "*ep_b0", "RepetitionTime": 5000.0, "EchoTime": 80.0,
        "EchoTrainLength": 64, "FlipAngle": 90.0, "NumberOfAverages": 1.0, "PixelBandwidth": 1250.0,
        "ProtocolName": "ep2d_diff_3scan_trace",
    }),
}

_STANDARD = {
    "t2": "t2_tse_tra", "flair": "t2_tirm_tra_dark-fluid", "localizer": "localizer",
    "t1": "t1_mprage_sag", "flair_derived": "FLAIR ROI export", "dwi": "ep2d_diff_3scan_trace",
}
_VARIANTS = {
    "t2": ["t2_tse_tra", "AX T2 FSE", "T2W_TSE", "Ax T2", "T2 TSE axial", "T2 axial", "T2WI tra",
           "T2 TSE transversal", "T2 tra (Schädel)", "轴位T2加权", "T2 axial cerebro", "AX T2 PROPELLER"],
    "flair": ["t2_tirm_tra_dark-fluid", "FLAIR tra", "Ax T2 FLAIR", "T2 Flair axial", "AX FLAIR",
              "T2W_FLAIR", "FLAIR transversal", "dark fluid tra", "轴位FLAIR", "FLAIR axial cerebro",
              "T2-FLAIR tra"],
    "localizer": ["localizer", "AAHead_Scout", "3-plane loc", "Survey", "SCOUT", "定位像"],
    "t1": ["t1_mprage_sag", "SAG T1 MPRAGE", "T1W_3D_TFE", "t1_se_tra", "AX T1 SE", "T1 axial", "T1 3D sag"],
    "flair_derived": ["FLAIR ROI export", "FLAIR_tra_ROI", "t2_tirm_tra_dark-fluid", "Ax T2 FLAIR",
                      "FLAIR copy", "KEY IMAGES FLAIR"],
    "dwi": ["ep2d_diff_3scan_trace", "AX DWI", "DWI b1000", "Diffusion axial", "DWI_SSh", "弥散加权"],
}
_MISLEADING = {
    "t2": ["FLAIR", "Ax T2 FLAIR", "t2_tirm_tra_dark-fluid"],
    "flair": ["T2", "AX T2 FSE", "t2_tse_tra"],
    "localizer": ["T2 axial", "FLAIR"],
    "t1": ["T2W_TSE", "FLAIR tra"],
    "flair_derived": ["FLAIR tra", "t2_tirm_tra_dark-fluid"],
    "dwi": ["T2 axial", "FLAIR axial"],
}


def series_description(kind: str, mode: str, rng: np.random.Generator, t1_variant: str = "3d") -> str:
    """A SeriesDescription for a series of ``kind`` under a description mode.

    Args:
        kind: One of :data:`SERIES_KINDS`.
        mode: ``"standard"``, ``"blank"``, ``"misleading"`` or ``"random"``.
        rng: Random generator (drawn from even in standard mode to keep streams aligned).
        t1_variant: ``"3d"`` or ``"2d"`` (changes the standard T1 name).
    """
    u = rng.random()
    if mode == "standard":
        if kind == "t1":
            return "t1_mprage_sag" if t1_variant == "3d" else "t1_se_tra"
        return _STANDARD[kind]
    if mode == "blank":
        return ""
    if mode == "misleading":
        pool = _MISLEADING[kind]
        return pool[int(u * len(pool))]
    if mode == "random":
        if u < 0.15:
            return ""
        if u < 0.25:
            pool = _MISLEADING[kind]
        else:
            pool = _VARIANTS[kind]
        return pool[int(rng.random() * len(pool))]
    raise ValueError(f"unknown description mode {mode!r}; expected one of {DESCRIPTION_MODES}")
