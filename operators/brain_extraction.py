"""Brain extraction: the real HD-BET (nnU-Net v2) in memory, and a weight-free fallback.

* ``HdBetExtractor`` runs HD-BET 2.x's network through nnU-Net v2's own
  ``nnUNetPredictor`` (the same code HD-BET's ``get_hdbet_predictor`` uses:
  tile step 0.5, Gaussian weighting, mirroring test-time augmentation on GPU
  only), on an in-memory array, with weights read from a configurable folder.
  The predictor is built once per process per (folder, device) and reused.
  HD-BET's own download code is never called, and ``HD_BET.hd_bet_prediction``
  is not imported (it resets ``sys.stdout`` and its file-based path spawns
  worker processes).
* ``fallback_brain_mask`` needs no weights: thresholds and morphology on the
  T2 (registered into FLAIR space) and FLAIR, so the application works out of
  the box; the method used is recorded and reported.
* ``BrainExtractor`` chooses: ``"auto"`` = HD-BET when its weights are present,
  else the fallback; ``"hd-bet"`` = HD-BET or a clear error; ``"fallback"``.

Stage core: ``extract_brain`` (a ``RegisteredPair`` in, a ``BrainExtracted``
out). Thin operator: ``BrainExtractionOperator`` (input ``registered``; output
``brain``), built on first access.

Weights folder (HD-BET's public release, nnU-Net v2 format)::

    <models>/hd_bet/release_2.0.0/dataset.json
    <models>/hd_bet/release_2.0.0/plans.json
    <models>/hd_bet/release_2.0.0/fold_all/checkpoint_final.pth

or any folder given by ``TSC_HDBET_WEIGHTS`` / the ``hdbet_weights`` config key.
See docs/preprocessing.md for installing them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from operators.datatypes import BrainExtracted, RegisteredPair
from operators.errors import PreprocessingError
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)

HDBET_WEIGHTS_ENV = "TSC_HDBET_WEIGHTS"
HDBET_RELEASE_DIR = Path("hd_bet") / "release_2.0.0"
HDBET_REQUIRED_FILES = ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth")
# HD-BET was trained on images in the orientation of the MNI152 template
# (fslreorient2std). Read by SimpleITK, MNI152 is stored i -> left, j -> anterior,
# k -> superior, i.e. DICOM-style orientation code "LAS".
HDBET_ORIENTATION = "LAS"

METHOD_HDBET = "hd-bet"
METHOD_FALLBACK = "fallback-morphology"


class HdBetWeightsMissing(PreprocessingError):
    """HD-BET was requested but its weight files are not where they were looked for."""


def hdbet_install_message(folder: Path | None) -> str:
    """How a site installs the public HD-BET weights (shown when they are absent)."""
    where = str(folder) if folder is not None else f"<models>/{HDBET_RELEASE_DIR.as_posix()}"
    return (
        f"HD-BET weights not found in {where}. Brain extraction will use the weight-free fallback. "
        "To use HD-BET, download the public HD-BET 2.x parameter release (a zip; see "
        "https://github.com/MIC-DKFZ/HD-BET, link in HD_BET/paths.py: ZENODO_DOWNLOAD_URL), check its licence "
        f"terms, and unzip it so that {where} contains {', '.join(HDBET_REQUIRED_FILES)}; or point "
        f"{HDBET_WEIGHTS_ENV} (or the 'hdbet_weights' setting) at that folder. See docs/preprocessing.md."
    )


def _has_weights(folder: Path) -> bool:
    return all((folder / rel).is_file() for rel in HDBET_REQUIRED_FILES)


def resolve_hdbet_folder(folder: str | os.PathLike[str] | None = None,
                         models_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Find the HD-BET weights folder.

    Looks, in order, at ``folder``, ``$TSC_HDBET_WEIGHTS`` and
    ``<models_dir>/hd_bet/release_2.0.0``. A candidate may be the release folder
    itself or a parent holding exactly one sub-folder with the weights (the zip
    unpacked one level too high).

    Args:
        folder: Explicit weights folder (config ``hdbet_weights`` / ``--hdbet-weights``).
        models_dir: The application's models folder.

    Returns:
        The folder holding ``dataset.json``, ``plans.json`` and
        ``fold_all/checkpoint_final.pth``, or None if none was found.
    """
    candidates: list[Path] = []
    if folder:
        candidates.append(Path(folder))
    env = os.environ.get(HDBET_WEIGHTS_ENV)
    if env:
        candidates.append(Path(env))
    if models_dir:
        candidates.append(Path(models_dir) / HDBET_RELEASE_DIR)
        candidates.append(Path(models_dir) / "hd_bet")
    for cand in candidates:
        if _has_weights(cand):
            return cand
        if cand.is_dir():
            subs = [p for p in sorted(cand.iterdir()) if p.is_dir() and _has_weights(p)]
            if len(subs) == 1:
                return subs[0]
    return None


