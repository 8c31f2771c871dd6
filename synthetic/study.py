"""Generate one synthetic study: DICOM input folder plus ground truth beside it.

Layout written under ``out_root/<sid>/``::

    input/DICOM/S<series number>/IM<instance>.dcm   what the app receives
    input/clinical.json                             tsc-clinical/1 record
    truth/brain_mask.nii.gz, truth/tuber_mask.nii.gz  uint8 on the FLAIR grid
    truth/t2_to_flair.tfm                            Euler3DTransform, fixed = FLAIR, moving = T2
    truth/truth.json                                 label, posterior, clinical, tubers, UIDs...

Steps: draw the subject (:mod:`.subject`), plan poses and stacks
(:mod:`.acquisition`), render FLAIR (always: the truth lives on its grid), T2
and the decoys (:mod:`.decoys`) from the phantom (:mod:`.phantom`,
:mod:`.render`), write DICOM (:mod:`.dicom_writer`, :mod:`.enhanced`), then
``clinical.json`` and the truth (:mod:`.truth`). Every random draw comes from
a stream named by purpose, so options that add or remove series do not change
the subject, the geometry or the other series.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .acquisition import plan_acquisition
from .decoys import derived_flair_copy, render_decoys
from .dicom_writer import ENCODINGS, SeriesData, StudyContext, make_uid, write_series
from .options import StudyOptions
from .phantom import HeadPhantom, is_tuber
from .protocols import DECOY_KINDS, DESCRIPTION_MODES, SERIES_KINDS, series_description
from .render import sample_labels
from .series import SeriesFactory, SeriesRenderer, frames_of, to_stored, window
from .subject import SubjectParams, draw_subject, posterior_uncontrolled
from .truth import clinical_record, write_json, write_truth

logger = logging.getLogger(__name__)

__all__ = ["GeneratedStudy", "StudyOptions", "generate_study", "subject_id"]


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


def _age_string(birth: dt.date, study: dt.date) -> str:
    days = (study - birth).days
    if days < 2 * 365:
        months = (study.year - birth.year) * 12 + study.month - birth.month - (study.day < birth.day)
        return f"{max(months, 0):03d}M"
    years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _validate(seed: int, options: StudyOptions) -> None:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if options.encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {options.encoding!r}; expected one of {ENCODINGS}")
    if options.descriptions not in DESCRIPTION_MODES:
        raise ValueError(f"unknown descriptions mode {options.descriptions!r}; expected one of {DESCRIPTION_MODES}")
    if options.encoding == "jpeg2000" and min(*options.t2_matrix, *options.flair_matrix) < 32:
        # OpenJPEG always uses 6 wavelet resolutions, which needs at least 32 pixels per side.
        raise ValueError("the jpeg2000 encoding needs T2 and FLAIR matrices of at least 32x32")
    if not 0 < len(options.study_description) <= 64 or "\\" in options.study_description:
        raise ValueError(f"study_description must be 1-64 characters without a backslash (LO), "
                         f"got {options.study_description!r}")


def _series_numbers(kinds: list[str], rng: np.random.Generator) -> dict[str, int]:
    """Localizer first, acquired series in a random order, the derived copy numbered after the FLAIR."""
    acquired = [k for k in kinds if k not in ("localizer", "flair_derived")]
    numbers = {"localizer": 1} if "localizer" in kinds else {}
    for rank, i in enumerate(rng.permutation(len(acquired))):
        numbers[acquired[i]] = rank + 2
    if "flair_derived" in kinds:
        numbers["flair_derived"] = 100 + numbers.get("flair", 3)
    return numbers


def _study_context(seed: int, sid: str, subject: SubjectParams, options: StudyOptions,
                   descriptions: dict[str, str], rng: np.random.Generator) -> tuple[StudyContext, dt.datetime]:
    """Patient/study attributes and the study start time."""
    study_date = dt.date(2014, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3650)))
    start = dt.datetime.combine(study_date, dt.time(8, 0)) + dt.timedelta(minutes=int(rng.integers(0, 600)))
    birth = study_date - dt.timedelta(days=subject.age_at_imaging_days)
    entropy = f"tsc-synth/{seed}"
    accession = f"A{int(rng.integers(10**7, 10**8))}"
    name = options.patient_name if options.patient_name is not None else f"Synthetic^Subject{seed:06d}"
    texts = [name, options.study_description, *descriptions.values()]
    ctx = StudyContext(
        patient_name=name, patient_id=sid, birth_date=birth.strftime("%Y%m%d"),
        sex="M" if subject.male else "F", age=_age_string(birth, study_date),
        study_uid=make_uid(entropy, "study"), study_date=study_date.strftime("%Y%m%d"),
        study_time=start.strftime("%H%M%S"), accession_number=accession, study_id=str(int(rng.integers(1000, 9999))),
        study_description=options.study_description, procedure_code=options.procedure_code,
        referring_physician="Referrer^Synthetic",
        frame_of_reference_uid=make_uid(entropy, "frame-of-reference"), uid_entropy=entropy,
        character_set="ISO_IR 192" if any(not t.isascii() for t in texts) else "ISO_IR 100",
    )
    return ctx, start


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
    _validate(seed, options)
    sid = subject_id(seed)
    subject = options.subject or draw_subject(_stream(seed, "subject"))
    phantom = HeadPhantom(subject)
    renderer = SeriesRenderer(phantom, lambda name: _stream(seed, name), options.noise_scale, options.bias_strength)
    study_dir = Path(out_root) / sid
    if study_dir.exists():
        shutil.rmtree(study_dir)
    input_dir, truth_dir = study_dir / "input", study_dir / "truth"
    truth_dir.mkdir(parents=True)
    (input_dir / "DICOM").mkdir(parents=True)

    plan = plan_acquisition(_stream(seed, "pose"), options)
    order_rng = _stream(seed, "series-order")
    t1_variant = options.t1_variant
    if t1_variant == "random":
        t1_variant = "3d" if order_rng.random() < 0.5 else "2d"
    kinds = [k for k, on in (("t2", options.include_t2), ("flair", options.include_flair)) if on]
    decoys = options.decoy_kinds(_stream(seed, "decoys"))
    numbers = _series_numbers(kinds + decoys, order_rng)
    descriptions_rng = _stream(seed, "descriptions")
    descriptions = {k: series_description(k, options.descriptions, descriptions_rng, t1_variant)
                    for k in SERIES_KINDS}
    ctx, start = _study_context(seed, sid, subject, options, descriptions, _stream(seed, "study"))
    factory = SeriesFactory(ctx.uid_entropy, numbers, descriptions, start)
    written: dict[str, SeriesData] = {}

    # FLAIR is always rendered: the truth lives on its grid.
    grid, half = plan.flair_grid, options.slab_samples / 2.0
    labels, in_brain = sample_labels(phantom, grid, plan.flair_pose, options.slab_samples)
    brain_mask = grid.to_sitk((in_brain.sum(axis=1) >= half).astype(np.uint8))
    tuber_mask = grid.to_sitk((is_tuber(labels).sum(axis=1) >= half).astype(np.uint8))
    flair_stored, flair_values = to_stored(renderer.image(labels, grid, "FLAIR", "noise-flair"), options.flair_rescale)
    del labels, in_brain
    flair_window = window(flair_values)
    flair_image = None
    if options.include_flair:
        written["flair"] = factory.make("flair", "flair", frames_of(grid, flair_stored), grid.pixel_mm,
                                        grid.thickness_mm, grid.slice_spacing_mm, options.flair_rescale,
                                        flair_window, "FLAIR")
        flair_image = grid.to_sitk(flair_values)
    if "flair_derived" in decoys:
        written["flair_derived"] = derived_flair_copy(factory, grid, flair_values, flair_window)

    t2_image = None
    if options.include_t2:
        grid = plan.t2_grid
        labels, _ = sample_labels(phantom, grid, plan.t2_pose, options.slab_samples)
        t2_stored, t2_values = to_stored(renderer.image(labels, grid, "T2", "noise-t2"), options.t2_rescale)
        del labels
        written["t2"] = factory.make("t2", "t2", frames_of(grid, t2_stored), grid.pixel_mm, grid.thickness_mm,
                                     grid.slice_spacing_mm, options.t2_rescale, window(t2_values), "T2")
        t2_image = grid.to_sitk(t2_values)

    scale = options.decoy_matrix_scale
    if scale is None:
        scale = min(1.0, options.flair_matrix[0] / 320.0)
    written.update(render_decoys(decoys, plan, renderer, factory, _stream(seed, "decoy-geometry"),
                                 options.slices, t1_variant, scale))

    files: dict[str, list[Path]] = {}
    for sd in sorted(written.values(), key=lambda sd: sd.series_number):
        files[sd.series_uid] = write_series(input_dir / "DICOM" / f"S{sd.series_number:04d}", ctx, sd,
                                            options.encoding)
    clinical = clinical_record(phantom, ctx.accession_number)
    clinical_path = write_json(input_dir / "clinical.json", clinical)
    posterior = {use: round(posterior_uncontrolled(subject, use=use), 6) for use in ("all", "clinical", "imaging")}
    truth_path = write_truth(truth_dir, seed=seed, sid=sid, phantom=phantom, plan=plan, brain_mask=brain_mask,
                             tuber_mask=tuber_mask, posterior=posterior, clinical=clinical, ctx=ctx,
                             written=written, files=files, options=options)
    logger.info("generated study %s: %d series, encoding %s", ctx.study_uid, len(written), options.encoding)

    return GeneratedStudy(
        sid=sid, input_dir=input_dir, truth_dir=truth_dir, study_instance_uid=ctx.study_uid,
        t2_series_uid=written["t2"].series_uid if "t2" in written else None,
        flair_series_uid=written["flair"].series_uid if "flair" in written else None,
        decoy_series_uids={k: sd.series_uid for k, sd in written.items() if k in DECOY_KINDS},
        subject=subject, t2_image=t2_image, flair_image=flair_image, brain_mask=brain_mask,
        tuber_mask=tuber_mask, t2_to_flair=plan.t2_to_flair, posterior=posterior, encoding=options.encoding,
        files=files, series_kinds={sd.series_uid: k for k, sd in written.items()},
        clinical_path=clinical_path, truth_path=truth_path,
    )
