"""FLAIR3 as a derived MR series in the source study, for radiologists to view.

The series is classic single-frame MR Image Storage, one instance per FLAIR
slice, on the FLAIR series' exact grid (ImagePositionPatient per slice,
ImageOrientationPatient, PixelSpacing and Frame of Reference of the FLAIR).
Classic single-frame is chosen over Enhanced or Legacy Converted Enhanced MR
because every PACS viewer displays it and hangs it beside the source FLAIR;
multi-frame MR is still handled unevenly by viewers and routers.

Each instance is marked DERIVED\\SECONDARY, carries a Derivation Description
and Derivation Code Sequence (pixel-by-pixel multiplication, spatial
resampling, masking) and a Source Image Sequence naming the FLAIR instance of
the same slice and the T2 instances whose slabs the registered T2 slice was
resampled from. The T2 acquisition timing attributes are left empty so that a
series-selection stage never mistakes FLAIR3 for an acquired FLAIR.

Pixel values are FLAIR3 (in [0, 1] inside the brain) times
:data:`PIXEL_SCALE`, stored as unsigned 16-bit integers, and 0 outside the
brain mask; only the slices that contain brain are written (the series starts
and ends with brain, never with scalp or neck). The window is set from the
1st-99th percentile of brain voxels.

FLAIR3 is computed from two acquisitions (FLAIR, an inversion-recovery spin
echo, and T2, a spin echo), so no single acquisition's Scanning Sequence
describes it: the series says ``RM`` (research mode) with Sequence Variant
``NONE`` and leaves Inversion, Repetition and Echo Time empty, rather than
copying the FLAIR's Scanning Sequence (SE and IR) without its Inversion Time (an error for
dciodvfy) or with it (untrue of the derived image).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from operators.datatypes import Preprocessed, Role, SelectedSeries
from operators.errors import OutputError
from operators.output_common import code_item, copy_patient_study

logger = logging.getLogger(__name__)

PIXEL_SCALE = 1000.0
DEFAULT_FLAIR3_SERIES_NUMBER = 9002
SERIES_DESCRIPTION = "FLAIR3 derived (research use only)"
DERIVATION_DESCRIPTION = (
    "FLAIR3 = FLAIR^1.55 x T2^1.45, voxel-wise on brain-extracted images min-max "
    "normalised to [0,1]; T2 rigidly registered into FLAIR space. Pixel value = "
    "FLAIR3 x 1000. Research use only. Not for diagnosis.")

# Series/acquisition context copied from the source FLAIR (patient and study
# modules come from operators.output_common).
_COPIED = (
    "BodyPartExamined", "PatientPosition", "FrameOfReferenceUID", "PositionReferenceIndicator",
    "MRAcquisitionType", "MagneticFieldStrength", "SliceThickness", "SpacingBetweenSlices",
    "ImagedNucleus",
)
_EMPTY_TYPE2 = ("ScanOptions", "RepetitionTime", "EchoTime", "EchoTrainLength")


@dataclass(frozen=True)
class _SourceSlice:
    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None
    position: np.ndarray
    normal_offset: float


def _source_slices(datasets: Sequence[Dataset], normal: np.ndarray) -> list[_SourceSlice]:
    """Every slice of a series (single- or multi-frame) with its position."""
    slices = []
    for ds in datasets:
        if "PerFrameFunctionalGroupsSequence" in ds:
            for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
                position = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
                slices.append(_SourceSlice(ds.SOPClassUID, ds.SOPInstanceUID, index, position,
                                           float(position @ normal)))
        elif "ImagePositionPatient" in ds:
            position = np.array(ds.ImagePositionPatient, float)
            slices.append(_SourceSlice(ds.SOPClassUID, ds.SOPInstanceUID, None, position,
                                       float(position @ normal)))
    return slices


def _orientation(datasets: Sequence[Dataset]) -> np.ndarray:
    ds = datasets[0]
    if "ImageOrientationPatient" in ds:
        return np.array(ds.ImageOrientationPatient, float)
    shared = ds.SharedFunctionalGroupsSequence[0]
    return np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)


def _reference(source: _SourceSlice) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.sop_class_uid
    item.ReferencedSOPInstanceUID = source.sop_instance_uid
    if source.frame_number is not None:
        item.ReferencedFrameNumber = source.frame_number
    item.PurposeOfReferenceCodeSequence = [
        code_item("121322", "DCM", "Source image for image processing operation")]
    return item


def _t2_sources_for_slice(corners_flair: np.ndarray, t2_to_flair: sitk.Transform,
                          t2_slices: list[_SourceSlice], t2_normal: np.ndarray,
                          half_thickness: float) -> list[_SourceSlice]:
    """T2 slices whose slab intersects the FLAIR slice mapped into T2 space."""
    mapped = np.array([t2_to_flair.TransformPoint(tuple(float(v) for v in p)) for p in corners_flair])
    offsets = mapped @ t2_normal
    low, high = offsets.min() - half_thickness, offsets.max() + half_thickness
    return [s for s in t2_slices if low <= s.normal_offset <= high]


def _window(scaled: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    values = scaled[mask > 0] if mask is not None and mask.any() else scaled[scaled > 0]
    if values.size == 0:
        return PIXEL_SCALE / 2, PIXEL_SCALE
    low, high = np.percentile(values, [1, 99])
    width = max(float(high - low), 1.0)
    return float(low + high) / 2, width


def build_flair3_series(
    preprocessed: Preprocessed,
    selected_series: Sequence[SelectedSeries],
    *,
    series_number: int = DEFAULT_FLAIR3_SERIES_NUMBER,
    series_instance_uid: str | None = None,
    manufacturer: str = "tsc-epilepsy-outcome open-source project",
    software_version: str = "",
) -> list[Dataset]:
    """Build the FLAIR3 derived MR series, one classic MR instance per FLAIR slice.

    Args:
        preprocessed: Gives ``flair3`` (on the FLAIR grid), ``brain_mask`` and
            ``t2_to_flair`` (fixed = FLAIR, moving = T2).
        selected_series: The FLAIR series (patient/study module, geometry check,
            source references) and the T2 series (source references).
        series_number: Series Number of the new series.
        series_instance_uid: UID of the new series (generated when None).
        manufacturer: Manufacturer written into the new instances.
        software_version: Software Versions written into the new instances.

    Returns:
        The instances in slice order (file meta included), ready to save.

    Raises:
        OutputError: No FLAIR series, or FLAIR3 not on the FLAIR grid.
    """
    by_role = {s.role: s for s in selected_series}
    if Role.FLAIR not in by_role:
        raise OutputError("No FLAIR series given: FLAIR3 needs the FLAIR series' headers")
    flair_datasets = by_role[Role.FLAIR].datasets
    t2_datasets = by_role[Role.T2].datasets if Role.T2 in by_role else []
    image = preprocessed.flair3
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    normal = direction[:, 2]
    orientation = _orientation(flair_datasets)
    if not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-3):
        raise OutputError(
            f"FLAIR3 orientation differs from FLAIR series {by_role[Role.FLAIR].series_instance_uid}")
    flair_slices = _source_slices(flair_datasets, normal)
    t2_slices, t2_normal, t2_half = [], normal, 0.0
    if t2_datasets:
        t2_orientation = _orientation(t2_datasets)
        t2_normal = np.cross(t2_orientation[:3], t2_orientation[3:])
        t2_slices = _source_slices(t2_datasets, t2_normal)
        t2_half = float(t2_datasets[0].get("SliceThickness", 0) or 0) / 2

    array = sitk.GetArrayFromImage(image).astype(np.float64)
    scaled = np.clip(np.nan_to_num(array) * PIXEL_SCALE, 0, 65535).round().astype(np.uint16)
    mask = (sitk.GetArrayFromImage(preprocessed.brain_mask)
            if preprocessed.brain_mask is not None else None)
    if mask is not None:
        if mask.shape != scaled.shape:
            raise OutputError("FLAIR3 and the brain mask are not on one grid")
        scaled[mask == 0] = 0
        brain_slices = [k for k in range(scaled.shape[0]) if mask[k].any()]
    else:
        brain_slices = list(range(scaled.shape[0]))
    if not brain_slices:
        raise OutputError("The brain mask is empty: no FLAIR3 slice to write")
    center, width = _window(scaled, mask)
    spacing = image.GetSpacing()
    size = image.GetSize()
    series_uid = series_instance_uid or generate_uid()
    source = flair_datasets[0]
    now = datetime.now()
    derivation_codes = [
        code_item("113053", "DCM", "Pixel by pixel multiplication"),
        code_item("113085", "DCM", "Spatial resampling"),
        code_item("113047", "DCM", "Pixel by pixel mask"),
    ]

    instances = []
    for number, k in enumerate(brain_slices, start=1):
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k)), float)
        offset = float(position @ normal)
        if not flair_slices:
            raise OutputError("FLAIR series has no positioned slices")
        flair_match = min(flair_slices, key=lambda s: abs(s.normal_offset - offset))
        if abs(flair_match.normal_offset - offset) > max(spacing[2] / 2, 1e-3):
            raise OutputError(
                f"FLAIR3 slice {k} at {offset:.2f} mm matches no slice of FLAIR series "
                f"{by_role[Role.FLAIR].series_instance_uid}")
        corners = np.array([image.TransformIndexToPhysicalPoint((i, j, k))
                            for i in (0, size[0] - 1) for j in (0, size[1] - 1)], float)
        references = [_reference(flair_match)]
        if t2_slices:
            references += [_reference(s) for s in _t2_sources_for_slice(
                corners, preprocessed.t2_to_flair, t2_slices, t2_normal, t2_half)]

        ds = Dataset()
        copy_patient_study(source, ds)
        for keyword in _COPIED:
            if keyword in source:
                ds[keyword] = source[keyword]
        for keyword in _EMPTY_TYPE2:
            setattr(ds, keyword, None)
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = "MR"
        ds.Manufacturer = manufacturer
        if software_version:
            ds.SoftwareVersions = software_version
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = SERIES_DESCRIPTION
        ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.InstanceNumber = number
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER", "FLAIR3"]
        ds.DerivationDescription = DERIVATION_DESCRIPTION
        ds.DerivationCodeSequence = DicomSequence(derivation_codes)
        ds.SourceImageSequence = DicomSequence(references)
        ds.ImageComments = "Research use only. Not for diagnosis."
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in position]
        ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in
                                      np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [float(f"{spacing[1]:.6f}"), float(f"{spacing[0]:.6f}")]
        ds.SliceLocation = float(f"{offset:.6f}")
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size[1]
        ds.Columns = size[0]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = float(f"{center:.2f}")
        ds.WindowWidth = float(f"{width:.2f}")
        ds.WindowCenterWidthExplanation = "Brain 1st-99th percentile"
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        ds.PixelData = scaled[k].tobytes()

        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        instances.append(ds)
    logger.info("FLAIR3 series %s built: %d instances in study %s", series_uid, len(instances),
                source.get("StudyInstanceUID", "?"))
    return instances


def save_series(instances: Sequence[Dataset], output_folder: Path) -> list[Path]:
    """Write each instance as ``<SOPInstanceUID>.dcm`` under ``output_folder``."""
    output_folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in instances:
        path = output_folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