def available_cpus() -> int:
    """CPUs this process may use: affinity mask and cgroup v2 quota, not the host's core count."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _select_device(device: str) -> Any:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(device)


@dataclass(frozen=True)
class BrainMaskResult:
    """A brain mask with how it was made.

    Attributes:
        mask: uint8 mask (1 = brain) on the FLAIR grid.
        method: ``"hd-bet"`` or ``"fallback-morphology"``.
        details: Parameters and numbers for the report (device, timings, ...).
    """

    mask: sitk.Image
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component and fill its holes (3D, then per slice)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out = labels == int(np.argmax(sizes))
    out = ndimage.binary_fill_holes(out)
    for k in range(out.shape[0]):  # axis 0 = slices of a SimpleITK array (z, y, x)
        out[k] = ndimage.binary_fill_holes(out[k])
    return out


def _mask_like(arr: np.ndarray, reference: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(reference)
    return img


# --------------------------------------------------------------------------- HD-BET

_PREDICTOR_CACHE: dict[tuple[str, str, bool], "HdBetExtractor"] = {}
_PREDICTOR_LOCK = threading.Lock()


class HdBetExtractor:
    """HD-BET 2.x brain extraction with the predictor loaded once per process.

    Build it with ``HdBetExtractor.from_folder(path, device="auto")``; repeated
    calls with the same folder/device return the same instance.
    """

    method = METHOD_HDBET

    def __init__(self, folder: Path, predictor: Any, device: Any, use_tta: bool,
                 reader_writer_name: str, num_input_channels: int, load_seconds: float) -> None:
        self.folder = folder
        self._predictor = predictor
        self.device = device
        self.use_tta = use_tta
        self.reader_writer_name = reader_writer_name
        self.num_input_channels = num_input_channels
        self.load_seconds = load_seconds
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], device: str = "auto", *,
                    use_tta: bool | None = None, num_threads: int | None = None) -> "HdBetExtractor":
        """Load (or reuse) HD-BET from a weights folder.

        Args:
            folder: Folder with ``dataset.json``, ``plans.json`` and
                ``fold_all/checkpoint_final.pth`` (HD-BET's release layout).
            device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
            use_tta: Mirroring test-time augmentation; default on for GPU, off for
                CPU (HD-BET's own CPU recommendation: 8x faster).
            num_threads: torch CPU threads; default = CPUs available to this process.

        Returns:
            The extractor (cached per process).

        Raises:
            HdBetWeightsMissing: The folder lacks a required file.
            PreprocessingError: The weights could not be loaded.
        """
        path = Path(folder).resolve()
        if not _has_weights(path):
            raise HdBetWeightsMissing(hdbet_install_message(path))
        torch_device = _select_device(device)
        tta = (torch_device.type == "cuda") if use_tta is None else bool(use_tta)
        key = (str(path), str(torch_device), tta)
        with _PREDICTOR_LOCK:
            cached = _PREDICTOR_CACHE.get(key)
            if cached is not None:
                return cached
            extractor = cls._load(path, torch_device, tta, num_threads)
            _PREDICTOR_CACHE[key] = extractor
            return extractor

    @classmethod
    def _load(cls, path: Path, torch_device: Any, tta: bool, num_threads: int | None) -> "HdBetExtractor":
        import torch

        t0 = time.perf_counter()
        if torch_device.type == "cpu":
            torch.set_num_threads(num_threads or available_cpus())
        # nnU-Net prints path warnings on import and in the predictor's constructor.
        with contextlib.redirect_stdout(io.StringIO()):
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            predictor = nnUNetPredictor(
                tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
            try:
                predictor.initialize_from_trained_model_folder(str(path), ("all",))
            except Exception as exc:  # corrupt/incompatible checkpoint: say which folder
                raise PreprocessingError(f"HD-BET weights in {path} could not be loaded: "
                                         f"{type(exc).__name__}: {exc}", stage="brain_extraction") from exc
        plans = json.loads((path / "plans.json").read_text())
        dataset = json.loads((path / "dataset.json").read_text())
        channels = dataset.get("channel_names", dataset.get("modality", {"0": "MRI"}))
        seconds = time.perf_counter() - t0
        logger.info("HD-BET loaded from %s on %s (tta=%s) in %.1f s", path, torch_device, tta, seconds)
        return cls(path, predictor, torch_device, tta, str(plans.get("image_reader_writer", "SimpleITKIO")),
                   len(channels), seconds)

    def predict_mask(self, image: sitk.Image, *, postprocess: bool = True) -> sitk.Image:
        """Brain mask of one image, on that image's grid.

        The image is reoriented (exact axis permutation/flip) to HD-BET's
        training orientation, passed to nnU-Net's in-memory prediction as a
        (1, z, y, x) array with (z, y, x) spacing - what nnU-Net's SimpleITKIO
        reader would hand it for the same image saved as NIfTI - and the mask is
        mapped back. The largest component is kept and holes are filled (HD-BET
        itself does no post-processing).

        Args:
            image: A 3D MR image (any orientation, any spacing).
            postprocess: Keep the largest component and fill holes.

        Returns:
            uint8 mask on ``image``'s grid.
        """
        if self.num_input_channels != 1:
            raise PreprocessingError(f"HD-BET model in {self.folder} expects {self.num_input_channels} "
                                     "input channels; only single-channel models are supported",
                                     stage="brain_extraction")
        original_code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), HDBET_ORIENTATION)
        with self._lock:  # one network, one prediction at a time
            if self.reader_writer_name == "SimpleITKIO":
                seg = self._predict_simpleitk_layout(oriented)
            else:
                seg = self._predict_via_reader_writer(oriented)
        mask_oriented = _mask_like((seg > 0).astype(np.uint8), oriented)
        mask = sitk.DICOMOrient(mask_oriented, original_code)
        if not _same_geometry(mask, image):
            mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        if not postprocess:
            return mask
        arr = largest_component_filled(sitk.GetArrayViewFromImage(mask) > 0)
        return _mask_like(arr, image)

    def _predict_simpleitk_layout(self, oriented: sitk.Image) -> np.ndarray:
        data = sitk.GetArrayFromImage(oriented)[None].astype(np.float32)
        props = {"spacing": [float(s) for s in oriented.GetSpacing()[::-1]]}
        with contextlib.redirect_stdout(io.StringIO()):
            return np.asarray(self._predictor.predict_single_npy_array(data, props, None, None, False))

    def _predict_via_reader_writer(self, oriented: sitk.Image) -> np.ndarray:
        # Other nnU-Net readers (e.g. NibabelIOWithReorient) define their own axis
        # order; go through a temporary NIfTI so the model sees exactly what it was trained on.
        rw = self._predictor.plans_manager.image_reader_writer_class()
        with tempfile.TemporaryDirectory(prefix="hdbet_") as tmp:
            src = os.path.join(tmp, "image_0000.nii.gz")
            sitk.WriteImage(oriented, src)
            data, props = rw.read_images([src])
            with contextlib.redirect_stdout(io.StringIO()):
                seg = np.asarray(self._predictor.predict_single_npy_array(
                    data.astype(np.float32), props, None, None, False))
            out = os.path.join(tmp, "mask.nii.gz")
            rw.write_seg(seg, out, props)
            back = sitk.ReadImage(out)
        back = sitk.Resample(back, oriented, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        return sitk.GetArrayFromImage(back)

    def extract(self, flair: sitk.Image, t2_in_flair: sitk.Image | None = None,
                *, input_contrast: str = "flair") -> BrainMaskResult:
        """Brain mask on the FLAIR grid with HD-BET.

        Args:
            flair: FLAIR volume.
            t2_in_flair: T2 registered into FLAIR space (used when ``input_contrast="t2"``).
            input_contrast: Which image HD-BET sees (``"flair"`` by default: its
                native grid, no interpolation; HD-BET was trained on T1, T2 and FLAIR).
        """
        source = flair
        if input_contrast == "t2":
            if t2_in_flair is None:
                raise PreprocessingError("HD-BET on T2 requested but no T2 in FLAIR space given",
                                         stage="brain_extraction")
            source = t2_in_flair
        elif input_contrast != "flair":
            raise ValueError(f"input_contrast must be 'flair' or 't2', got {input_contrast!r}")
        t0 = time.perf_counter()
        mask = self.predict_mask(source)
        seconds = time.perf_counter() - t0
        return BrainMaskResult(mask, METHOD_HDBET, {
            "weights_folder": str(self.folder), "device": str(self.device), "tta": self.use_tta,
            "input_contrast": input_contrast, "seconds": round(seconds, 3)})


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))


def clear_hdbet_cache() -> None:
    """Forget loaded HD-BET predictors (tests; frees memory)."""
    with _PREDICTOR_LOCK:
        _PREDICTOR_CACHE.clear()


# --------------------------------------------------------------------------- fallback


@dataclass(frozen=True)
class FallbackSettings:
    """Parameters of the weight-free brain extraction.

    Attributes:
        flair_fraction: Parenchyma = FLAIR above this fraction of the central brain median.
        t2_fraction: ... and T2 above this fraction of its central median (removes
            neck/face soft tissue, dark on T2, that FLAIR alone lets through).
        erode_mm: In-plane erosion that cuts thin bridges between brain and scalp.
        close_mm: In-plane closing that brings sulcal CSF inside the brain surface.
        slice_continuity_mm: Away from the slice with the largest brain section,
            each slice's mask is limited to the neighbouring (more central) slice's
            mask dilated by this margin: brain sections shrink towards the vertex
            and the skull base, neck and face tissue does not (axial stacks).
        grow_mm: Final in-plane dilation (within the head) that takes back the
            partial-volume rim lost to the thresholds.
        central_radius_mm: Radius around the head's centre of mass used for the
            reference intensities and to pick the brain component.
    """

    flair_fraction: float = 0.55
    t2_fraction: float = 0.75
    erode_mm: float = 3.0
    close_mm: float = 5.0
    slice_continuity_mm: float = 2.0
    grow_mm: float = 0.7
    central_radius_mm: float = 30.0


def _disk(rx: int, ry: int) -> np.ndarray:
    """In-plane elliptical structuring element, shape (1, 2ry+1, 2rx+1) for (z, y, x) arrays."""
    y, x = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    return (((x / max(rx, 1)) ** 2 + (y / max(ry, 1)) ** 2) <= 1.0)[None]


def fallback_brain_mask(flair: sitk.Image, t2_in_flair: sitk.Image | None,
                        settings: FallbackSettings = FallbackSettings()) -> sitk.Image:
    """Weight-free brain extraction from the FLAIR and the registered T2.

    Steps (arrays in SimpleITK (z, y, x) order, morphology in-plane because
    slices are thick): head mask; reference intensities = medians within
    ``central_radius_mm`` of the head's centre of mass; parenchyma candidates =
    FLAIR above ``flair_fraction`` of its reference (excludes CSF, skull, air)
    and T2 above ``t2_fraction`` of its reference (excludes dark soft tissue);
    in-plane erosion; the component holding most central voxels; dilation back
    within the candidates; slice-to-slice continuity from the largest brain
    section outwards (stops leaks into neck and face tissue); in-plane closing (sulcal CSF); holes filled per slice
    (ventricles); a final one-voxel in-plane dilation (partial-volume rim).

    Args:
        flair: FLAIR volume.
        t2_in_flair: T2 registered onto the FLAIR grid, or None (FLAIR only).
        settings: Thresholds and radii.

    Returns:
        uint8 brain mask on the FLAIR grid.

    Raises:
        PreprocessingError: No head or no brain component found.
    """
    from operators.registration import head_mask  # shared head-mask recipe

    sp = flair.GetSpacing()
    f = sitk.GetArrayViewFromImage(flair).astype(np.float32)
    head = sitk.GetArrayFromImage(head_mask(flair)) > 0
    zc, yc, xc = (float(np.mean(a)) for a in np.nonzero(head))
    zz, yy, xx = np.ogrid[:f.shape[0], :f.shape[1], :f.shape[2]]
    dist2 = ((xx - xc) * sp[0]) ** 2 + ((yy - yc) * sp[1]) ** 2 + ((zz - zc) * sp[2]) ** 2
    central = head & (dist2 < settings.central_radius_mm ** 2)
    if not central.any():
        raise PreprocessingError(f"fallback brain extraction: no head voxels near the centre of the FLAIR "
                                 f"(size {flair.GetSize()})", stage="brain_extraction")
    cand = head & (f > settings.flair_fraction * float(np.median(f[central])))
    if t2_in_flair is not None and settings.t2_fraction > 0:
        t = sitk.GetArrayViewFromImage(t2_in_flair).astype(np.float32)
        if t.shape != f.shape:
            raise PreprocessingError("fallback brain extraction: T2 is not on the FLAIR grid",
                                     stage="brain_extraction")
        t_central = t[central & (t > 0)]
        if t_central.size:
            # where the T2 does not exist (outside its field of view, t == 0) FLAIR decides alone
            cand &= (t > settings.t2_fraction * float(np.median(t_central))) | (t == 0)
    erode = _disk(max(1, round(settings.erode_mm / sp[0])), max(1, round(settings.erode_mm / sp[1])))
    core = ndimage.binary_erosion(cand, erode)
    labels, n = ndimage.label(core)
    if n == 0:
        raise PreprocessingError("fallback brain extraction: no brain component found", stage="brain_extraction")
    counts = np.bincount(labels[central], minlength=n + 1)
    counts[0] = 0
    if counts.max() == 0:
        raise PreprocessingError("fallback brain extraction: no brain tissue near the head centre",
                                 stage="brain_extraction")
    brain = ndimage.binary_dilation(labels == int(np.argmax(counts)), erode) & cand
    if settings.slice_continuity_mm > 0 and brain.shape[0] > 1:
        margin = _disk(max(1, round(settings.slice_continuity_mm / sp[0])),
                       max(1, round(settings.slice_continuity_mm / sp[1])))[0]
        k0 = int(np.argmax(brain.reshape(brain.shape[0], -1).sum(axis=1)))
        for k in [*range(k0 - 1, -1, -1), *range(k0 + 1, brain.shape[0])]:
            inner = brain[k + 1] if k < k0 else brain[k - 1]
            brain[k] &= ndimage.binary_dilation(inner, margin)
    rx, ry = max(1, round(settings.close_mm / sp[0])), max(1, round(settings.close_mm / sp[1]))
    padded = np.pad(brain, ((0, 0), (ry + 1, ry + 1), (rx + 1, rx + 1)))
    brain = ndimage.binary_closing(padded, _disk(rx, ry))[:, ry + 1:-(ry + 1), rx + 1:-(rx + 1)]
    for k in range(brain.shape[0]):
        brain[k] = ndimage.binary_fill_holes(brain[k])
    if settings.grow_mm > 0:
        grow = _disk(max(1, round(settings.grow_mm / sp[0])), max(1, round(settings.grow_mm / sp[1])))
        brain = ndimage.binary_dilation(brain, grow) & head
    return _mask_like(brain, flair)


# --------------------------------------------------------------------------- choice


class BrainExtractor:
    """Chooses and runs the brain extraction method; records which one was used.

    Modes: ``"auto"`` (HD-BET if its weights are found, else the fallback),
    ``"hd-bet"`` (HD-BET or ``HdBetWeightsMissing``), ``"fallback"``.
    Construct once per process (the HD-BET predictor is loaded here).

    Args:
        mode: ``"auto"``, ``"hd-bet"`` or ``"fallback"``.
        hdbet_weights: Explicit HD-BET weights folder (else ``$TSC_HDBET_WEIGHTS``,
            else ``<models_dir>/hd_bet/release_2.0.0``).
        models_dir: The application's models folder.
        device: Torch device for HD-BET (``"auto"`` = CUDA if available).
        hdbet_input: Which contrast HD-BET sees (``"flair"`` or ``"t2"``).
        fallback_settings: Parameters of the fallback.
    """

    def __init__(self, mode: str = "auto", *, hdbet_weights: str | os.PathLike[str] | None = None,
                 models_dir: str | os.PathLike[str] | None = None, device: str = "auto",
                 hdbet_input: str = "flair", fallback_settings: FallbackSettings = FallbackSettings()) -> None:
        if mode not in ("auto", "hd-bet", "fallback"):
            raise ValueError(f"brain extraction mode must be auto, hd-bet or fallback, got {mode!r}")
        self.mode = mode
        self.hdbet_input = hdbet_input
        self.fallback_settings = fallback_settings
        self.hdbet: HdBetExtractor | None = None
        self.note = ""
        if mode == "fallback":
            return
        folder = resolve_hdbet_folder(hdbet_weights, models_dir)
        if folder is None:
            looked = Path(hdbet_weights) if hdbet_weights else (
                Path(models_dir) / HDBET_RELEASE_DIR if models_dir else None)
            if mode == "hd-bet":
                raise HdBetWeightsMissing(hdbet_install_message(looked), stage="brain_extraction")
            self.note = hdbet_install_message(looked)
            logger.warning(self.note)
            return
        self.hdbet = HdBetExtractor.from_folder(folder, device=device)

    @property
    def method(self) -> str:
        """The method this extractor runs: ``"hd-bet"`` or ``"fallback-morphology"``."""
        return METHOD_HDBET if self.hdbet is not None else METHOD_FALLBACK

    def extract(self, flair: sitk.Image, t2_in_flair: sitk.Image | None) -> BrainMaskResult:
        """Brain mask on the FLAIR grid, with the method used and its details.

        Args:
            flair: FLAIR volume.
            t2_in_flair: T2 registered onto the FLAIR grid (None if unavailable).

        Returns:
            ``BrainMaskResult``.
        """
        if self.hdbet is not None:
            return self.hdbet.extract(flair, t2_in_flair, input_contrast=self.hdbet_input)
        t0 = time.perf_counter()
        mask = fallback_brain_mask(flair, t2_in_flair, self.fallback_settings)
        details: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 3),
                                   "contrasts": "FLAIR+T2" if t2_in_flair is not None else "FLAIR"}
        if self.note:
            details["note"] = "HD-BET weights not installed"
        return BrainMaskResult(mask, METHOD_FALLBACK, details)


def extract_brain(pair: RegisteredPair, extractor: BrainExtractor) -> BrainExtracted:
    """Brain mask on the FLAIR grid of a registered pair (the brain-extraction stage).

    Args:
        pair: The registration stage's output.
        extractor: HD-BET or the fallback, built once per process.

    Returns:
        ``BrainExtracted``.

    Raises:
        PreprocessingError: Extraction failed or gave an empty mask; the message names the FLAIR series.
    """
    t0 = time.perf_counter()
    where = f"FLAIR series {pair.flair.series_instance_uid}"
    try:
        bet = extractor.extract(pair.flair_image, pair.t2_in_flair)
    except PreprocessingError as exc:
        raise PreprocessingError(f"{exc.reason} ({where})", stage="brain_extraction") from exc
    if not sitk.GetArrayViewFromImage(bet.mask).any():
        raise PreprocessingError(f"brain mask is empty ({where})", stage="brain_extraction")
    return BrainExtracted(registered=pair, mask=bet.mask, method=bet.method, details=dict(bet.details),
                          seconds=time.perf_counter() - t0)


def _build_operator() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class BrainExtractionOperator(Operator):
        """Extracts the brain (HD-BET, or the weight-free fallback) on the FLAIR grid.

        Named input:
            registered: :class:`~operators.datatypes.RegisteredPair`.

        Named output:
            brain: :class:`~operators.datatypes.BrainExtracted`.
        """

        def __init__(self, fragment: Fragment, *args: Any, extractor: BrainExtractor | None = None,
                     **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application (a Fragment) the operator belongs to.
                extractor: Built once and reused for every study (default ``BrainExtractor("auto")``:
                    ``$TSC_HDBET_WEIGHTS`` or the fallback).
            """
            self.extractor = extractor or BrainExtractor("auto")
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("registered")
            spec.output("brain")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            op_output.emit(extract_brain(op_input.receive("registered"), self.extractor), "brain")

    return BrainExtractionOperator


__getattr__ = lazy_operator(globals(), "BrainExtractionOperator", _build_operator)
