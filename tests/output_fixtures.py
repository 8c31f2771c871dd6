"""Small, constructed inputs for the output-stage tests (SR, FLAIR3 series, PDF).

MR series are built with pydicom (classic MR Image Storage, a few small slices)
so the tests do not depend on the synthetic-study generator; the preprocessed
images are SimpleITK images on the FLAIR series' grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from operators.datatypes import (
    MemberResult,
    Prediction,
    Preprocessed,
    QualityFlag,
    Role,
    SelectedSeries,
    SelectionExplanation,
)

NON_ASCII_NAME = "Müller^Jürgen=山田^太郎"


def shared_data_dir() -> Path:
    """The shared data folder (TSC_SHARED_DIR, else ../shared beside the repo)."""
    env = os.environ.get("TSC_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared"


@dataclass
class StudyHeader:
    patient_name: str = "Test^Patient"
    patient_id: str = "TSC-TEST-001"
    character_set: str = "ISO_IR 192"
    study_uid: str = ""
    frame_of_reference_uid: str = ""

    def __post_init__(self) -> None:
        self.study_uid = self.study_uid or generate_uid()
        self.frame_of_reference_uid = self.frame_of_reference_uid or generate_uid()


def make_mr_series(study: StudyHeader, role: Role, *, slices: int = 4, rows: int = 32,
                   columns: int = 28, pixel_mm: float = 0.7, series_number: int = 3,
                   seed: int = 0) -> list[Dataset]:
    """A small axial classic MR series, slices 6 mm apart, with random 12-bit pixels."""
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    datasets = []
    for index in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SpecificCharacterSet = study.character_set
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "Skyra"
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = "20200102"
        ds.PatientSex = "F"
        ds.PatientAge = "004Y"
        ds.StudyInstanceUID = study.study_uid
        ds.StudyID = "1"
        ds.StudyDate = "20240105"
        ds.StudyTime = "101010"
        ds.AccessionNumber = "ACC001"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MRI BRAIN WITHOUT CONTRAST"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "t2_tse_tra" if role is Role.T2 else "t2_tirm_tra_dark-fluid"
        ds.BodyPartExamined = "BRAIN"
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = index + 1
        ds.ScanningSequence = ["SE", "IR"] if role is Role.FLAIR else ["SE"]
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 9000 if role is Role.FLAIR else 2790
        ds.EchoTime = 132 if role is Role.FLAIR else 93
        if role is Role.FLAIR:
            ds.InversionTime = 2500
        ds.EchoTrainLength = 16
        ds.MagneticFieldStrength = 3
        ds.SliceThickness = 5
        ds.SpacingBetweenSlices = 6
        ds.ImagePositionPatient = [-columns * pixel_mm / 2, -rows * pixel_mm / 2, -9.0 + 6.0 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4096, (rows, columns), dtype=np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def make_selected(study: StudyHeader, **kwargs) -> list[SelectedSeries]:
    """T2 (series 3) and FLAIR (series 5) selected series for ``study``."""
    selected = []
    for role, number in ((Role.T2, 3), (Role.FLAIR, 5)):
        datasets = make_mr_series(study, role, series_number=number, seed=number, **kwargs)
        selected.append(SelectedSeries(
            role=role, series_instance_uid=datasets[0].SeriesInstanceUID, datasets=datasets,
            files=[Path(f"{d.SOPInstanceUID}.dcm") for d in datasets],
            explanation=SelectionExplanation(role=role, rule="test", deciding_attributes={})))
    return selected


def make_prediction(*, synthetic: bool = True, fused: float = 0.7134, left_out: bool = True
                    ) -> Prediction:
    """A WAE-Net-like prediction; the clinical member is left out when ``left_out``."""
    members = [
        MemberResult("T2-ResNet3D", True, (0.61, 0.65, 0.58), 0.6133, None, 1 / 3, 0.25,
                     "t2@wae", "resnet3d-34", "platt slope 1.2 intercept 0.1"),
        MemberResult("FLAIR-ResNet3D", True, (0.80, 0.77, 0.83), 0.80, None, 1 / 3),
        MemberResult("FLAIR3-ResNet3D", True, (0.71, 0.74, 0.70), 0.7167, None, 1 / 3),
    ]
    if left_out:
        members.append(MemberResult("Clinical-FCNN", False, (), None,
                                    "clinical.json missing age_at_seizure_onset_months", 0.0))
    else:
        members.append(MemberResult("Clinical-FCNN", True, (0.9,), 0.9, None, 0.25))
    return Prediction(
        ensemble="WAE-Net", members=members, fused_score=fused, threshold=0.5,
        predicted_uncontrolled=fused >= 0.5, agreement={"member_sd": 0.0769, "member_range": 0.1867, "member_weight_agreeing": 1.0,
                   "fold_sd_max": 0.0249},
        weights_renormalised=left_out, model_set_version="demo-0.1.0",
        model_set_synthetic=synthetic)


def flair_grid_image(selected: list[SelectedSeries]) -> sitk.Image:
    """A float32 image on the FLAIR series' grid (geometry from the headers)."""
    flair = next(s for s in selected if s.role is Role.FLAIR).datasets
    first = flair[0]
    array = np.stack([np.frombuffer(d.PixelData, dtype=np.uint16).reshape(d.Rows, d.Columns)
                      for d in flair]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), 6.0))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    return image


