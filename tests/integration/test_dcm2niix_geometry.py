"""Volume conversion against dcm2niix on real scanner files (../shared/data/dicom-variety).

For every series, the volume from :mod:`operators.volume_conversion` must have the
spacing, origin and direction of dcm2niix's NIfTI (read by SimpleITK, which
converts NIfTI's RAS to LPS) within 0.01 mm / 1e-4 and the same voxel values.
Both images are first brought to the same axis order with ``sitk.DICOMOrient``
(dcm2niix flips rows and sometimes slices; that changes the index order, not the
physical image).

dcm2niix is run with ``-p n`` so that Philips values are the DICOM Rescale
Slope/Intercept ("display") values this project uses, not Philips' private
"precise float" scaling.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from operators.dicom_loading import read_dicom, scan_folder
from operators.volume_conversion import list_stacks, series_to_volume
from operators.errors import VolumeConversionError

pytestmark = pytest.mark.integration

GEOMETRY_MM = 0.01
DIRECTION_TOL = 1e-4


def shared_data_dir() -> Path | None:
    base = os.environ.get("TSC_SHARED_DIR")
    root = Path(base) if base else Path(__file__).resolve().parents[2] / ".." / "shared"
    path = root / "data" / "dicom-variety"
    return path if path.is_dir() else None


VARIETY = shared_data_dir()
needs_data = pytest.mark.skipif(VARIETY is None, reason="shared dicom-variety data not found "
                                "(set TSC_SHARED_DIR or place it at ../shared beside the repo)")
needs_dcm2niix = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix (Debian package) not installed")


def run_dcm2niix(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dcm2niix", "-z", "n", "-p", "n", "-f", "%s_%p", "-o", str(out), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def plain_copy(src: Path, dst: Path) -> Path:
    """Copy a folder, decompressing ``*.gz`` (dcm2niix reads plain files only)."""
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fin, open(target.with_suffix(""), "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copyfile(path, target)
    return dst


def sign_extend_12bit(image: sitk.Image) -> sitk.Image:
    """What a reader that honours HighBit 11 of signed 12-bit data gets from raw stored values."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    out = sitk.GetImageFromArray(np.where(array > 2047, array - 4096, array))
    out.CopyInformation(image)
    return out


def assert_same_image(ours: sitk.Image, reference: sitk.Image, what: str) -> None:
    a = sitk.DICOMOrient(ours, "LPS")
    b = sitk.DICOMOrient(sitk.Cast(reference, sitk.sitkFloat32), "LPS")
    assert a.GetSize() == b.GetSize(), f"{what}: size {a.GetSize()} vs dcm2niix {b.GetSize()}"
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=GEOMETRY_MM, err_msg=f"{what}: spacing")
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=GEOMETRY_MM, err_msg=f"{what}: origin")
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=DIRECTION_TOL, err_msg=f"{what}: direction")
    va, vb = sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)
    if np.all(np.mod(va, 1) == 0):
        np.testing.assert_array_equal(va, vb, err_msg=f"{what}: voxels")
    else:
        # non-integer rescale: NIfTI stores scl_slope/scl_inter as float32, so the last bit may differ
        np.testing.assert_allclose(va, vb, rtol=2e-6, atol=1e-4, err_msg=f"{what}: voxels")


