"""Write synthetic MR series as DICOM: classic single-frame, Enhanced MR multi-frame, or compressed.

The writer receives fully described series (:class:`SeriesData`: identity,
acquisition attributes and a list of :class:`Frame` with exact geometry and
stored pixel values) and study-level context (:class:`StudyContext`), and
writes Part 10 files. Encodings:

* ``"classic"``: MR Image Storage, one file per frame, Explicit VR Little Endian.
* ``"enhanced"``: Enhanced MR Image Storage, one multi-frame file per series,
  geometry and acquisition parameters in functional groups.
* ``"jpeg2000"`` / ``"jpegls"`` / ``"rle"``: classic single-frame files with
  JPEG 2000 lossless (pylibjpeg-openjpeg), JPEG-LS lossless (pyjpegls) or RLE
  lossless pixel data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    ExplicitVRLittleEndian,
    RLELossless,
    UID,
    generate_uid,
)

logger = logging.getLogger(__name__)

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
ENHANCED_MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
ENCODINGS = ("classic", "enhanced", "jpeg2000", "jpegls", "rle")
_COMPRESSED = {"jpeg2000": JPEG2000Lossless, "jpegls": JPEGLSLossless, "rle": RLELossless}
IMPLEMENTATION_VERSION = "TSC_SYNTH_1"


@dataclass
class Frame:
    """One 2D image with its exact geometry.

    Attributes:
        pixels: Stored values, uint16 (rows, columns).
        position: ImagePositionPatient (LPS mm, centre of the first pixel).
        orientation: ImageOrientationPatient (row direction, column direction).
        extra: Per-frame attributes (e.g. ``DiffusionBValue``, ``SequenceName``).
    """

    pixels: np.ndarray
    position: np.ndarray
    orientation: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SeriesData:
    """One series ready to write.

    Attributes:
        kind: Series kind (``"t2"``, ``"flair"``, ``"dwi"``...), not written to the files.
        series_uid / series_number / description: Identity.
        image_type: ImageType values.
        attributes: Acquisition attributes (classic keywords).
        frames: Frames in acquisition order.
        pixel_spacing: (row spacing, column spacing) in mm, DICOM order.
        thickness_mm / spacing_between_slices_mm: Slice geometry.
        rescale: (slope, intercept) from stored values to output values.
        window: (centre, width) in output values.
        series_time: HHMMSS.
        sop_uids: One SOP Instance UID per file written (filled by the caller).
        contrast: Acquisition contrast word for Enhanced MR (T2, FLAIR, T1, DIFFUSION...).
    """

    kind: str
    series_uid: str
    series_number: int
    description: str
    image_type: tuple[str, ...]
    attributes: dict[str, Any]
    frames: list[Frame]
    pixel_spacing: tuple[float, float]
    thickness_mm: float
    spacing_between_slices_mm: float | None
    rescale: tuple[float, float]
    window: tuple[float, float]
    series_time: str
    contrast: str
    acquisition_number: int = 1


@dataclass
class StudyContext:
    """Patient, study and equipment attributes shared by every series of a study."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    frame_of_reference_uid: str
    uid_entropy: str
    institution: str = "Synthetic Children's Hospital"
    manufacturer: str = "SIEMENS"
    model: str = "Skyra"
    software: str = "syngo MR E11"
    station: str = "SYNMR01"
    device_serial: str = "990001"
    weight_kg: float | None = None
    character_set: str = "ISO_IR 100"


def make_uid(*parts: object) -> str:
    """Deterministic UID from the given parts (pydicom root, hashed entropy)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _common(ds: Dataset, ctx: StudyContext, series: SeriesData) -> None:
    """Patient, study, series, frame of reference and equipment modules."""
    ds.SpecificCharacterSet = ctx.character_set
    ds.StudyDate = ctx.study_date
    ds.SeriesDate = ctx.study_date
    ds.AcquisitionDate = ctx.study_date
    ds.ContentDate = ctx.study_date
    ds.StudyTime = ctx.study_time
    ds.SeriesTime = series.series_time
    ds.AcquisitionTime = series.series_time
    ds.ContentTime = series.series_time
    ds.AccessionNumber = ctx.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = ctx.manufacturer
    ds.InstitutionName = ctx.institution
    ds.ReferringPhysicianName = ctx.referring_physician
    ds.StationName = ctx.station
    ds.StudyDescription = ctx.study_description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = ctx.model
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    ds.PatientBirthDate = ctx.birth_date
    ds.PatientSex = ctx.sex
    ds.PatientAge = ctx.age
    if ctx.weight_kg is not None:
        ds.PatientWeight = f"{ctx.weight_kg:.1f}"
    ds.BodyPartExamined = "BRAIN"
    ds.DeviceSerialNumber = ctx.device_serial
    ds.SoftwareVersions = ctx.software
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = ctx.study_id
    ds.SeriesNumber = series.series_number
    ds.AcquisitionNumber = series.acquisition_number
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""


def _pixel_module(ds: Dataset, frames_pixels: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(frames_pixels.shape[-2]), int(frames_pixels.shape[-1])
    ds.BitsAllocated = 16
    bits = 12 if int(frames_pixels.max(initial=0)) < 4096 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0


def _ds_str(value: float) -> str:
    """A DS value of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{value:.9g}"
    return text