def make_preprocessed(selected: list[SelectedSeries]) -> Preprocessed:
    """Preprocessed outputs on the FLAIR grid: an ellipsoid brain and a smooth FLAIR3."""
    flair = flair_grid_image(selected)
    size = flair.GetSize()
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (size[2], size[1], size[0])),
                          indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.8) ** 2 + (z / 1.2) ** 2 <= 1.0
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(flair)
    smooth = np.clip(1.0 - (x ** 2 + y ** 2), 0, 1).astype(np.float32) * inside
    flair3 = sitk.GetImageFromArray(smooth)
    flair3.CopyInformation(flair)
    t2 = sitk.GetImageFromArray(sitk.GetArrayFromImage(flair)[::-1].copy())
    t2.CopyInformation(flair)
    return Preprocessed(
        flair=flair, t2_in_flair=t2, brain_mask=mask, flair_norm=flair3, t2_norm=flair3,
        flair3=flair3, t2_to_flair=sitk.Euler3DTransform(), registration_metric=-0.4123,
        brain_volume_ml=1123.4, brain_extraction_method="hd-bet",
        flags=[QualityFlag("REGISTRATION_METRIC_OK", "Mattes MI -0.41 within range", "info", -0.4123),
               QualityFlag("THICK_SLICES", "FLAIR slices 5 mm thick; 1 mm gap", "warning", 5.0)])


def synthetic_inputs(out_root: Path, seed: int, *, patient_name: str = NON_ASCII_NAME,
                     slices: int = 12, full_size: bool = False):
    """A synthetic study (the project's generator) as output-stage inputs.

    Returns ``(generated_study, selected_series, preprocessed)``. The preprocessed
    images come from the generator's truth (T2 resampled through the true
    transform, truth brain mask), normalised and combined into FLAIR3 as the
    preprocessing stage does, so the outputs see realistic anatomy and headers.
    """
    import pydicom
    from synthetic import StudyOptions, generate_study

    small = {} if full_size else dict(slices=slices, t2_matrix=(192, 192), t2_pixel_mm=1.2,
                                      flair_matrix=(160, 160), flair_pixel_mm=1.4)
    study = generate_study(out_root, seed, StudyOptions(decoys=False, patient_name=patient_name,
                                                        **small))
    by_series: dict[str, list[tuple[Dataset, Path]]] = {}
    for path in sorted(study.input_dir.rglob("*")):
        if path.is_file() and path.suffix != ".json":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            by_series.setdefault(ds.SeriesInstanceUID, []).append((ds, path))
    selected = []
    for role, uid in ((Role.T2, study.t2_series_uid), (Role.FLAIR, study.flair_series_uid)):
        items = sorted(by_series[uid], key=lambda item: int(item[0].InstanceNumber))
        selected.append(SelectedSeries(
            role=role, series_instance_uid=uid, datasets=[d for d, _ in items],
            files=[p for _, p in items],
            explanation=SelectionExplanation(role=role, rule="generator truth",
                                             deciding_attributes={})))
    flair = study.flair_image
    t2 = sitk.Resample(study.t2_image, flair, study.t2_to_flair, sitk.sitkLinear, 0.0,
                       sitk.sitkFloat32)
    mask = sitk.GetArrayFromImage(study.brain_mask) > 0

    def normalised(image: sitk.Image) -> np.ndarray:
        array = sitk.GetArrayFromImage(image).astype(np.float64)
        low, high = array[mask].min(), array[mask].max()
        return np.where(mask, (array - low) / max(high - low, 1e-9), 0.0)

    flair_n, t2_n = normalised(flair), normalised(t2)

    def image(array: np.ndarray) -> sitk.Image:
        out = sitk.GetImageFromArray(array.astype(np.float32))
        out.CopyInformation(flair)
        return out

    preprocessed = Preprocessed(
        flair=flair, t2_in_flair=t2, brain_mask=study.brain_mask, flair_norm=image(flair_n),
        t2_norm=image(t2_n), flair3=image(flair_n ** 1.55 * t2_n ** 1.45),
        t2_to_flair=study.t2_to_flair, registration_metric=-0.5,
        brain_volume_ml=float(mask.sum() * np.prod(flair.GetSpacing()) / 1000.0),
        brain_extraction_method="generator-truth",
        flags=[QualityFlag("SYNTHETIC_TRUTH", "Brain mask and registration from generator truth",
                           "info")])
    return study, selected, preprocessed