def nifti_volumes(path: Path) -> list[sitk.Image]:
    image = sitk.ReadImage(str(path))
    if image.GetDimension() == 3:
        return [image]
    size = list(image.GetSize())
    n = size[3]
    size[3] = 0
    return [sitk.Extract(image, size, [0, 0, 0, t]) for t in range(n)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """dcm2niix output folder per dataset (gzip data decompressed first)."""
    if VARIETY is None or shutil.which("dcm2niix") is None:
        pytest.skip("needs dicom-variety data and dcm2niix")
    tmp = tmp_path_factory.mktemp("dcm2niix")
    outputs = {}
    for name in ("dcm_qa_12bit", "dcm_qa_ts", "dcm_qa_enh", "dcm_qa_xa30", "dcm_qa_xa30i"):
        src = VARIETY / name / "In"
        if any(src.rglob("*.gz")):
            src = plain_copy(src, tmp / f"{name}_plain")
        run_dcm2niix(src, tmp / name)
        outputs[name] = tmp / name
    outputs["xa30i_plain"] = tmp / "dcm_qa_xa30i_plain"
    return outputs


@needs_data
@needs_dcm2niix
@pytest.mark.parametrize("dataset", ["dcm_qa_xa30", "dcm_qa_xa30i", "dcm_qa_enh"])
def test_every_series_matches_dcm2niix(dataset: str, converted: dict[str, Path]) -> None:
    folder = scan_folder(VARIETY / dataset / "In")
    assert not folder.skipped
    compared = 0
    for study in folder.studies.values():
        for info in study.series.values():
            niftis = sorted(converted[dataset].glob(f"{info.series_number}_*.nii"))
            assert niftis, f"dcm2niix wrote nothing for series {info.series_number}"
            stacks = list_stacks(info.datasets, info.files)
            references = [vol for path in niftis for vol in nifti_volumes(path)]
            assert len(references) == len(stacks), (info.summary(), [s.describe() for s in stacks])
            if len(stacks) > 1:
                # several echoes / time points / image types: not one volume unless a stack is chosen
                with pytest.raises(VolumeConversionError, match="mixes"):
                    series_to_volume(info.datasets, info.files)
            for k, reference in enumerate(references):
                volume = series_to_volume(info.datasets, info.files, stack_index=k if len(stacks) > 1 else None)
                assert_same_image(volume.image, reference, f"{dataset} series {info.series_number} stack {k}")
                compared += 1
    assert compared >= 2


@needs_data
@needs_dcm2niix
@pytest.mark.parametrize("dataset", ["dcm_qa_ts", "dcm_qa_12bit"])
def test_single_file_mosaics_match_dcm2niix(dataset: str, converted: dict[str, Path]) -> None:
    """These files share one Series Instance UID but differ by Series Number: each is its own volume."""
    files = sorted((VARIETY / dataset / "In").glob("*.dcm"))
    compared = 0
    for path in files:
        ds = read_dicom(path)
        nifti = converted[dataset] / f"{ds.SeriesNumber}_{str(ds.ProtocolName).replace(' ', '_')}.nii"
        if not nifti.exists():
            continue  # the Debian dcm2niix has no JPEG-LS decoder: checked against 1.dcm below
        reference = sitk.ReadImage(str(nifti))
        if int(ds.PixelRepresentation) == 1 and int(ds.BitsStored) == 12:
            # dcm2niix 1.0.20220720 (Debian) copies the 16-bit word without extending the sign of
            # bit 11; DICOM (and pydicom) sign-extend: compare what the values mean.
            reference = sign_extend_12bit(reference)
        assert_same_image(series_to_volume([ds], [path]).image, reference, path.name)
        compared += 1
    assert compared >= 3


@needs_data
def test_all_transfer_syntaxes_decode_identically() -> None:
    files = sorted((VARIETY / "dcm_qa_ts" / "In").glob("*.dcm"))
    assert len(files) == 9
    volumes = [series_to_volume([read_dicom(p)], [p]).image for p in files]
    syntaxes = {str(read_dicom(p).file_meta.TransferSyntaxUID) for p in files}
    assert len(syntaxes) >= 6
    reference = sitk.GetArrayViewFromImage(volumes[0])
    assert reference.shape == (35, 64, 64) and reference.max() > 0
    for path, image in zip(files[1:], volumes[1:]):
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), reference, err_msg=path.name)
        assert image.GetOrigin() == volumes[0].GetOrigin() and image.GetDirection() == volumes[0].GetDirection()


@needs_data
def test_twelve_bit_signed_and_unsigned_values() -> None:
    """The two 0x0F0F files hold the same 16-bit words, read as unsigned and as signed 12-bit."""
    folder = VARIETY / "dcm_qa_12bit" / "In"
    unsigned = sitk.GetArrayFromImage(series_to_volume([read_dicom(folder / "12bitUnsigned_0x0F0F.dcm")]).image)
    signed = sitk.GetArrayFromImage(series_to_volume([read_dicom(folder / "12bitSigned_0x0F0F.dcm")]).image)
    assert unsigned.min() >= 0 and unsigned.max() == 4095  # top 4 bits masked (0xFFFF -> 4095)
    assert signed.min() >= -2048 and signed.max() <= 2047 and (signed == -1).any()  # 0xFFFF -> -1
    np.testing.assert_array_equal(signed, np.where(unsigned > 2047, unsigned - 4096, unsigned))


@needs_data
def test_enhanced_and_classic_forms_give_identical_volumes(converted: dict[str, Path], tmp_path: Path) -> None:
    """Classic XA30 series -> Enhanced multi-frame by PixelMed -> same volume; and the
    real Enhanced export (another session of the same protocol) has the same geometry."""
    java = shutil.which("java")
    jar = Path("/usr/share/java/pixelmed.jar")
    if java is None or not jar.exists():
        pytest.skip("java and PixelMed (Debian libpixelmed-java) needed to build the enhanced form")
    classic_dir = converted["xa30i_plain"] / "5001_anat-T1w_acq-tfl"
    out = tmp_path / "enhanced"
    out.mkdir()
    proc = subprocess.run([java, "-cp", str(jar), "com.pixelmed.dicom.MultiFrameImageFactory",
                           str(classic_dir), str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    enhanced_files = [p for p in out.rglob("*") if p.is_file()]
    assert len(enhanced_files) == 1
    enhanced_ds = read_dicom(enhanced_files[0])
    assert int(enhanced_ds.NumberOfFrames) == 96

    classic = scan_folder(classic_dir)
    (info,) = [s for st in classic.studies.values() for s in st.series.values()]
    a = series_to_volume(info.datasets, info.files).image
    b = series_to_volume([enhanced_ds], enhanced_files).image
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))

    real_enhanced = scan_folder(VARIETY / "dcm_qa_xa30" / "In")
    for study in real_enhanced.studies.values():
        for series in study.series.values():
            c = series_to_volume(series.datasets, series.files).image
            assert c.GetSize() == a.GetSize()
            np.testing.assert_allclose(c.GetSpacing(), a.GetSpacing(), atol=1e-5)
            np.testing.assert_allclose(c.GetOrigin(), a.GetOrigin(), atol=1e-5)
            np.testing.assert_allclose(c.GetDirection(), a.GetDirection(), atol=1e-6)
