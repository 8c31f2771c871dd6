"""Real brain images with a known answer, from files already installed (no downloads).

* The MNI152 2009c nonlinear symmetric template (T1, grey- and white-matter
  probability maps) that nilearn 0.12 ships in ``nilearn/datasets/data``: an
  average of 152 real adult brains, skull already removed, 1 mm.
* The Siemens XA30 3D T1 series of ``dcm_qa_xa30i`` in
  ``../shared/data/dicom-variety`` (``$TSC_SHARED_DIR``): a real scanner's
  DICOM, stored sagittal (PIR), 2 mm, but of a QA phantom (a bottle), not a
  head: useful for geometry and for comparing two implementations, not as anatomy.

Files are located without importing the packages that own them.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TSC_SHARED_DIR", REPO.parent / "shared"))
XA30_T1_SERIES = SHARED / "data" / "dicom-variety" / "dcm_qa_xa30i" / "In" / "6001_anat-T1w_acq-tfl"


def _nilearn_data() -> Path | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if (folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").is_file() else None


def mni152_available() -> bool:
    """Whether nilearn's bundled MNI152 template files are installed."""
    return _nilearn_data() is not None


def mni152_t1() -> sitk.Image:
    """The MNI152 2009c T1 template (skull-stripped, 1 mm, 197 x 233 x 189), float32."""
    folder = _nilearn_data()
    if folder is None:
        raise FileNotFoundError("nilearn's MNI152 template files are not installed")
    return sitk.Cast(sitk.ReadImage(str(folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")),
                     sitk.sitkFloat32)


def mni152_brain_reference(threshold: float = 0.5) -> sitk.Image:
    """Reference brain mask of the template: grey + white matter probability > ``threshold``, holes filled.

    Filling the holes takes in the ventricles, as a skull-stripping mask does.
    """
    folder = _nilearn_data()
    if folder is None:
        raise FileNotFoundError("nilearn's MNI152 template files are not installed")
    gm = sitk.ReadImage(str(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"))
    wm = sitk.ReadImage(str(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"))
    prob = (sitk.GetArrayViewFromImage(gm).astype(np.float32) + sitk.GetArrayViewFromImage(wm)) / 255.0
    mask = sitk.GetImageFromArray(ndimage.binary_fill_holes(prob > threshold).astype(np.uint8))
    mask.CopyInformation(gm)
    return mask


def xa30_t1_available() -> bool:
    """Whether the XA30 T1 (phantom) series is present."""
    return XA30_T1_SERIES.is_dir() and any(XA30_T1_SERIES.glob("*.dcm.gz"))


def xa30_t1_head() -> sitk.Image:
    """The Siemens XA30 3D T1 phantom volume, float32, as stored (sagittal, PIR)."""
    with tempfile.TemporaryDirectory(prefix="xa30_") as tmp:
        for src in sorted(XA30_T1_SERIES.glob("*.dcm.gz")):
            with gzip.open(src, "rb") as fin, open(Path(tmp) / src.name[:-3], "wb") as fout:
                shutil.copyfileobj(fin, fout)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(tmp))
        return sitk.Cast(reader.Execute(), sitk.sitkFloat32)


def dice(a: sitk.Image | np.ndarray, b: sitk.Image | np.ndarray) -> float:
    """Dice of two masks (images on one grid, or arrays)."""
    x = (sitk.GetArrayViewFromImage(a) if isinstance(a, sitk.Image) else np.asarray(a)) > 0
    y = (sitk.GetArrayViewFromImage(b) if isinstance(b, sitk.Image) else np.asarray(b)) > 0
    return 2.0 * float((x & y).sum()) / float(x.sum() + y.sum())
