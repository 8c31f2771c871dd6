"""Small classic MR series written with pydicom, for ingestion tests.

Each slice's stored values encode (slice, row, column) so that tests can check
where every voxel ends up: ``value = 1 + slice * 1000 + row * 31 + column``
(rows/columns < 31 keep the code unique for up to 64 slices within uint16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROOT = "1.2.826.0.1.3680043.8.498."


def stored_values(n_slices: int, rows: int, cols: int) -> np.ndarray:
    k, r, c = np.meshgrid(np.arange(n_slices), np.arange(rows), np.arange(cols), indexing="ij")
    return (1 + k * 1000 + r * 31 + c).astype(np.uint16)


@dataclass
class SeriesSpec:
    """What to write; defaults are a small axial T2 TSE."""

    description: str = "t2_tse_tra"
    series_number: int = 2
    rows: int = 12
    cols: int = 10
    n_slices: int = 12
    pixel_spacing: tuple[float, float] = (0.6, 0.6)  # (between rows, between columns)
    slice_step: float = 6.0  # distance between slice positions along the normal
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0)
    origin: Sequence[float] = (-3.0, -4.0, -30.0)
    tr: float | None = 2790.0
    te: float | None = 93.0
    ti: float | None = None
    scanning_sequence: str = "SE"
    sequence_variant: str = "SK\\SP\\OSP"
    scan_options: str = "PFP"
    acquisition_type: str = "2D"
    image_type: str = "ORIGINAL\\PRIMARY\\M\\ND\\NORM"
    contrast_agent: str | None = None
    b_values: Sequence[float] | None = None
    slope: float = 1.0
    intercept: float = 0.0
    slice_thickness: float = 5.0
    protocol_name: str | None = None
    positions: Sequence[Sequence[float]] | None = None  # explicit IPPs (override origin/step)
    orientations: Sequence[Sequence[float]] | None = None  # per-slice IOP (localizer)
    echo_times: Sequence[float] | None = None  # per-slice TE (mixed echoes)
    series_uid: str = field(default_factory=lambda: generate_uid(prefix=ROOT))
    value_offset: int = 0  # added to every stored value (series with distinct pixel data)
    header: Mapping[str, object] = field(default_factory=dict)  # attributes set last (keyword: value)


def slice_positions(spec: SeriesSpec) -> list[np.ndarray]:
    if spec.positions is not None:
        return [np.asarray(p, dtype=float) for p in spec.positions]
    iop = np.asarray(spec.iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return [np.asarray(spec.origin, dtype=float) + k * spec.slice_step * normal for k in range(spec.n_slices)]


def write_series(out_dir: Path, spec: SeriesSpec, *, study_uid: str, frame_uid: str,
                 order: Sequence[int] | None = None) -> list[Path]:
    """Write one series as classic single-frame files; returns the paths (in slice order)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    positions = slice_positions(spec)
    values = stored_values(len(positions), spec.rows, spec.cols)
    paths = []
    for k, pos in enumerate(positions):
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(prefix=ROOT)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = spec.series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Test^Ingestion"
        ds.PatientID = "ING-0001"
        ds.Modality = "MR"
        ds.SeriesNumber = spec.series_number
        ds.InstanceNumber = (order[k] if order is not None else k) + 1
        ds.SeriesDescription = spec.description
        if spec.protocol_name is not None:
            ds.ProtocolName = spec.protocol_name
        ds.ImageType = spec.image_type.split("\\")
        ds.ScanningSequence = spec.scanning_sequence.split("\\")
        ds.SequenceVariant = spec.sequence_variant.split("\\")
        ds.ScanOptions = spec.scan_options.split("\\")
        ds.MRAcquisitionType = spec.acquisition_type
        if spec.tr is not None:
            ds.RepetitionTime = spec.tr
        te = spec.echo_times[k] if spec.echo_times is not None else spec.te
        if te is not None:
            ds.EchoTime = te
        if spec.ti is not None:
            ds.InversionTime = spec.ti
        if spec.contrast_agent:
            ds.ContrastBolusAgent = spec.contrast_agent
        if spec.b_values is not None:
            ds.DiffusionBValue = spec.b_values[k % len(spec.b_values)]
        ds.SliceThickness = spec.slice_thickness
        ds.SpacingBetweenSlices = spec.slice_step
        ds.PixelSpacing = list(spec.pixel_spacing)
        iop = spec.orientations[k] if spec.orientations is not None else spec.iop
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.Rows, ds.Columns = spec.rows, spec.cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = spec.slope
        ds.RescaleIntercept = spec.intercept
        ds.PixelData = (values[k] + spec.value_offset).astype(np.uint16).tobytes()
        for keyword, value in spec.header.items():
            setattr(ds, keyword, value)
        path = out_dir / f"{spec.series_number:03d}_{ds.InstanceNumber:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def t2_spec(**kw: object) -> SeriesSpec:
    return SeriesSpec(**kw)  # type: ignore[arg-type]


def flair_spec(**kw: object) -> SeriesSpec:
    base = dict(description="t2_tirm_tra_dark-fluid", series_number=3, rows=10, cols=10, pixel_spacing=(0.7, 0.7),
                tr=9000.0, te=132.0, ti=2500.0, scanning_sequence="SE\\IR", sequence_variant="SK\\SP\\MP\\OSP",
                scan_options="IR")
    base.update(kw)
    return SeriesSpec(**base)  # type: ignore[arg-type]


def t1_spec(**kw: object) -> SeriesSpec:
    base = dict(description="t1_mprage_sag", series_number=4, tr=2000.0, te=2.3, ti=900.0, scanning_sequence="GR\\IR",
                sequence_variant="SP\\MP", scan_options="IR", acquisition_type="3D", iop=(0, 1, 0, 0, 0, -1),
                slice_step=1.0, n_slices=16)
    base.update(kw)
    return SeriesSpec(**base)  # type: ignore[arg-type]


def dwi_spec(**kw: object) -> SeriesSpec:
    base = dict(description="ep2d_diff_tra", series_number=5, tr=5000.0, te=80.0, scanning_sequence="EP",
                sequence_variant="SK\\SP", scan_options="FS", b_values=(1000.0,), n_slices=12)
    base.update(kw)
    return SeriesSpec(**base)  # type: ignore[arg-type]


def localizer_spec(**kw: object) -> SeriesSpec:
    base = dict(description="localizer", series_number=1, tr=8.6, te=4.0, scanning_sequence="GR",
                sequence_variant="SP", scan_options="", n_slices=3, image_type="ORIGINAL\\PRIMARY\\M\\ND",
                positions=[(0, 0, 0), (0, 0, 0), (0, 0, 0)],
                orientations=[(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1)])
    base.update(kw)
    return SeriesSpec(**base)  # type: ignore[arg-type]


def write_study(out_dir: Path, specs: Sequence[SeriesSpec]) -> dict[str, list[Path]]:
    """Write several series of one study (each in a sub-folder); returns paths by description."""
    study_uid = generate_uid(prefix=ROOT)
    frame_uid = generate_uid(prefix=ROOT)
    return {f"{s.series_number}:{s.description}": write_series(out_dir / f"s{s.series_number:03d}", s,
                                                               study_uid=study_uid, frame_uid=frame_uid)
            for s in specs}
