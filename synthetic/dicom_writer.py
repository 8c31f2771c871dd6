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
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
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
    procedure_code: tuple[str, str, str] | None = None
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
    if ctx.procedure_code is not None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = ctx.procedure_code
        ds.ProcedureCodeSequence = [code]
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


def bits_stored(series: SeriesData) -> int:
    """12 bits like most MR scanners when the values fit, else 16."""
    top = max(int(f.pixels.max(initial=0)) for f in series.frames)
    return 12 if top < 4096 else 16


def _pixel_module(ds: Dataset, rows: int, columns: int, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 16
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


def _encode_elements(ds: Dataset, encodings: list[str]) -> dict[int, bytes]:
    """Explicit VR Little Endian encoding of each element, keyed by tag."""
    out: dict[int, bytes] = {}
    for elem in ds:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem, encodings)
        out[int(elem.tag)] = fp.getvalue()
    return out


_LONG_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UC", "UN", "UR", "UT"}


def _element_bytes(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element (value already padded to even length)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _text(value: str, pad: bytes = b" ") -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _file_meta_bytes(sop_class: str, sop_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, DICM prefix and File Meta Information group."""
    body = b"".join([
        _element_bytes(0x00020001, "OB", b"\x00\x01"),
        _element_bytes(0x00020002, "UI", _text(sop_class, b"\x00")),
        _element_bytes(0x00020003, "UI", _text(sop_uid, b"\x00")),
        _element_bytes(0x00020010, "UI", _text(transfer_syntax, b"\x00")),
        _element_bytes(0x00020012, "UI", _text(PYDICOM_IMPLEMENTATION_UID, b"\x00")),
        _element_bytes(0x00020013, "SH", _text(IMPLEMENTATION_VERSION)),
    ])
    return b"\x00" * 128 + b"DICM" + _element_bytes(0x00020000, "UL", struct.pack("<I", len(body))) + body


def _series_template(ctx: StudyContext, series: SeriesData) -> Dataset:
    """The attributes every single-frame instance of a series shares."""
    ds = Dataset()
    ds.ImageType = list(series.image_type)
    ds.InstanceCreationDate = ctx.study_date
    ds.InstanceCreationTime = series.series_time
    ds.SOPClassUID = MR_IMAGE_STORAGE
    _common(ds, ctx, series)
    _classic_mr_attributes(ds, series)
    ds.PixelSpacing = [_ds_str(series.pixel_spacing[0]), _ds_str(series.pixel_spacing[1])]
    _set_rescale_and_window(ds, series)
    return ds


def write_classic_series(folder: Path, ctx: StudyContext, series: SeriesData,
                         transfer_syntax: UID = ExplicitVRLittleEndian) -> list[Path]:
    """Write one MR Image Storage file per frame.

    The shared attributes are encoded once per series and only the per-frame
    elements (UID, position, pixels...) per file: pydicom's generic writer spends
    most of its time re-validating and re-encoding identical elements.
    """
    encodings = convert_encodings(ctx.character_set)
    template = _series_template(ctx, series)
    first = series.frames[0].pixels
    _pixel_module(template, int(first.shape[0]), int(first.shape[1]), bits_stored(series))
    shared = _encode_elements(template, encodings)
    paths = []
    for n, frame in enumerate(series.frames, start=1):
        sop_uid = make_uid(ctx.uid_entropy, series.series_uid, "sop", n)
        elements = dict(shared)
        elements[0x00080018] = _element_bytes(0x00080018, "UI", _text(sop_uid, b"\x00"))
        elements[0x00200013] = _element_bytes(0x00200013, "IS", _text(str(n)))
        elements[0x00200032] = _element_bytes(0x00200032, "DS", _text("\\".join(_ds_str(v) for v in frame.position)))
        elements[0x00200037] = _element_bytes(0x00200037, "DS",
                                              _text("\\".join(_ds_str(v) for v in frame.orientation)))
        elements[0x00201041] = _element_bytes(0x00201041, "DS", _text(_ds_str(_slice_location(frame))))
        per_frame = Dataset()
        for key, value in frame.extra.items():
            setattr(per_frame, key, value)
        pixels = np.ascontiguousarray(frame.pixels, dtype="<u2")
        if transfer_syntax == ExplicitVRLittleEndian:
            elements[0x7FE00010] = _element_bytes(0x7FE00010, "OW", pixels.tobytes())
        else:
            _pixel_module(per_frame, int(pixels.shape[0]), int(pixels.shape[1]), int(template.BitsStored))
            per_frame.compress(transfer_syntax, pixels, generate_instance_uid=False)
            per_frame["PixelData"].is_undefined_length = True
            for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                            "BitsStored", "HighBit", "PixelRepresentation"):
                del per_frame[keyword]
        elements.update(_encode_elements(per_frame, encodings))
        path = folder / f"IM{n:04d}.dcm"
        path.write_bytes(_file_meta_bytes(MR_IMAGE_STORAGE, sop_uid, transfer_syntax)
                         + b"".join(elements[tag] for tag in sorted(elements)))
        paths.append(path)
    return paths


def write_series(folder: Path, ctx: StudyContext, series: SeriesData, encoding: str = "classic") -> list[Path]:
    """Write one series into ``folder`` (created) and return the file paths.

    Raises:
        ValueError: Unknown encoding.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if encoding == "classic":
        paths = write_classic_series(folder, ctx, series)
    elif encoding in _COMPRESSED:
        paths = write_classic_series(folder, ctx, series, _COMPRESSED[encoding])
    elif encoding == "enhanced":
        from .enhanced import enhanced_dataset

        path = folder / "IM0001.dcm"
        enhanced_dataset(ctx, series).save_as(path, enforce_file_format=True)
        paths = [path]
    else:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    logger.debug("wrote series %s (%d files, %s)", series.series_uid, len(paths), encoding)
    return paths
