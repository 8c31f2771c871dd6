"""Synthetic study generator: determinism, geometry, DICOM validity, encodings, truth files."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from synthetic import StudyOptions, SubjectParams, Tuber, draw_subject, generate_study, posterior_uncontrolled
from synthetic.cli import main as cli_main
from synthetic.phantom import TUBER_BASE, HeadPhantom
from synthetic.render import contrast_lut
from synthetic.subject import best_achievable_auc

SMALL = dict(t2_matrix=(128, 128), t2_pixel_mm=1.8, flair_matrix=(112, 112), flair_pixel_mm=2.0, slices=12)
DCMDUMP = shutil.which("dcmdump")


def small(**kw: object) -> StudyOptions:
    return StudyOptions(**{**SMALL, **kw})  # type: ignore[arg-type]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def read_series(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f) for f in files]


def volume_from_classic(files: list[Path]) -> sitk.Image:
    """A volume from single-frame files using only IPP/IOP/PixelSpacing and rescale (no SliceThickness)."""
    ds = sorted(read_series(files), key=lambda d: int(d.InstanceNumber))
    row, col = np.array(ds[0].ImageOrientationPatient[:3], float), np.array(ds[0].ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    ds.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    arr = np.stack([d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1.0))
                    + float(getattr(d, "RescaleIntercept", 0.0)) for d in ds])
    positions = np.array([np.array(d.ImagePositionPatient, float) for d in ds])
    img = sitk.GetImageFromArray(arr)
    dz = float(np.dot(normal, positions[1] - positions[0])) if len(ds) > 1 else 1.0
    img.SetSpacing((float(ds[0].PixelSpacing[1]), float(ds[0].PixelSpacing[0]), dz))
    img.SetOrigin(tuple(positions[0]))
    img.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return img


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def classic(study_dir: Path):
    return generate_study(study_dir / "classic", 42, small())


# --- subject and label model ------------------------------------------------------------------

def test_draw_subject_is_deterministic_and_seed_dependent() -> None:
    assert draw_subject(5) == draw_subject(5)
    assert draw_subject(5) != draw_subject(6)
    s = draw_subject(5)
    assert 6.0 <= s.age_at_imaging_months <= 192.0
    assert 0.0 < s.age_at_onset_months <= s.age_at_imaging_months
    assert SubjectParams.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_exact_posterior_is_calibrated() -> None:
    """If the posterior is exact, the mean label among subjects with posterior ~p is ~p."""
    rng = np.random.default_rng(123)
    subjects = [draw_subject(rng) for _ in range(3000)]
    p = np.array([posterior_uncontrolled(s) for s in subjects])
    y = np.array([s.label for s in subjects])
    assert abs(p.mean() - y.mean()) < 0.03
    for lo, hi in ((0.0, 0.3), (0.3, 0.7), (0.7, 0.9), (0.9, 1.0)):
        sel = (p >= lo) & (p < hi)
        assert sel.sum() > 100
        assert abs(y[sel].mean() - p[sel].mean()) < 0.06, (lo, hi, y[sel].mean(), p[sel].mean())


def test_best_achievable_auc_in_target_band() -> None:
    result = best_achievable_auc(500, seed=0)
    assert 0.85 <= result["auc_all"] <= 0.95
    assert result["auc_clinical"] < result["auc_all"] and result["auc_imaging"] < result["auc_all"]
    assert result["auc_imaging"] > 0.65


# --- layout, clinical.json, truth ---------------------------------------------------------------

def test_layout_clinical_and_truth_files(classic) -> None:
    sid = classic.sid
    assert classic.input_dir.name == "input" and classic.input_dir.parent.name == sid
    assert classic.truth_dir == classic.input_dir.parent / "truth"
    assert not any(classic.input_dir.rglob("*.nii.gz")) and not (classic.input_dir / "truth.json").exists()
    clinical = json.loads((classic.input_dir / "clinical.json").read_text(encoding="utf-8"))
    assert set(clinical) == {"format", "accession_number", "age_at_seizure_onset_months", "infantile_spasms",
                             "asm_count_ge_3"}
    assert clinical["format"] == "tsc-clinical/1"
    assert isinstance(clinical["infantile_spasms"], bool) and isinstance(clinical["asm_count_ge_3"], bool)
    assert clinical["age_at_seizure_onset_months"] == classic.subject.age_at_onset_months
    truth = json.loads((classic.truth_dir / "truth.json").read_text(encoding="utf-8"))
    assert truth["sid"] == sid and truth["seed"] == 42 and truth["label"] == classic.subject.label
    assert truth["series"]["t2"]["uid"] == classic.t2_series_uid
    assert truth["series"]["flair"]["uid"] == classic.flair_series_uid
    assert {k: truth["series"][k]["uid"] for k in classic.decoy_series_uids} == classic.decoy_series_uids
    assert set(classic.decoy_series_uids) == {"localizer", "t1", "flair_derived", "dwi"}
    assert 0.0 < truth["posterior_uncontrolled"]["all"] < 1.0
    assert len(truth["tubers"]) == len(classic.subject.tubers)
    for name in ("brain_mask.nii.gz", "tuber_mask.nii.gz", "t2_to_flair.tfm"):
        assert (classic.truth_dir / name).is_file()
    tfm = sitk.ReadTransform(str(classic.truth_dir / "t2_to_flair.tfm"))
    np.testing.assert_allclose(tfm.GetParameters(), classic.t2_to_flair.GetParameters(), atol=1e-9)
    for name, img in (("brain_mask", classic.brain_mask), ("tuber_mask", classic.tuber_mask)):
        disk = sitk.ReadImage(str(classic.truth_dir / f"{name}.nii.gz"))
        assert disk.GetPixelID() == sitk.sitkUInt8
        assert np.array_equal(sitk.GetArrayFromImage(disk), sitk.GetArrayFromImage(img))


def test_masks_are_plausible(classic) -> None:
    brain = sitk.GetArrayViewFromImage(classic.brain_mask)
    tuber = sitk.GetArrayViewFromImage(classic.tuber_mask)
    assert set(np.unique(brain)) <= {0, 1} and brain.any()
    assert not np.any(tuber & ~brain.astype(bool)), "tubers lie inside the brain"
    flair = sitk.GetArrayViewFromImage(classic.flair_image)
    # FLAIR: CSF dark, tubers bright: tuber voxels are brighter than the brain median.
    if tuber.any():
        assert np.median(flair[tuber > 0]) > np.median(flair[brain > 0])


# --- determinism --------------------------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_different(study_dir: Path, classic) -> None:
    again = generate_study(study_dir / "again", 42, small())
    a_root, b_root = classic.input_dir.parent, again.input_dir.parent
    a_files = [p.relative_to(a_root) for p in all_files(a_root)]
    assert a_files == [p.relative_to(b_root) for p in all_files(b_root)]
    for rel in a_files:
        if rel.suffix == ".gz":  # gzip headers carry no time here, but compare the voxels to be safe
            a, b = sitk.ReadImage(str(a_root / rel)), sitk.ReadImage(str(b_root / rel))
            assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        else:
            assert (a_root / rel).read_bytes() == (b_root / rel).read_bytes(), rel
    other = generate_study(study_dir / "other", 43, small())
    assert other.study_instance_uid != classic.study_instance_uid
    assert other.t2_series_uid != classic.t2_series_uid
    assert not np.array_equal(sitk.GetArrayViewFromImage(other.flair_image),
                              sitk.GetArrayViewFromImage(classic.flair_image))


# --- geometry -----------------------------------------------------------------------------------

def test_headers_match_truth_images(classic) -> None:
    for uid, image in ((classic.t2_series_uid, classic.t2_image), (classic.flair_series_uid, classic.flair_image)):
        from_headers = volume_from_classic(classic.files[uid])
        assert from_headers.GetSize() == image.GetSize()
        np.testing.assert_allclose(from_headers.GetSpacing(), image.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(from_headers.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(from_headers.GetDirection(), image.GetDirection(), atol=1e-6)
        assert np.array_equal(sitk.GetArrayViewFromImage(from_headers), sitk.GetArrayViewFromImage(image))
    flair = classic.flair_image
    for mask in (classic.brain_mask, classic.tuber_mask):
        assert mask.GetSize() == flair.GetSize()
        np.testing.assert_allclose(mask.GetOrigin(), flair.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(mask.GetDirection(), flair.GetDirection(), atol=1e-9)
    ds = read_series(classic.files[classic.t2_series_uid])[0]
    assert float(ds.SliceThickness) == 5.0 and float(ds.SpacingBetweenSlices) == 6.0


def test_transform_maps_flair_tuber_centre_to_rendered_t2_tuber(study_dir: Path) -> None:
    base = draw_subject(7)
    tuber = Tuber(lobe="frontal", hemisphere="left", azimuth_deg=30.0, elevation_deg=25.0, depth=0.75,
                  unit_radius_mm=9.0, elongation=1.3, contrast=1.0)
    subject = SubjectParams(**{**base.__dict__, "tubers": (tuber,), "nodules": ()})
    study = generate_study(study_dir / "tuber", 7, small(subject=subject, noise_scale=0.0, bias_strength=0.0,
                                                        decoys=False, max_rotation_deg=5.0,
                                                        max_translation_mm=10.0))
    truth = json.loads(study.truth_path.read_text(encoding="utf-8"))
    entry = truth["tubers"][0]
    mapped = np.array(study.t2_to_flair.TransformPoint(tuple(entry["centre_flair_mm"])))
    np.testing.assert_allclose(mapped, entry["centre_t2_mm"], atol=1e-3)
    assert truth["transform"]["translation_norm_mm"] > 0.0
    # Where the transform says, the T2 shows the tuber at its full (noise- and bias-free) intensity.
    expected = float(contrast_lut("T2", HeadPhantom(subject))[TUBER_BASE])
    t2 = study.t2_image
    assert abs(t2.GetPixel(t2.TransformPhysicalPointToIndex(tuple(mapped))) - expected) <= 0.5
    flair_idx = study.flair_image.TransformPhysicalPointToIndex(tuple(entry["centre_flair_mm"]))
    assert study.tuber_mask.GetPixel(flair_idx) == 1


# --- DICOM content and validity -----------------------------------------------------------------

def test_headers_carry_physics_and_identity(classic) -> None:
    series = {kind: read_series(classic.files[uid]) for uid, kind in classic.series_kinds.items()}
    t2, flair = series["t2"][0], series["flair"][0]
    assert (float(t2.RepetitionTime), float(t2.EchoTime)) == (2790.0, 93.0)
    assert (float(flair.RepetitionTime), float(flair.EchoTime), float(flair.InversionTime)) == (9000.0, 132.0, 2500.0)
    assert "InversionTime" not in t2
    assert list(series["flair_derived"][0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert float(series["flair_derived"][0].RescaleSlope) == 0.5
    assert {float(d.DiffusionBValue) for d in series["dwi"]} == {0.0, 500.0, 1000.0}
    assert len({tuple(d.ImageOrientationPatient) for d in series["localizer"]}) == 3
    frames_of_reference = {d.FrameOfReferenceUID for ds in series.values() for d in ds}
    assert frames_of_reference == {t2.FrameOfReferenceUID}
    assert {d.StudyInstanceUID for ds in series.values() for d in ds} == {classic.study_instance_uid}
    sop_uids = [d.SOPInstanceUID for ds in series.values() for d in ds]
    assert len(sop_uids) == len(set(sop_uids))
    study_date = dt.datetime.strptime(t2.StudyDate, "%Y%m%d").date()
    birth = dt.datetime.strptime(t2.PatientBirthDate, "%Y%m%d").date()
    assert (study_date - birth).days == classic.subject.age_at_imaging_days
    assert t2.PatientAge[-1] in "MY" and t2.PatientID == classic.sid
    assert t2.Modality == "MR" and t2.BodyPartExamined == "BRAIN"


def _assert_dcmdump_clean(files: list[Path]) -> None:
    for start in range(0, len(files), 100):
        chunk = [str(f) for f in files[start:start + 100]]
        proc = subprocess.run([DCMDUMP, "+E", *chunk], capture_output=True, text=True, timeout=120)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("E:", "W:"))]
        assert proc.returncode == 0 and not problems, problems[:10]


@pytest.mark.parametrize("encoding", ["classic", "enhanced", "jpeg2000", "jpegls", "rle"])
def test_every_encoding_reads_back_with_pydicom_and_dcmdump(study_dir: Path, classic, encoding: str) -> None:
    if encoding == "jpegls":
        pytest.importorskip("jpeg_ls", reason="pyjpegls is needed to encode JPEG-LS")
    study = classic if encoding == "classic" else generate_study(study_dir / encoding, 42, small(encoding=encoding))
    files = all_files(study.input_dir / "DICOM")
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.pixel_array.size > 0
    if DCMDUMP:
        _assert_dcmdump_clean(files)
    # Same seed: the stored T2 pixels are the same whatever the encoding.
    t2 = read_series(study.files[study.t2_series_uid])
    pixels = np.concatenate([d.pixel_array.reshape(-1, d.Rows, d.Columns) for d in t2])
    reference = np.concatenate([d.pixel_array[None] for d in
                                sorted(read_series(classic.files[classic.t2_series_uid]),
                                       key=lambda d: int(d.InstanceNumber))])
    assert np.array_equal(pixels, reference)
    expected_ts = {"classic": "1.2.840.10008.1.2.1", "enhanced": "1.2.840.10008.1.2.1",
                   "jpeg2000": "1.2.840.10008.1.2.4.90", "jpegls": "1.2.840.10008.1.2.4.80",
                   "rle": "1.2.840.10008.1.2.5"}[encoding]
    assert t2[0].file_meta.TransferSyntaxUID == expected_ts


def test_enhanced_geometry_matches_truth(study_dir: Path) -> None:
    study = generate_study(study_dir / "enh-geom", 9, small(encoding="enhanced", decoys=["dwi"]))
    ds = pydicom.dcmread(study.files[study.flair_series_uid][0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and int(ds.NumberOfFrames) == 12
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert shared.MRImageFrameTypeSequence[0].AcquisitionContrast == "FLUID_ATTENUATED"
    assert float(shared.MRModifierSequence[0].InversionTimes) == 2500.0
    img = study.flair_image
    first = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    np.testing.assert_allclose([float(v) for v in first], img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               img.GetSpacing()[1::-1], atol=1e-6)
    assert np.array_equal(ds.pixel_array.astype(np.float32), sitk.GetArrayViewFromImage(img))
    dwi = pydicom.dcmread(study.files[study.decoy_series_uids["dwi"]][0])
    b = {float(f.MRDiffusionSequence[0].DiffusionBValue) for f in dwi.PerFrameFunctionalGroupsSequence}
    assert b == {0.0, 500.0, 1000.0}


@pytest.mark.parametrize("name", ["Müller^Jürgen", "山田^太郎"])
def test_non_ascii_patient_name_round_trip(study_dir: Path, name: str) -> None:
    study = generate_study(study_dir / f"pn{len(name)}", 3, small(patient_name=name, decoys=["localizer"]))
    files = all_files(study.input_dir / "DICOM")
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == name
    if DCMDUMP:
        _assert_dcmdump_clean(files)


def test_description_modes(study_dir: Path) -> None:
    blank = generate_study(study_dir / "blank", 5, small(descriptions="blank", decoys=False))
    for uid in blank.files:
        assert pydicom.dcmread(blank.files[uid][0]).SeriesDescription == ""
    mis = generate_study(study_dir / "mis", 5, small(descriptions="misleading", decoys=False))
    t2_desc = pydicom.dcmread(mis.files[mis.t2_series_uid][0]).SeriesDescription
    flair_desc = pydicom.dcmread(mis.files[mis.flair_series_uid][0]).SeriesDescription
    assert "flair" in t2_desc.lower() or "tirm" in t2_desc.lower()
    assert "flair" not in flair_desc.lower()


def test_subset_of_series_and_options_validation(study_dir: Path) -> None:
    study = generate_study(study_dir / "noflair", 8, small(include_flair=False, decoys=["t1"]))
    assert study.flair_series_uid is None and study.flair_image is None
    assert set(study.decoy_series_uids) == {"t1"} and study.brain_mask.GetSize() == (112, 112, 12)
    assert len(study.files) == 2
    with pytest.raises(ValueError, match="encoding"):
        generate_study(study_dir / "bad", 8, small(encoding="jpeg"))
    with pytest.raises(ValueError, match="decoy"):
        generate_study(study_dir / "bad", 8, small(decoys=["ct"]))


def test_cli_generate_and_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["generate", "-o", str(tmp_path), "--seed", "4", "--t2-matrix", "64", "--flair-matrix", "64",
                     "--slices", "6", "--decoys", "none"]) == 0
    assert (tmp_path / "SYN-000004" / "input" / "clinical.json").is_file()
    assert cli_main(["auc", "-n", "50", "--json", str(tmp_path / "auc.json")]) == 0
    assert json.loads((tmp_path / "auc.json").read_text())["n"] == 50
    assert "SYN-000004" in capsys.readouterr().out


def test_non_trivial_rescale_round_trips(study_dir: Path) -> None:
    study = generate_study(study_dir / "rescale", 12, small(t2_rescale=(2.0, -100.0), decoys=False))
    ds = read_series(study.files[study.t2_series_uid])[0]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -100.0)
    from_headers = volume_from_classic(study.files[study.t2_series_uid])
    assert np.array_equal(sitk.GetArrayViewFromImage(from_headers), sitk.GetArrayViewFromImage(study.t2_image))


def test_jpeg2000_refuses_matrices_openjpeg_cannot_encode(study_dir: Path) -> None:
    with pytest.raises(ValueError, match="32x32"):
        generate_study(study_dir / "j2k", 1, small(encoding="jpeg2000", flair_matrix=(24, 24)))
