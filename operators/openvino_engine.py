"""OpenVINO execution of the member networks on CPU.

Core:

* ``openvino_version``: the installed OpenVINO runtime, or None (the app then
  runs every network on PyTorch and says so).
* ``IrFiles`` / ``verify_ir`` (from ``operators.model_manifest``): an OpenVINO IR
  (``.xml`` topology + ``.bin`` weights) with the SHA-256 of both files;
  ``verify_ir`` raises ``ModelConfigurationError`` naming the file that is missing
  or does not match.
* ``IrCache``: f32 IR converted from a fold's PyTorch weights at load time and
  kept on disk, keyed by the weights' SHA-256, the architecture, its
  hyperparameters, the input shape and the OpenVINO version.
* ``CompiledNetwork``: one IR compiled for the CPU plugin with a precision mode.

Why conversion happens at load time into a cache (not at ``training export``):
the fold weight files stay the one artefact that is trained, checksummed in the
manifest and shipped; a model set exported before OpenVINO was added, or HD-BET's
packaged weights, need no re-export; and an IR produced by one OpenVINO release
is never tied into a model set that another release then runs. A MAP's model
folder is read-only, so the cache lives outside it: ``openvino_cache`` in the
app configuration, else ``$TSC_OPENVINO_CACHE``, else
``$XDG_CACHE_HOME/tsc-epilepsy-outcome/openvino`` (``~/.cache/...``). A
container warms it once at build time (``python -m app prepare-engine``); when
the folder cannot be written the IR is converted in memory at every start.

Every cache entry records the SHA-256 of its two files; a changed or truncated
file is a start-up error naming it (the entry is never silently rebuilt: a
model that scores children must not change under the app). Each conversion is
checked against eager PyTorch on one random input at the member's grid (logits
within 1e-4 relative + 1e-5 absolute) before the entry is written.

Reduced precision (INT8 IR made by ``python -m training quantize``, or a bf16
inference hint on CPUs with native bf16) is a property of a validated model set:
see ``operators.model_manifest`` (``openvino_reduced_precision``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from operators.errors import ModelConfigurationError
from operators.model_manifest import IrFiles, sha256_file, verify_ir

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CACHE_ENV = "TSC_OPENVINO_CACHE"
# Bump when the conversion recipe changes so that old cache entries are not reused.
CONVERSION_RECIPE = 1
PRECISION_MODES = ("fp32", "bf16", "int8")
ENGINES = ("auto", "openvino", "pytorch")
# Conversion check: OpenVINO f32 logits against eager PyTorch.
_CHECK_RTOL, _CHECK_ATOL = 1e-4, 1e-5


def import_openvino() -> Any:
    """The ``openvino`` module, imported with its usage telemetry switched off.

    ``ov.convert_model`` reports usage to Google Analytics unless a consent file
    under ``~/intel`` says no, and writes a client ID there (seen with
    openvino-telemetry 2025.2). A clinical node sends nothing and writes nothing
    under HOME, so ``openvino_telemetry`` is made unimportable before OpenVINO
    is first imported: OpenVINO (and NNCF) then use their own no-op stubs. Every
    import of OpenVINO in this project goes through here.

    Raises:
        ImportError: OpenVINO is not installed.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def openvino_version() -> str | None:
    """The installed OpenVINO runtime version (e.g. ``"2026.4.1"``), or None when it cannot be imported."""
    try:
        ov = import_openvino()
    except ImportError:
        return None
    return str(ov.get_version()).split("-")[0]


