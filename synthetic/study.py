"""Generate one synthetic study: DICOM input folder plus ground truth beside it.

Layout written under ``out_root/<sid>/``::

    input/DICOM/S<series number>/IM<instance>.dcm   what the app receives
    input/clinical.json                             tsc-clinical/1 record
    truth/brain_mask.nii.gz, truth/tuber_mask.nii.gz  uint8 on the FLAIR grid
    truth/t2_to_flair.tfm                            Euler3DTransform, fixed = FLAIR, moving = T2
    truth/truth.json                                 label, posterior, clinical, tubers, UIDs...

Geometry: the head frame is placed in the scanner by a pose for the FLAIR
acquisition (``x = R_F a + c``); between the two acquisitions the head moves
by a rigid transform ``T`` about the head centre ``c``, so the T2 anatomy is at
``T(x_F) = R (x_F - c) + c + d``. ``T`` maps a FLAIR physical point to the T2
physical point of the same anatomy, which is ITK's fixed-to-moving convention
with fixed = FLAIR and moving = T2. Both series stay axial on the scanner.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from . import __version__
from .dicom_writer import ENCODINGS, Frame, SeriesData, StudyContext, make_uid, write_series
from .phantom import MAX_NODULES, MAX_TUBERS, NODULE_BASE, TUBER_BASE, HeadPhantom, Tissue, is_tuber
from .protocols import DECOY_KINDS, DESCRIPTION_MODES, PROTOCOLS, series_description
from .render import (
    CONTRASTS,
    Pose,
    SeriesGrid,
    add_rician_noise,
    bias_field,
    contrast_lut,
    myelination,
    render_contrast,
    sample_labels,
)
from .subject import SubjectParams, draw_subject, posterior_uncontrolled

logger = logging.getLogger(__name__)

BRAIN_MASK_DEFINITION = (
    "inside the brain hull (cerebrum, cerebellum, brainstem): grey and white matter, deep grey "
    "nuclei, tubers, nodules, ventricles and sulcal CSF; excludes extra-axial CSF, skull, scalp; "
    "a FLAIR voxel is in the mask when at least half of its slab sub-samples are"
)
TRANSFORM_CONVENTION = (
    "ITK fixed=FLAIR, moving=T2: maps a physical point (LPS mm) of the FLAIR acquisition to the "
    "physical point of the same anatomy in the T2 acquisition"
)
AXIAL = np.eye(3)
SAGITTAL = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # rows A->P, cols S->I
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # rows R->L, cols S->I


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
    subject: SubjectParams | None = None
    t2_rescale: tuple[float, float] = (1.0, 0.0)
    flair_rescale: tuple[float, float] = (1.0, 0.0)
    slab_samples: int = 3
    noise_scale: float = 1.0
    bias_strength: float = 1.0
    t1_variant: str = "random"
    decoy_matrix_scale: float | None = None

    def decoy_kinds(self, rng: np.random.Generator) -> list[str]:
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


@dataclass
class GeneratedStudy:
    """What :func:`generate_study` wrote and the exact images behind it.

    Attributes:
        sid: Subject id (``SYN-<seed>``), also PatientID.
        input_dir / truth_dir: The two folders written.
        study_instance_uid: Study Instance UID.
        t2_series_uid / flair_series_uid: UIDs of the T2 and FLAIR series (None if not written).
        decoy_series_uids: Decoy kind -> Series Instance UID.
        subject: The subject parameters.
        t2_image / flair_image: float32 images with the exact pixel values (after rescale) and
            geometry written to DICOM (None if not written).
        brain_mask / tuber_mask: uint8 masks on the FLAIR grid.
        t2_to_flair: Euler3DTransform, fixed = FLAIR, moving = T2.
        posterior: Exact P(uncontrolled | observables) (all, clinical, imaging).
        encoding: The encoding used.
        files: Series Instance UID -> written files.
        series_kinds: Series Instance UID -> kind.
        clinical_path / truth_path: The JSON files written.
    """

    sid: str
    input_dir: Path
    truth_dir: Path
    study_instance_uid: str
    t2_series_uid: str | None
    flair_series_uid: str | None
    decoy_series_uids: dict[str, str]
    subject: SubjectParams
    t2_image: sitk.Image | None
    flair_image: sitk.Image | None
    brain_mask: sitk.Image
    tuber_mask: sitk.Image
    t2_to_flair: sitk.Euler3DTransform
    posterior: dict[str, float] = field(default_factory=dict)
    encoding: str = "classic"
    files: dict[str, list[Path]] = field(default_factory=dict)
    series_kinds: dict[str, str] = field(default_factory=dict)
    clinical_path: Path | None = None
    truth_path: Path | None = None

    @property
    def label(self) -> int:
        return self.subject.label


def subject_id(seed: int) -> str:
    """The subject id of a seed (``SYN-000123``)."""
    return f"SYN-{seed:06d}"


def _stream(seed: int, name: str) -> np.random.Generator:
    """Independent random stream per purpose, so options do not shift other draws."""
    return np.random.default_rng([seed, sum(ord(c) * 131**i for i, c in enumerate(name)) % (2**32)])


def _rotation_from_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _age_string(birth: dt.date, study: dt.date) -> str:
    days = (study - birth).days
    if days < 2 * 365:
        months = (study.year - birth.year) * 12 + study.month - birth.month - (study.day < birth.day)
        return f"{max(months, 0):03d}M"
    years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _to_stored(image: np.ndarray, rescale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Quantise output values to uint16 stored values; return (stored, exact output values)."""
    slope, intercept = rescale
    stored = np.clip(np.rint((image - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept))


def _window(values: np.ndarray) -> tuple[float, float]:
    """Window centre/width from the brighter part of the image (a strided subsample is enough)."""
    values = values.ravel()[::7]
    fg = values[values > np.percentile(values, 60)]
    if fg.size == 0:
        return 500.0, 1000.0
    lo, hi = np.percentile(fg, [1, 99.5])
    return round(float(lo + hi) / 2.0, 1), round(float(max(hi - lo, 1.0)), 1)


def _frames(grid: SeriesGrid, stored: np.ndarray, extra: dict[str, Any] | None = None) -> list[Frame]:
    orientation = grid.image_orientation()
    return [Frame(stored[k], grid.slice_position(k), orientation, dict(extra or {})) for k in range(grid.slices)]


class _Renderer:
    """Per-study rendering state: phantom, random streams, noise and bias."""

    def __init__(self, phantom: HeadPhantom, seed: int, options: StudyOptions) -> None:
        self.phantom = phantom
        self.seed = seed
        self.options = options

    def image(self, labels: np.ndarray, grid: SeriesGrid, contrast: str, stream: str,
              lut: np.ndarray | None = None) -> np.ndarray:
        rng = _stream(self.seed, stream)
        img = render_contrast(labels, contrast_lut(contrast, self.phantom) if lut is None else lut)
        if self.options.bias_strength > 0:
            img *= bias_field(grid, rng.normal(0.0, 0.12 * self.options.bias_strength, size=9))
        if self.options.noise_scale > 0:
            img = add_rician_noise(img, CONTRASTS[contrast]["noise"] * self.options.noise_scale, rng)
        return img


# Apparent diffusion coefficient per tissue (1e-3 mm^2/s) for the DWI decoy.
_ADC = {"scalp": 0.3, "skull": 0.5, "csf": 3.0, "gm": 0.85, "wm": 0.72, "wm_unmyelinated": 1.25,
        "deep_gm": 0.75, "soft": 1.2, "tuber": 1.05, "nodule": 0.8}


def _dwi_lut(phantom: HeadPhantom, b: float) -> np.ndarray:
    b0 = contrast_lut("DWI_B0", phantom)
    m = myelination(phantom.subject.age_at_imaging_months)
    adc = np.zeros(256, dtype=np.float32)
    adc[Tissue.SCALP], adc[Tissue.SKULL] = _ADC["scalp"], _ADC["skull"]
    adc[Tissue.CSF] = adc[Tissue.VENTRICLE] = _ADC["csf"]
    adc[Tissue.GM], adc[Tissue.DEEP_GM], adc[Tissue.SOFT_TISSUE] = _ADC["gm"], _ADC["deep_gm"], _ADC["soft"]
    adc[Tissue.WM] = m * _ADC["wm"] + (1 - m) * _ADC["wm_unmyelinated"]
    adc[TUBER_BASE:TUBER_BASE + MAX_TUBERS] = _ADC["tuber"]
    adc[NODULE_BASE:NODULE_BASE + MAX_NODULES] = _ADC["nodule"]
    return (b0 * np.exp(-b * 1e-3 * adc)).astype(np.float32)


def generate_study(out_root: Path, seed: int, options: StudyOptions | None = None) -> GeneratedStudy:
    """Generate one synthetic TSC study (DICOM + clinical.json) and its ground truth.

    Args:
        out_root: Folder under which ``<sid>/input`` and ``<sid>/truth`` are written
            (an existing ``<sid>`` folder is replaced).
        seed: Non-negative integer; everything is deterministic in it.
        options: What to generate (defaults: classic encoding, T2 + FLAIR + all decoys).

    Returns:
        The :class:`GeneratedStudy` with paths, UIDs, images, masks and the transform.

    Raises:
        ValueError: Negative seed or invalid options.
    """
    options = options or StudyOptions()
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if options.encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {options.encoding!r}; expected one of {ENCODINGS}")
    if options.descriptions not in DESCRIPTION_MODES:
        raise ValueError(f"unknown descriptions mode {options.descriptions!r}; expected one of {DESCRIPTION_MODES}")

    if options.encoding == "jpeg2000" and min(*options.t2_matrix, *options.flair_matrix) < 32:
        # OpenJPEG always uses 6 wavelet resolutions, which needs at least 32 pixels per side.
        raise ValueError("the jpeg2000 encoding needs T2 and FLAIR matrices of at least 32x32")
    sid = subject_id(seed)
    subject = options.subject or draw_subject(_stream(seed, "subject"))
    phantom = HeadPhantom(subject)
    renderer = _Renderer(phantom, seed, options)
    study_dir = Path(out_root) / sid
    if study_dir.exists():
        shutil.rmtree(study_dir)
    input_dir, truth_dir = study_dir / "input", study_dir / "truth"
    dicom_dir = input_dir / "DICOM"
    truth_dir.mkdir(parents=True)
    dicom_dir.mkdir(parents=True)

    # --- poses ----------------------------------------------------------------------------
    rng = _stream(seed, "pose")
    flair_rot = _rotation_from_axis_angle(_random_unit(rng), math.radians(rng.uniform(0.0, 3.0)))
    head_centre = np.array([rng.uniform(-5, 5), rng.uniform(-15, 5), rng.uniform(-10, 10)])
    rel = _rotation_from_axis_angle(_random_unit(rng), math.radians(rng.uniform(0.0, options.max_rotation_deg)))
    shift = _random_unit(rng) * rng.uniform(0.0, options.max_translation_mm)
    tfm = sitk.Euler3DTransform()
    tfm.SetCenter(tuple(float(v) for v in head_centre))
    tfm.SetMatrix(rel.ravel().tolist())
    tfm.SetTranslation(tuple(float(v) for v in shift))
    rel = np.array(tfm.GetMatrix()).reshape(3, 3)
    flair_pose = Pose(flair_rot, head_centre)
    t2_pose = Pose(rel @ flair_rot, head_centre + shift)

    # --- grids ----------------------------------------------------------------------------
    spacing = options.slice_thickness_mm + options.slice_gap_mm
    thick = options.slice_thickness_mm
    flair_grid = SeriesGrid.centred(
        head_centre + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-6, 6)]), AXIAL,
        options.flair_matrix[0], options.flair_matrix[1], options.slices, options.flair_pixel_mm, spacing, thick)
    t2_grid = SeriesGrid.centred(
        head_centre + shift + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-6, 6)]), AXIAL,
        options.t2_matrix[0], options.t2_matrix[1], options.slices, options.t2_pixel_mm, spacing, thick)

    # --- study context ---------------------------------------------------------------------
    srng = _stream(seed, "study")
    study_date = dt.date(2014, 1, 1) + dt.timedelta(days=int(srng.integers(0, 3650)))
    start = dt.datetime.combine(study_date, dt.time(8, 0)) + dt.timedelta(minutes=int(srng.integers(0, 600)))
    birth = study_date - dt.timedelta(days=subject.age_at_imaging_days)
    entropy = f"tsc-synth/{seed}"
    accession = f"A{int(srng.integers(10**7, 10**8))}"
    name = options.patient_name if options.patient_name is not None else f"Synthetic^Subject{seed:06d}"
    descriptions_rng = _stream(seed, "descriptions")
    t1_variant = options.t1_variant
    if t1_variant == "random":
        t1_variant = "3d" if srng.random() < 0.5 else "2d"

    kinds = []
    if options.include_t2:
        kinds.append("t2")
    if options.include_flair:
        kinds.append("flair")
    decoys = options.decoy_kinds(_stream(seed, "decoys"))
    acquired = [k for k in kinds + decoys if k not in ("localizer", "flair_derived")]
    order = list(srng.permutation(len(acquired)))
    numbers: dict[str, int] = {}
    if "localizer" in decoys:
        numbers["localizer"] = 1
    for rank, i in enumerate(order):
        numbers[acquired[i]] = rank + 2
    if "flair_derived" in decoys:
        numbers["flair_derived"] = 100 + numbers.get("flair", 3)
    descriptions = {k: series_description(k, options.descriptions, descriptions_rng, t1_variant)
                    for k in ("t2", "flair", "localizer", "t1", "flair_derived", "dwi")}
    texts = [name] + list(descriptions.values())
    ctx = StudyContext(
        patient_name=name, patient_id=sid, birth_date=birth.strftime("%Y%m%d"),
        sex="M" if subject.male else "F", age=_age_string(birth, study_date),
        study_uid=make_uid(entropy, "study"), study_date=study_date.strftime("%Y%m%d"),
        study_time=start.strftime("%H%M%S"), accession_number=accession, study_id=str(int(srng.integers(1000, 9999))),
        study_description="MRI BRAIN WITHOUT CONTRAST", referring_physician="Referrer^Synthetic",
        frame_of_reference_uid=make_uid(entropy, "frame-of-reference"), uid_entropy=entropy,
        character_set="ISO_IR 192" if any(not t.isascii() for t in texts) else "ISO_IR 100",
    )

    def series_time(kind: str) -> str:
        return (start + dt.timedelta(minutes=3 * numbers.get(kind, 1))).strftime("%H%M%S")

    def series_data(kind: str, protocol_key: str, frames: list[Frame], pixel_mm: tuple[float, float],
                    thickness: float, between: float | None, rescale: tuple[float, float],
                    window: tuple[float, float], contrast: str) -> SeriesData:
        p = PROTOCOLS[protocol_key]
        return SeriesData(
            kind=kind, series_uid=make_uid(entropy, "series", kind), series_number=numbers[kind],
            description=descriptions[kind], image_type=p.image_type, attributes=dict(p.attributes),
            frames=frames, pixel_spacing=(pixel_mm[1], pixel_mm[0]), thickness_mm=thickness,
            spacing_between_slices_mm=between, rescale=rescale, window=window,
            series_time=series_time(kind), contrast=contrast)

    written: dict[str, SeriesData] = {}

    # --- FLAIR (always rendered: the truth lives on its grid) --------------------------------
    labels, in_brain = sample_labels(phantom, flair_grid, flair_pose, options.slab_samples)
    half = options.slab_samples / 2.0
    brain_mask = flair_grid.to_sitk((in_brain.sum(axis=1) >= half).astype(np.uint8))
    tuber_mask = flair_grid.to_sitk((is_tuber(labels).sum(axis=1) >= half).astype(np.uint8))
    flair_values = renderer.image(labels, flair_grid, "FLAIR", "noise-flair")
    flair_stored, flair_out = _to_stored(flair_values, options.flair_rescale)
    flair_window = _window(flair_out)
    flair_image = None
    if options.include_flair:
        written["flair"] = series_data("flair", "flair", _frames(flair_grid, flair_stored), flair_grid.pixel_mm,
                                       thick, spacing, options.flair_rescale, flair_window, "FLAIR")
        flair_image = flair_grid.to_sitk(flair_out)
    if "flair_derived" in decoys:
        # An ROI/key-image export: same pixels and geometry, DERIVED, stored with slope 0.5.
        derived_stored, _ = _to_stored(flair_out, (0.5, 0.0))
        sd = series_data("flair_derived", "flair", _frames(flair_grid, derived_stored), flair_grid.pixel_mm,
                         thick, spacing, (0.5, 0.0), flair_window, "FLAIR")
        sd.image_type = PROTOCOLS["flair_derived"].image_type
        written["flair_derived"] = sd
    del labels, in_brain

    # --- T2 ------------------------------------------------------------------------------------
    t2_image = None
    if options.include_t2:
        labels, _ = sample_labels(phantom, t2_grid, t2_pose, options.slab_samples)
        t2_stored, t2_out = _to_stored(renderer.image(labels, t2_grid, "T2", "noise-t2"), options.t2_rescale)
        del labels
        written["t2"] = series_data("t2", "t2", _frames(t2_grid, t2_stored), t2_grid.pixel_mm, thick, spacing,
                                    options.t2_rescale, _window(t2_out), "T2")
        t2_image = t2_grid.to_sitk(t2_out)

    # --- decoys -------------------------------------------------------------------------------
    drng = _stream(seed, "decoy-geometry")
    scale = options.decoy_matrix_scale
    if scale is None:
        scale = min(1.0, options.flair_matrix[0] / 320.0)

    def scaled(n: int) -> int:
        """Decoy matrix size (the field of view is kept; pixels grow when scaled down)."""
        return max(32, int(round(n * scale)))
    if "localizer" in decoys:
        frames = []
        for plane in (SAGITTAL, CORONAL, AXIAL):
            n = scaled(256)
            g = SeriesGrid.centred(head_centre + drng.uniform(-5, 5, size=3), plane, n, n, 1, 256.0 / n, 7.0, 7.0)
            labels, _ = sample_labels(phantom, g, flair_pose, 1)
            stored, _ = _to_stored(renderer.image(labels, g, "LOCALIZER", f"noise-loc-{len(frames)}"), (1.0, 0.0))
            frames += _frames(g, stored)
        written["localizer"] = series_data("localizer", "localizer", frames, (1.0, 1.0), 7.0, None, (1.0, 0.0),
                                           (600.0, 1200.0), "LOCALIZER")
    if "t1" in decoys:
        if t1_variant == "3d":
            n, nz = scaled(144), scaled(96)
            g = SeriesGrid.centred(head_centre + drng.uniform(-3, 3, size=3), SAGITTAL, n, n, nz, 230.4 / n,
                                   153.6 / nz, 153.6 / nz)
            key = "t1_3d"
        else:
            n = scaled(256)
            g = SeriesGrid.centred(flair_grid.centre(), AXIAL, n, n, options.slices, 230.4 / n, spacing, thick)
            key = "t1_2d"
        labels, _ = sample_labels(phantom, g, flair_pose, 1)
        stored, out = _to_stored(renderer.image(labels, g, "T1", "noise-t1"), (1.0, 0.0))
        written["t1"] = series_data("t1", key, _frames(g, stored), g.pixel_mm, g.thickness_mm,
                                    g.slice_spacing_mm, (1.0, 0.0), _window(out), "T1")
    if "dwi" in decoys:
        n = scaled(128)
        g = SeriesGrid.centred(head_centre + drng.uniform(-3, 3, size=3), AXIAL, n, n, options.slices, 230.4 / n,
                               spacing, thick)
        labels, _ = sample_labels(phantom, g, flair_pose, 1)
        frames = []
        for b in (0.0, 500.0, 1000.0):
            lut = _dwi_lut(phantom, b)
            stored, _ = _to_stored(renderer.image(labels, g, "DWI_B0" if b == 0 else "DWI_B1000",
                                                  f"noise-dwi-{int(b)}", lut), (1.0, 0.0))
            extra = {"DiffusionBValue": b, "SequenceName": "*ep_b0" if b == 0 else f"*ep_b{int(b)}t"}
            frames += _frames(g, stored, extra)
        written["dwi"] = series_data("dwi", "dwi", frames, g.pixel_mm, thick, spacing, (1.0, 0.0),
                                     (400.0, 800.0), "DIFFUSION")

    # --- write ------------------------------------------------------------------------------------
    files: dict[str, list[Path]] = {}
    for kind, sd in sorted(written.items(), key=lambda kv: kv[1].series_number):
        files[sd.series_uid] = write_series(dicom_dir / f"S{sd.series_number:04d}", ctx, sd, options.encoding)

    clinical = {
        "format": "tsc-clinical/1",
        "accession_number": accession,
        "age_at_seizure_onset_months": subject.age_at_onset_months,
        "infantile_spasms": subject.infantile_spasms,
        "asm_count_ge_3": subject.asm_count_ge_3,
    }
    clinical_path = input_dir / "clinical.json"
    clinical_path.write_text(json.dumps(clinical, indent=2) + "\n", encoding="utf-8")

    sitk.WriteImage(brain_mask, str(truth_dir / "brain_mask.nii.gz"), useCompression=True)
    sitk.WriteImage(tuber_mask, str(truth_dir / "tuber_mask.nii.gz"), useCompression=True)
    sitk.WriteTransform(tfm, str(truth_dir / "t2_to_flair.tfm"))

    posterior = {use: round(posterior_uncontrolled(subject, use=use), 6) for use in ("all", "clinical", "imaging")}
    centres_head = phantom.tuber_centres()
    truth = {
        "generator": "tsc-synth", "generator_version": __version__, "seed": seed, "sid": sid,
        "label": subject.label, "label_meaning": "1 = uncontrolled at one year (positive class), 0 = controlled",
        "posterior_uncontrolled": posterior,
        "clinical": {**clinical, "age_at_imaging_months": round(subject.age_at_imaging_months, 4),
                     "age_at_imaging_days": subject.age_at_imaging_days, "sex": ctx.sex},
        "burden": subject.burden(),
        "subject": subject.to_dict(),
        "tubers": [
            {"index": i, "lobe": t.lobe, "hemisphere": t.hemisphere,
             "radius_mm": round(float(r), 3), "elongation": t.elongation,
             "centre_head_mm": [round(float(v), 4) for v in c],
             "centre_flair_mm": [round(float(v), 4) for v in flair_pose.to_scanner(c)],
             "centre_t2_mm": [round(float(v), 4) for v in t2_pose.to_scanner(c)]}
            for i, (t, c, r) in enumerate(zip(subject.tubers, centres_head, phantom.tuber_radii()))
        ],
        "transform": {
            "file": "t2_to_flair.tfm", "type": "Euler3DTransform", "convention": TRANSFORM_CONVENTION,
            "center_mm": list(tfm.GetCenter()), "angles_rad": [tfm.GetAngleX(), tfm.GetAngleY(), tfm.GetAngleZ()],
            "translation_mm": list(tfm.GetTranslation()), "matrix": list(tfm.GetMatrix()),
            "rotation_deg": round(math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(rel) - 1) / 2)))), 4),
            "translation_norm_mm": round(float(np.linalg.norm(shift)), 4),
        },
        "brain_mask": {"file": "brain_mask.nii.gz", "grid": "FLAIR", "definition": BRAIN_MASK_DEFINITION,
                       "volume_ml": round(float(np.count_nonzero(sitk.GetArrayViewFromImage(brain_mask)))
                                          * float(np.prod(flair_grid.spacing())) / 1000.0, 2)},
        "tuber_mask": {"file": "tuber_mask.nii.gz", "grid": "FLAIR"},
        "study_instance_uid": ctx.study_uid,
        "frame_of_reference_uid": ctx.frame_of_reference_uid,
        "series": {kind: {"uid": sd.series_uid, "number": sd.series_number, "description": sd.description,
                          "files": len(files[sd.series_uid])} for kind, sd in written.items()},
        "encoding": options.encoding,
        "options": {k: v for k, v in asdict(options).items() if k not in ("subject", "patient_name")},
    }
    truth_path = truth_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2, default=_json_default) + "\n", encoding="utf-8")
    logger.info("generated study %s: %d series, encoding %s", ctx.study_uid, len(written), options.encoding)

    return GeneratedStudy(
        sid=sid, input_dir=input_dir, truth_dir=truth_dir, study_instance_uid=ctx.study_uid,
        t2_series_uid=written["t2"].series_uid if "t2" in written else None,
        flair_series_uid=written["flair"].series_uid if "flair" in written else None,
        decoy_series_uids={k: sd.series_uid for k, sd in written.items() if k in DECOY_KINDS},
        subject=subject, t2_image=t2_image, flair_image=flair_image, brain_mask=brain_mask,
        tuber_mask=tuber_mask, t2_to_flair=tfm, posterior=posterior, encoding=options.encoding,
        files=files, series_kinds={sd.series_uid: k for k, sd in written.items()},
        clinical_path=clinical_path, truth_path=truth_path,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