def _classic_mr_attributes(ds: Dataset, series: SeriesData) -> None:
    a = series.attributes
    for key in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName"):
        if key in a:
            setattr(ds, key, a[key])
    ds.SliceThickness = _ds_str(series.thickness_mm)
    for key in ("RepetitionTime", "EchoTime", "InversionTime", "NumberOfAverages"):
        if key in a:
            setattr(ds, key, _ds_str(float(a[key])))
    ds.ImagingFrequency = "123.2"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    if series.spacing_between_slices_mm is not None:
        ds.SpacingBetweenSlices = _ds_str(series.spacing_between_slices_mm)
    if "EchoTrainLength" in a:
        ds.EchoTrainLength = int(a["EchoTrainLength"])
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    if "PixelBandwidth" in a:
        ds.PixelBandwidth = _ds_str(float(a["PixelBandwidth"]))
    if "ProtocolName" in a:
        ds.ProtocolName = a["ProtocolName"]
    ds.TransmitCoilName = "Body"
    ds.ReceiveCoilName = "Head_32"
    ds.AcquisitionMatrix = [0, int(series.frames[0].pixels.shape[1]), int(series.frames[0].pixels.shape[0]), 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    if "FlipAngle" in a:
        ds.FlipAngle = _ds_str(float(a["FlipAngle"]))
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = "0.5"
    ds.dBdt = "0"


def _set_rescale_and_window(ds: Dataset, series: SeriesData) -> None:
    slope, intercept = series.rescale
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleIntercept = _ds_str(intercept)
        ds.RescaleSlope = _ds_str(slope)
        ds.RescaleType = "US"
    ds.WindowCenter = _ds_str(series.window[0])
    ds.WindowWidth = _ds_str(series.window[1])


def _slice_location(frame: Frame) -> float:
    row = np.asarray(frame.orientation[:3])
    col = np.asarray(frame.orientation[3:])
    return float(np.dot(np.cross(row, col), frame.position))


def classic_datasets(ctx: StudyContext, series: SeriesData, transfer_syntax: UID = ExplicitVRLittleEndian
                     ) -> list[Dataset]:
    """One MR Image Storage dataset per frame."""
    out = []
    for n, frame in enumerate(series.frames, start=1):
        sop_uid = make_uid(ctx.uid_entropy, series.series_uid, "sop", n)
        ds = Dataset()
        ds.file_meta = _file_meta(MR_IMAGE_STORAGE, sop_uid, transfer_syntax)
        ds.ImageType = list(series.image_type)
        ds.InstanceCreationDate = ctx.study_date
        ds.InstanceCreationTime = series.series_time
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        _common(ds, ctx, series)
        _classic_mr_attributes(ds, series)
        for key, value in frame.extra.items():
            setattr(ds, key, value)
        ds.InstanceNumber = n
        ds.ImagePositionPatient = [_ds_str(v) for v in frame.position]
        ds.ImageOrientationPatient = [_ds_str(v) for v in frame.orientation]
        ds.SliceLocation = _ds_str(_slice_location(frame))
        ds.PixelSpacing = [_ds_str(series.pixel_spacing[0]), _ds_str(series.pixel_spacing[1])]
        _pixel_module(ds, frame.pixels)
        _set_rescale_and_window(ds, series)
        ds.PixelData = np.ascontiguousarray(frame.pixels, dtype="<u2").tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, np.asarray(frame.pixels, dtype=np.uint16),
                        generate_instance_uid=False)
        out.append(ds)
    return out


def write_series(folder: Path, ctx: StudyContext, series: SeriesData, encoding: str = "classic") -> list[Path]:
    """Write one series into ``folder`` (created) and return the file paths.

    Raises:
        ValueError: Unknown encoding.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if encoding == "classic":
        datasets = classic_datasets(ctx, series)
    elif encoding in _COMPRESSED:
        datasets = classic_datasets(ctx, series, _COMPRESSED[encoding])
    elif encoding == "enhanced":
        from .enhanced import enhanced_dataset

        datasets = [enhanced_dataset(ctx, series)]
    else:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    paths = []
    for n, ds in enumerate(datasets, start=1):
        path = folder / f"IM{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote series %s (%d files, %s)", series.series_uid, len(paths), encoding)
    return paths
