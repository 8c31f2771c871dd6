"""HD-BET v1's U-Net on OpenVINO (CPU, f32).

The five HD-BET parameter files are converted like the member folds: at load
time, into the IR cache of ``operators.openvino_engine`` (keyed by the file's
pinned SHA-256, the OpenVINO version and the conversion recipe), verified by
SHA-256 at every start. One IR per parameter file, with a dynamic input shape,
compiled for each study's padded grid (``HdBetOpenVino``).

Conversion traces the network with ``staged_statistics`` (see
``operators.hdbet_network._staged_mean``): OpenVINO's own instance-norm
reduction accumulates a whole channel in one float32 sum, and the softmax then
differs from PyTorch's by up to 1.8e-2 on a 96 x 128 x 96 volume; with staged
reductions the difference is 2.9e-4, the size of PyTorch's own float32 error
(PyTorch float32 against float64: 2.0e-4; ``benchmarks/bench_hdbet_openvino``).

Acceptance, checked on every conversion before the IR is cached: on a smooth
random volume of ``CHECK_SHAPE`` (z-scored, as HD-BET's input), the brain
probability may differ from eager PyTorch by at most ``PROBABILITY_TOLERANCE``
(1e-3) at any voxel, so the p > 0.5 mask can differ only where PyTorch itself
is within 1e-3 of the threshold. The mask agreement on real anatomy is tested
in ``tests/unit/test_hdbet_real_anatomy.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from operators.errors import ModelConfigurationError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PROBABILITY_TOLERANCE = 1e-3
CHECK_SHAPE = (64, 96, 64)
ARCHITECTURE = "hd-bet-v1"
INPUT_SHAPE = (1, 1, -1, -1, -1)
# Bump when the HD-BET conversion (tracing, staged statistics) changes.
RECIPE = {"instance_norm": "staged sum-mean-sum", "version": 1}


def check_volume(shape: Sequence[int] = CHECK_SHAPE, seed: int = 0) -> np.ndarray:
    """A smooth random ``(1, 1, z, y, x)`` volume, z-scored like HD-BET's input."""
    from scipy.ndimage import gaussian_filter

    volume = gaussian_filter(np.random.default_rng(seed).standard_normal(tuple(shape)), 4)
    return ((volume - volume.mean()) / volume.std()).astype(np.float32)[None, None]


def convert_hdbet(net: "torch.nn.Module", input_shape: Sequence[int]) -> Any:
    """Trace ``net`` with staged instance-norm statistics and convert it (dynamic input shape)."""
    from operators.hdbet_network import staged_statistics
    from operators.openvino_engine import convert_network

    with staged_statistics(net):
        return convert_network(net, input_shape)


def check_hdbet_conversion(net: "torch.nn.Module", model: Any, input_shape: Sequence[int], where: str) -> float:
    """Largest brain-probability difference between OpenVINO f32 and eager PyTorch on ``check_volume()``.

    Raises:
        ModelConfigurationError: The difference exceeds ``PROBABILITY_TOLERANCE``.
    """
    import torch

    from operators.openvino_engine import import_openvino

    ov = import_openvino()

    x = check_volume()
    with torch.inference_mode():
        expected = net.eval()(torch.from_numpy(x))[0, 1].float().numpy()
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    actual = np.asarray(compiled({0: x})[0], dtype=np.float32)[0, 1]
    diff = float(np.max(np.abs(actual - expected)))
    if not diff <= PROBABILITY_TOLERANCE:
        raise ModelConfigurationError(
            f"{where}: OpenVINO conversion differs from PyTorch (max |brain probability diff| {diff:.3g} > "
            f"{PROBABILITY_TOLERANCE:g} on a {'x'.join(map(str, CHECK_SHAPE))} check volume); "
            "run HD-BET with inference_engine: pytorch")
    return diff


class HdBetOpenVino:
    """HD-BET v1 networks compiled for the OpenVINO CPU plugin, one static input shape at a time.

    Each network is compiled for the padded grid of the study at hand (0.4-0.5 s)
    and kept for the next study of the same grid: with a static shape OpenVINO
    plans its buffers once, and a 128 x 160 x 144 grid takes 1.75 GiB against
    2.73 GiB compiled for dynamic shapes (and runs 5-10 % faster).

    Args:
        networks: The loaded PyTorch networks (converted only when the cache has no entry).
        parameter_sha256: The pinned SHA-256 of each network's parameter file.
        parameter_names: File names, for messages (e.g. ``0.model``).
        cache: An ``operators.openvino_engine.IrCache``.
        threads: CPU threads for inference.

    Not thread-safe: ``HdBetV1Predictor`` runs one prediction at a time.

    Attributes:
        compile_s: Seconds spent compiling so far.
    """

    def __init__(self, networks: Sequence["torch.nn.Module"], parameter_sha256: Sequence[str],
                 parameter_names: Sequence[str], cache: Any, threads: int = 1) -> None:
        from operators.model_manifest import IrFiles
        from operators.openvino_engine import import_openvino

        if not (len(networks) == len(parameter_sha256) == len(parameter_names)) or not networks:
            raise ValueError("HdBetOpenVino needs one SHA-256 and one name per network, and at least one network")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        core = import_openvino().Core()
        self.models = []
        for net, sha, name in zip(networks, parameter_sha256, parameter_names):
            fields = cache.entry_fields(sha, ARCHITECTURE, RECIPE, INPUT_SHAPE)
            source = cache.get(fields, lambda net=net: net, f"HD-BET v1 {name}", convert=convert_hdbet,
                               check=check_hdbet_conversion)
            self.models.append(core.read_model(str(source.xml), str(source.bin)) if isinstance(source, IrFiles)
                               else source)
        self.threads = threads
        self.compile_s = 0.0
        self._compiled: dict[int, tuple[tuple[int, ...], Any]] = {}

    def _network(self, index: int, shape: tuple[int, ...]) -> Any:
        from operators.openvino_engine import CompiledNetwork, import_openvino

        shape_now, compiled = self._compiled.get(index, ((), None))
        if shape_now != shape:
            self._compiled.pop(index, None)
            model = self.models[index]
            model.reshape({model.inputs[0]: import_openvino().PartialShape(list(shape))})
            compiled = CompiledNetwork(model, "fp32", self.threads)
            self.compile_s += compiled.compile_s
            self._compiled[index] = (shape, compiled)
        return compiled

    def __call__(self, index: int, batch: np.ndarray) -> np.ndarray:
        """Softmax ``(1, 2, z, y, x)`` of network ``index`` for a ``(1, 1, z, y, x)`` float32 batch."""
        if not 0 <= index < len(self.models):
            raise ModelConfigurationError(f"HD-BET network {index} is not loaded ({len(self.models)} loaded)")
        return self._network(index, tuple(batch.shape))(batch)

    def release_memory(self) -> None:
        """Free the compiled networks' intermediate buffers until the next call (about 1.3 GB for a head)."""
        for _, compiled in self._compiled.values():
            compiled.release_memory()