def resolve_engine(engine: str, device_type: str) -> str:
    """The engine that runs: ``"openvino"`` or ``"pytorch"``.

    Args:
        engine: Configured ``inference_engine``: ``"auto"`` (OpenVINO on CPU when installed,
            else PyTorch, with a warning), ``"openvino"`` or ``"pytorch"``.
        device_type: Torch device type (``"cpu"``, ``"cuda"``); CUDA always runs PyTorch.

    Raises:
        ModelConfigurationError: ``openvino`` on a CUDA device, or OpenVINO not installed.
    """
    if engine not in ENGINES:
        raise ModelConfigurationError(f"inference_engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if device_type != "cpu":
        if engine == "openvino":
            raise ModelConfigurationError(f"inference_engine openvino runs on CPU only, device is {device_type}")
        return "pytorch"
    if engine in ("auto", "openvino") and openvino_version() is None:
        if engine == "openvino":
            raise ModelConfigurationError("inference_engine openvino requested but OpenVINO is not installed "
                                          "(pip install openvino)")
        logger.warning("OpenVINO is not installed: the networks run on PyTorch, which is slower on CPU "
                       "(pip install openvino)")
        return "pytorch"
    return "openvino" if engine == "auto" else engine


def describe_engine(engine: str, device: str = "cpu", precision: str = "fp32") -> str:
    """How a network runs, as reports print it, e.g. ``"openvino 2026.4.1 CPU fp32"`` or ``"pytorch 2.13.0 cpu fp32"``.

    Args:
        engine: ``"openvino"`` or ``"pytorch"`` (as ``resolve_engine`` returns).
        device: Torch device (PyTorch only; OpenVINO runs on the CPU).
        precision: Precision mode, or a reduced mode's own description.
    """
    if engine == "openvino":
        return f"openvino {openvino_version()} CPU {precision}"
    import torch

    return f"pytorch {str(torch.__version__).split('+')[0]} {device} {precision}"


def default_cache_dir() -> Path:
    """``$TSC_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)``/tsc-epilepsy-outcome/openvino``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tsc-epilepsy-outcome" / "openvino"


def cpu_has_native_bf16() -> bool:
    """Whether the OpenVINO CPU plugin reports native bf16 support on this CPU."""
    ov = import_openvino()

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _example_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    return (*shape[:2], *([32] * (len(shape) - 2))) if len(shape) > 2 else shape


def convert_network(net: "torch.nn.Module", input_shape: Sequence[int]) -> Any:
    """Convert an eval-mode PyTorch network to an ``openvino.Model`` (input shape still dynamic).

    Image networks are traced on a small example (tracing a full 256 x 256 x 128 input
    through TorchScript costs a minute); ``check_conversion`` then compares it with
    PyTorch on that small shape and fixes the full static shape.
    """
    ov = import_openvino()
    import torch

    example = torch.rand(*_example_shape(input_shape))
    with torch.no_grad():
        # Tracing here rather than inside convert_model: 2.5x less time on a small ResNet.
        traced = torch.jit.trace(net.eval(), example, check_trace=False)
        return ov.convert_model(traced, example_input=example)


def check_conversion(net: "torch.nn.Module", model: Any, input_shape: Sequence[int], where: str,
                     seed: int = 0) -> float:
    """Compare OpenVINO f32 with eager PyTorch on one random input of the small example shape,
    then give ``model`` the full static ``input_shape``; return the max abs logit difference.

    Raises:
        ModelConfigurationError: The outputs differ beyond 1e-4 relative + 1e-5 absolute.
    """
    ov = import_openvino()
    import torch

    x = np.random.default_rng(seed).random(_example_shape(input_shape), dtype=np.float32)
    with torch.inference_mode():
        expected = net.eval()(torch.from_numpy(x)).float().numpy()
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    actual = np.asarray(compiled({0: x})[0], dtype=np.float32)
    diff = float(np.max(np.abs(actual - expected)))
    if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=_CHECK_RTOL, atol=_CHECK_ATOL):
        raise ModelConfigurationError(f"{where}: OpenVINO conversion differs from PyTorch (max |logit diff| "
                                      f"{diff:.3g}); run this model set with inference_engine: pytorch")
    model.reshape({model.inputs[0]: ov.PartialShape([int(s) for s in input_shape])})
    return diff


def _key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


class IrCache:
    """f32 IR of PyTorch weight files, converted once and kept on disk.

    Args:
        folder: Cache folder (created when missing); None = ``default_cache_dir()``.
            When it cannot be created or written, conversions are kept in memory
            (a warning says so) and redone at the next start.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.version = openvino_version()
        if self.version is None:
            raise ModelConfigurationError("OpenVINO is not installed (pip install openvino)")
        self.writable = True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.folder, prefix=".probe", delete=True)
            probe.close()
        except OSError as exc:
            self.writable = False
            logger.warning("OpenVINO cache %s is not writable (%s): networks are converted in memory at every "
                           "start; set openvino_cache to a writable folder", self.folder, exc.strerror or exc)
        self.converted_s = 0.0
        self.conversions = 0

    def entry_fields(self, weights_sha256: str, architecture: str, hyperparameters: Mapping[str, Any],
                     input_shape: Sequence[int]) -> dict[str, Any]:
        """What an entry depends on (its key is the SHA-256 of these fields)."""
        return {"weights_sha256": weights_sha256, "architecture": architecture,
                "hyperparameters": dict(hyperparameters), "input_shape": [int(s) for s in input_shape],
                "openvino": self.version, "recipe": CONVERSION_RECIPE}

    def get(self, fields: Mapping[str, Any], build: Callable[[], "torch.nn.Module"], where: str, *,
            convert: Callable[["torch.nn.Module", Sequence[int]], Any] = convert_network,
            check: Callable[["torch.nn.Module", Any, Sequence[int], str], float] = check_conversion) -> IrFiles | Any:
        """The IR for ``fields``: a verified cache entry, converted now when missing.

        Args:
            fields: From ``entry_fields``.
            build: Returns the PyTorch network with the fold's weights loaded (only
                called when a conversion is needed).
            where: Names the member and fold in errors.
            convert: PyTorch network and input shape to an ``openvino.Model``.
            check: Compares the converted model with eager PyTorch, may fix its input
                shape, and returns the largest output difference; raises
                ``ModelConfigurationError`` when the conversion is not accepted.

        Returns:
            ``IrFiles`` of the cache entry, or an in-memory ``openvino.Model`` when the
            cache is not writable.

        Raises:
            ModelConfigurationError: A cache entry whose files do not match its record,
                or a conversion that does not reproduce PyTorch.
        """
        ov = import_openvino()

        key = _key(fields)
        entry = self.folder / key[:32]
        record = entry / "entry.json"
        if record.is_file():
            try:
                meta = json.loads(record.read_text(encoding="utf-8"))
                ir = IrFiles(entry / "model.xml", entry / "model.bin", meta["xml_sha256"], meta["bin_sha256"],
                             origin=f"{where}: OpenVINO cache entry {record}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelConfigurationError(f"{where}: OpenVINO cache record {record} is unreadable ({exc}); "
                                              f"delete the folder {entry} so that it is converted again") from exc
            verify_ir(ir)
            return ir
        t0 = time.perf_counter()
        net = build()
        model = convert(net, fields["input_shape"])
        diff = check(net, model, fields["input_shape"], where)
        self.converted_s += time.perf_counter() - t0
        self.conversions += 1
        logger.info("%s: converted to OpenVINO IR in %.1f s (max |output diff| vs PyTorch %.2g)", where,
                    time.perf_counter() - t0, diff)
        if not self.writable:
            return model
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=".tmp-"))
        try:
            ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
            meta = dict(fields, xml_sha256=sha256_file(tmp / "model.xml"), bin_sha256=sha256_file(tmp / "model.bin"),
                        max_abs_output_diff_vs_pytorch=diff, check=check.__name__)
            (tmp / "entry.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            try:
                os.rename(tmp, entry)
            except OSError:  # another process wrote the same entry first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.get(fields, build, where, convert=convert, check=check)


class CompiledNetwork:
    """One network compiled for the OpenVINO CPU plugin.

    Args:
        model: ``IrFiles`` (read from disk) or an ``openvino.Model``.
        precision: ``"fp32"`` (f32 inference precision hint), ``"bf16"`` (bf16 hint; the CPU
            must support it natively) or ``"int8"`` (an INT8 IR, run with an f32 hint for its
            non-quantised parts).
        threads: CPU threads for inference.

    Attributes:
        compile_s: Seconds spent reading and compiling.
    """

    def __init__(self, model: Any, precision: str = "fp32", threads: int = 1) -> None:
        ov = import_openvino()

        if precision not in PRECISION_MODES:
            raise ModelConfigurationError(f"OpenVINO precision must be one of {PRECISION_MODES}, got {precision!r}")
        t0 = time.perf_counter()
        core = ov.Core()
        if isinstance(model, IrFiles):
            model = core.read_model(str(model.xml), str(model.bin))
        config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.compile_s = time.perf_counter() - t0

    def release_memory(self) -> None:
        """Free intermediate buffers until the next call (the compiled network stays)."""
        self._compiled.release_memory()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one input (float32, the network's static shape); returns the first output."""
        self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
