"""Multi-model inference and late fusion.

Core:

* ``MemberInputs``: the model inputs of one study, numpy arrays keyed by input
  key (``"flair@wae"``: the normalised FLAIR on the ``wae`` grid, see
  ``operators.model_grid``), the clinical data, and why any input is missing.
* ``member_inputs_from_preprocessed``: builds them from ``Preprocessed`` (the
  same function is used by ``training prepare``).
* ``fuse``: pure late fusion of per-fold member probabilities into a
  ``Prediction`` (fold mean per member, weighted average over members, weights
  renormalised over the members that could run, agreement measures).
* ``EnsembleRunner``: loads every fold model of a model set once per process
  (CPU or CUDA) and predicts a study. A member the manifest calibrates has
  each fold model's probability calibrated before averaging and fusion.

Engines (``RunnerOptions.engine``): on CPU the networks run through OpenVINO
(``operators.openvino_engine``: f32 IR converted from the fold weights once and
cached on disk; or a validated reduced-precision mode of the model set) when
OpenVINO is installed, else through PyTorch, and the log says which. CUDA always
runs PyTorch. Every ``Prediction`` names the engine and precision it was made with
(``Prediction.inference_engine``), and the reports print it.

Thin operator: ``EnsembleInferenceOperator`` (input ``model_inputs``:
``MemberInputs``; output ``prediction``: ``Prediction``), built on first access
so that importing this module does not import the MONAI Deploy SDK.

Agreement (``Prediction.agreement``):

* ``fold_sd_max`` / ``fold_sd_mean``: standard deviation of the fold models'
  probabilities within a member (max / mean over used members);
* ``member_sd``: weighted standard deviation of the member probabilities around
  the fused score (renormalised weights);
* ``member_range``: highest minus lowest member probability;
* ``member_weight_agreeing``: share of the fused weight carried by members on
  the same side of the threshold as the fused score (1 = unanimous);
* ``members_used`` / ``members_total``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from operators.datatypes import ClinicalData, MemberResult, Prediction, Preprocessed
from operators.errors import InferenceError, ModelConfigurationError
from operators.lazy_operator import lazy_operator
from operators.model_manifest import (CLINICAL_INPUT, EnsembleSpec, IrFiles, MemberSpec, ModelSet,
                                      ReducedPrecisionMode, load_model_set, sha256_file, verify_ir)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_CONTRAST_FIELDS = {"t2": "t2_norm", "flair": "flair_norm", "flair3": "flair3"}
ENGINES = ("auto", "openvino", "pytorch")
PRECISIONS = ("fp32", "reduced", "int8", "bf16")


@dataclass
class MemberInputs:
    """Model inputs of one study.

    Attributes:
        images: Input key (``"<contrast>@<grid>"``) -> float32 array of the grid's
            shape, ``(nx, ny, nz)`` as returned by ``operators.model_grid.to_model_grid``.
        clinical: The clinical data, a plain vector (onset months, imaging age
            months, infantile spasms 0/1, ASMs >= 3 0/1), or None.
        missing: Input key (or ``"clinical"``) -> why that input is not available;
            used as the member's reason for being left out.
    """

    images: dict[str, np.ndarray] = field(default_factory=dict)
    clinical: ClinicalData | Sequence[float] | None = None
    missing: dict[str, str] = field(default_factory=dict)


def member_inputs_from_preprocessed(preprocessed: Preprocessed | None, clinical: ClinicalData | None,
                                    model_set: ModelSet, *, missing_reason: str | None = None) -> MemberInputs:
    """Resample the preprocessed images onto every grid the model set needs.

    Args:
        preprocessed: Output of preprocessing, or None when it could not run.
        clinical: Clinical data, or None.
        model_set: The model set (its members' input keys and grids).
        missing_reason: Why ``preprocessed`` is None (e.g. "no T2 series").

    Returns:
        ``MemberInputs`` with one array per image input key; an image that is
        absent from ``preprocessed`` is recorded in ``missing``.
    """
    from operators.model_grid import to_model_grid

    inputs = MemberInputs(clinical=clinical)
    for key, (contrast, grid) in model_set.input_keys().items():
        image = getattr(preprocessed, _CONTRAST_FIELDS[contrast], None) if preprocessed is not None else None
        if image is None:
            inputs.missing[key] = missing_reason or f"{contrast.upper()} image not available"
            continue
        inputs.images[key] = to_model_grid(image, preprocessed.brain_mask, grid)  # type: ignore[union-attr]
    if clinical is None:
        inputs.missing[CLINICAL_INPUT] = "no clinical data"
    return inputs


def clinical_vector(clinical: ClinicalData | Sequence[float] | None) -> tuple[list[float] | None, str | None]:
    """The clinical member's input vector, or None and the reason it is unavailable."""
    if clinical is None:
        return None, "no clinical data"
    if isinstance(clinical, ClinicalData):
        vec = clinical.as_vector()
        if vec is None:
            if clinical.missing_reason:
                return None, clinical.missing_reason
            absent = [n for n in ("age_at_onset_months", "age_at_imaging_months", "infantile_spasms",
                                  "asm_count_ge_3")
                      if getattr(clinical, n) is None or getattr(clinical, n).value is None]
            return None, "clinical variables missing: " + ", ".join(absent)
        return vec, None
    vec = [float(v) for v in clinical]
    if not all(math.isfinite(v) for v in vec):
        return None, "clinical vector has non-finite values"
    return vec, None


def fuse(ensemble: EnsembleSpec, fold_scores: Mapping[str, Sequence[float]], left_out: Mapping[str, str],
         members: Mapping[str, MemberSpec] | None = None) -> Prediction:
    """Late fusion of one ensemble (pure function).

    Args:
        ensemble: Ensemble weights and threshold.
        fold_scores: Member name -> probability per fold model, for members that ran.
        left_out: Member name -> reason, for members that could not run.
        members: Member specs, to record input key and architecture (optional).

    Returns:
        The ``Prediction`` (model-set fields are left for the caller).

    Raises:
        InferenceError: No member of the ensemble with a positive weight could run.
    """
    used = {m: float(np.mean(fold_scores[m])) for m, w in ensemble.weights.items()
            if w > 0 and m in fold_scores and len(fold_scores[m]) > 0}
    total = sum(ensemble.weights[m] for m in used)
    if not used or total <= 0:
        reasons = "; ".join(f"{m}: {left_out.get(m, 'not run')}" for m in ensemble.weights)
        raise InferenceError(f"{ensemble.name}: no member could be run ({reasons})")
    weights = {m: ensemble.weights[m] / total for m in used}
    fused = float(sum(weights[m] * used[m] for m in used))
    renormalised = any(w > 0 and m not in used for m, w in ensemble.weights.items())

    results = []
    for m, nominal in ensemble.weights.items():
        spec = members.get(m) if members else None
        extra = {"nominal_weight": nominal, "input_key": spec.input_key if spec else "",
                 "architecture": spec.architecture if spec else "",
                 "calibration": spec.calibration.describe() if spec and spec.calibration else ""}
        if m in used:
            results.append(MemberResult(name=m, used=True, fold_scores=tuple(float(s) for s in fold_scores[m]),
                                        score=used[m], weight=weights[m], **extra))
        else:
            reason = left_out.get(m) or ("weight is 0" if nominal <= 0 else "not run")
            results.append(MemberResult(name=m, used=False, reason_left_out=reason, **extra))

    fold_sds = [float(np.std(fold_scores[m])) for m in used]
    scores = np.array([used[m] for m in used])
    w = np.array([weights[m] for m in used])
    above = fused >= ensemble.threshold
    agreeing = sum(weights[m] for m in used if (used[m] >= ensemble.threshold) == above)
    agreement = {
        "fold_sd_max": max(fold_sds),
        "fold_sd_mean": float(np.mean(fold_sds)),
        "member_sd": float(np.sqrt(np.sum(w * (scores - fused) ** 2))),
        "member_range": float(scores.max() - scores.min()),
        "member_weight_agreeing": float(agreeing),
        "members_used": float(len(used)),
        "members_total": float(sum(1 for v in ensemble.weights.values() if v > 0)),
    }
    return Prediction(ensemble=ensemble.name, members=results, fused_score=fused, threshold=ensemble.threshold,
                      predicted_uncontrolled=bool(above), agreement=agreement, weights_renormalised=renormalised)


@dataclass(frozen=True)
class RunnerOptions:
    """How the runner executes the networks.

    Attributes:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_threads: CPU threads for torch; None = the CPU quota of this process's
            cgroup (or its affinity mask), 0 = leave torch's setting alone.
        engine: ``"auto"`` (OpenVINO on CPU when installed, else PyTorch; PyTorch on CUDA),
            ``"openvino"`` (CPU only; an error when OpenVINO is missing) or ``"pytorch"``.
        channels_last: PyTorch engine: run image networks with ``torch.channels_last_3d``
            tensors (faster and leaner on CPU, scores within 1e-6).
        precision: ``"fp32"`` (default), ``"reduced"`` (OpenVINO: the fastest reduced mode the
            model set has validated, int8 before bf16; fp32 with a warning when it has none),
            ``"int8"`` or ``"bf16"`` (OpenVINO: only when validated in the manifest's
            ``openvino_reduced_precision``; PyTorch: ``"bf16"`` is autocast, for GPUs with
            native support; validate scores within 1e-3 before use).
        openvino_cache: Folder of converted IR (None: ``operators.openvino_engine.default_cache_dir``).
        weights_residency: ``"memory"`` keeps every fold model built and loaded;
            ``"stream"`` keeps one network per member and loads each fold's weights
            (memory-mapped) when it runs, bounding memory for full-size sets;
            ``"auto"`` uses memory when all weights fit in ``memory_budget_mb``.
        memory_budget_mb: Budget for ``"auto"``.
    """

    device: str = "auto"
    num_threads: int | None = None
    engine: str = "auto"
    channels_last: bool = True
    precision: str = "fp32"
    weights_residency: str = "auto"
    memory_budget_mb: float = 1024.0
    openvino_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ModelConfigurationError(f"inference engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ModelConfigurationError(f"inference precision must be one of {', '.join(PRECISIONS)}, "
                                          f"got {self.precision!r}")


def cpu_quota() -> int:
    """CPUs this process may use: cgroup v2/v1 CPU quota and affinity mask, at least 1."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = float(text[0]) / float(text[1])
    except (OSError, ValueError, IndexError):
        try:
            q = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def load_fold_weights(net: Any, spec: MemberSpec, k: int, *, device: Any = "cpu", mmap: bool = False) -> None:
    """Load fold ``k``'s state dict into ``net`` (strict).

    Raises:
        ModelConfigurationError: The file does not load into the member's architecture.
    """
    import torch

    path = spec.folds[k].path
    where = f"member {spec.name} fold {k} ({path.name})"
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, KeyError, TypeError, ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelConfigurationError(f"{where}: weights do not load into {spec.architecture} "
                                      f"{spec.hyperparameters}: {first}") from exc


def input_shape(spec: MemberSpec) -> tuple[int, ...]:
    """The member network's input shape for one study: ``(1, 1, nx, ny, nz)`` or ``(1, features)``."""
    if spec.is_clinical:
        return (1, int(spec.hyperparameters.get("in_features", 4)))
    return (1, 1, *spec.grid.shape)  # type: ignore[union-attr]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def member_input_array(member: MemberSpec, inputs: MemberInputs) -> tuple[np.ndarray | None, str | None]:
    """The member's input batch of one (float32), or None and the reason it is unavailable.

    Raises:
        InferenceError: The image has the wrong shape or non-finite values.
    """
    if member.is_clinical:
        vec, reason = clinical_vector(inputs.clinical)
        if vec is None:
            return None, reason
        return np.asarray([vec], dtype=np.float32), None
    arr = inputs.images.get(member.input_key)
    if arr is None:
        return None, inputs.missing.get(member.input_key, f"input {member.input_key} not provided")
    arr = np.asarray(arr)
    if tuple(arr.shape) != tuple(member.grid.shape):  # type: ignore[union-attr]
        raise InferenceError(f"member {member.name}: input {member.input_key} has shape {arr.shape}, "
                             f"grid {member.grid.name} needs {member.grid.shape}")  # type: ignore[union-attr]
    if not np.isfinite(arr).all():
        raise InferenceError(f"member {member.name}: input {member.input_key} has non-finite values")
    return np.ascontiguousarray(arr, dtype=np.float32)[None, None], None


class _Member:
    """A member's networks: one per fold (memory), or in stream mode one network shared by
    every member of the same architecture and hyperparameters, loaded with each fold's
    weights in turn (bounds memory to one network per architecture)."""

    def __init__(self, spec: MemberSpec, device: "torch.device", options: RunnerOptions, stream: bool,
                 shared: dict[str, Any]) -> None:
        from operators.networks import build_network

        self.spec = spec
        self.device = device
        self.options = options
        self.stream = stream
        self._stats = [self._stat(f.path) for f in spec.folds]
        self.nets: list[Any] = []
        if stream:
            key = json.dumps([spec.architecture, spec.hyperparameters], sort_keys=True)
            if key not in shared:
                shared[key] = self._prepare(build_network(spec.architecture, spec.hyperparameters))
            self.nets.append(shared[key])
            for k, fold in enumerate(spec.folds):  # every fold must load now, at start-up
                self._load(self.nets[0], fold.path, fold_index=k)
            return
        for k, fold in enumerate(spec.folds):
            net = build_network(spec.architecture, spec.hyperparameters)
            self._load(net, fold.path, fold_index=k)
            self.nets.append(self._prepare(net))

    @staticmethod
    def _stat(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def _load(self, net: Any, path: Path, fold_index: int) -> None:
        # Stream mode maps the file on the CPU; load_state_dict copies into the (possibly CUDA) network.
        load_fold_weights(net, self.spec, fold_index, device="cpu" if self.stream else self.device,
                          mmap=self.stream)

    def _prepare(self, net: Any) -> Any:
        import torch

        net = net.to(self.device).eval()
        if self.options.channels_last and not self.spec.is_clinical:
            net = net.to(memory_format=torch.channels_last_3d)
        return net

    def _refresh(self, k: int) -> None:
        """Stream mode: reload fold k's weights, re-hashing the file if it changed since start-up."""
        fold = self.spec.folds[k]
        if self._stat(fold.path) != self._stats[k]:
            if sha256_file(fold.path) != fold.sha256:
                raise ModelConfigurationError(f"member {self.spec.name} fold {k}: {fold.path.name} changed "
                                              "since start-up and no longer matches its checksum")
            self._stats[k] = self._stat(fold.path)
        self._load(self.nets[0], fold.path, fold_index=k)

    def fold_probabilities(self, array: np.ndarray) -> list[float]:
        import torch

        x = torch.from_numpy(array).to(self.device)
        if self.options.channels_last and not self.spec.is_clinical:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        out = []
        for k in range(len(self.spec.folds)):
            if self.stream:
                self._refresh(k)
            net = self.nets[0] if self.stream else self.nets[k]
            with torch.inference_mode():
                if self.options.precision == "bf16" and not self.spec.is_clinical:
                    with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                        logit = net(x)
                else:
                    logit = net(x)
            p = torch.sigmoid(logit.float()).reshape(-1)
            if p.numel() != 1 or not torch.isfinite(p).all():
                raise InferenceError(f"member {self.spec.name} fold {k}: network output is not one finite value")
            prob = float(p.item())
            out.append(self.spec.calibration.apply(prob) if self.spec.calibration else prob)
        return out


class _OpenVinoMember:
    """A member's fold networks on OpenVINO: compiled once (memory) or compiled from their IR
    each time they run and released afterwards (stream; bounds memory for full-size sets).

    f32 IR comes from the cache (converted from the fold weights when missing); INT8 IR from
    the model set's validated ``openvino_reduced_precision.int8`` entries.
    """

    def __init__(self, spec: MemberSpec, mode: str, reduced: ReducedPrecisionMode | None, cache: Any,
                 stream: bool, threads: int) -> None:
        from operators.networks import build_network
        from operators.openvino_engine import CompiledNetwork

        if mode == "int8" and (reduced is None or spec.name not in reduced.members):
            mode = "fp32"  # members without a validated INT8 IR (the clinical FCNN) run f32
        self.spec = spec
        self.mode = mode
        self.stream = stream
        self.threads = threads
        self.compile_s = 0.0
        self.sources: list[Any] = []
        shape = input_shape(spec)
        for k, fold in enumerate(spec.folds):
            if mode == "int8":
                assert reduced is not None
                self.sources.append(reduced.members[spec.name][k])
                continue

            def build(k: int = k) -> Any:
                net = build_network(spec.architecture, spec.hyperparameters)
                load_fold_weights(net, spec, k)
                return net.eval()

            fields = cache.entry_fields(fold.sha256, spec.architecture, spec.hyperparameters, shape)
            self.sources.append(cache.get(fields, build, f"member {spec.name} fold {k} ({fold.path.name})"))
        self._stats = [self._stat(s) for s in self.sources]
        self.compiled: list[Any] = []
        if not stream:
            for src in self.sources:
                net = CompiledNetwork(src, mode, threads)
                self.compile_s += net.compile_s
                self.compiled.append(net)

    @staticmethod
    def _stat(source: Any) -> tuple[int, ...]:
        if not isinstance(source, IrFiles):
            return ()
        a, b = source.xml.stat(), source.bin.stat()
        return a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns

    def _network(self, k: int) -> Any:
        """Stream mode: compile fold k now, re-verifying its IR if a file changed since start-up."""
        from operators.openvino_engine import CompiledNetwork

        source = self.sources[k]
        if isinstance(source, IrFiles) and self._stat(source) != self._stats[k]:
            verify_ir(source)
            self._stats[k] = self._stat(source)
        net = CompiledNetwork(source, self.mode, self.threads)
        self.compile_s += net.compile_s
        return net

    def fold_probabilities(self, array: np.ndarray) -> list[float]:
        out = []
        for k in range(len(self.spec.folds)):
            net = self._network(k) if self.stream else self.compiled[k]
            logit = net(array).reshape(-1)
            del net
            if logit.size != 1 or not np.isfinite(logit).all():
                raise InferenceError(f"member {self.spec.name} fold {k}: network output is not one finite value")
            prob = _sigmoid(float(logit[0]))
            out.append(self.spec.calibration.apply(prob) if self.spec.calibration else prob)
        return out


class EnsembleRunner:
    """Loads a model set once and predicts studies with all of its ensembles.

    Args:
        model_set: A loaded ``ModelSet`` or the path of a model set folder/manifest
            (loaded and checksummed here).
        options: Execution options (device, threads, residency, precision).

    Raises:
        ModelConfigurationError: Bad manifest, checksum mismatch or weights that do
            not fit their architecture (all detected here, at start-up).
    """

    def __init__(self, model_set: ModelSet | str | Path, options: RunnerOptions | None = None) -> None:
        import torch

        self.model_set = model_set if isinstance(model_set, ModelSet) else load_model_set(model_set)
        self.options = options or RunnerOptions()
        self.device = self._device(self.options.device)
        self.engine, self.precision, reduced = self._engine_and_precision()
        threads = self.options.num_threads or cpu_quota()
        if self.device.type == "cpu" and self.options.num_threads != 0:
            torch.set_num_threads(threads)
        needed = {m for e in self.model_set.ensembles.values() for m, w in e.weights.items() if w > 0}
        if self.precision == "int8":
            assert reduced is not None
            total_mb = sum(ir.bin.stat().st_size if m in reduced.members else f.path.stat().st_size
                           for m in needed for ir, f in zip(reduced.members.get(m, self.model_set.members[m].folds),
                                                            self.model_set.members[m].folds)) / 2**20
        else:
            total_mb = sum(f.path.stat().st_size for m in needed for f in self.model_set.members[m].folds) / 2**20
        residency = self.options.weights_residency
        if residency == "auto":
            residency = "memory" if total_mb <= self.options.memory_budget_mb else "stream"
        if residency not in ("memory", "stream"):
            raise ModelConfigurationError(f"weights_residency must be auto, memory or stream, got {residency!r}")
        self.residency = residency
        t0 = time.perf_counter()
        self.members: dict[str, Any]
        self.conversion_s = 0.0
        if self.engine == "openvino":
            from operators.openvino_engine import IrCache

            cache = IrCache(self.options.openvino_cache)
            self.members = {name: _OpenVinoMember(self.model_set.members[name], self.precision, reduced, cache,
                                                  stream=residency == "stream", threads=threads)
                            for name in sorted(needed)}
            self.conversion_s = cache.converted_s
            if cache.conversions:
                logger.info("converted %d fold networks to OpenVINO IR in %.1f s (cache %s)", cache.conversions,
                            cache.converted_s, cache.folder)
        else:
            shared: dict[str, Any] = {}
            self.members = {name: _Member(self.model_set.members[name], self.device, self.options,
                                          stream=residency == "stream", shared=shared) for name in sorted(needed)}
        self.load_s = time.perf_counter() - t0
        self.startup_compile_s = self.compile_s()
        self.last_timings: dict[str, float] = {}
        logger.info("loaded %d members (%.0f MB of weights, %s residency) on %s with %d threads in %.1f s "
                    "(compile %.1f s): engine %s", len(self.members), total_mb, residency, self.device, threads,
                    self.load_s, self.startup_compile_s, self.engine_description)

    def compile_s(self) -> float:
        """Seconds spent compiling OpenVINO networks so far (0 on PyTorch)."""
        return float(sum(getattr(m, "compile_s", 0.0) for m in self.members.values()))

    def _engine_and_precision(self) -> tuple[str, str, ReducedPrecisionMode | None]:
        """Resolve ``auto`` engine and ``reduced`` precision; check the precision is validated."""
        from operators.openvino_engine import cpu_has_native_bf16, describe_engine, resolve_engine

        opts = self.options
        ms = self.model_set
        engine = resolve_engine(opts.engine, self.device.type)
        precision = opts.precision
        if engine == "pytorch":
            if precision == "reduced":
                logger.warning("inference precision 'reduced' applies to OpenVINO; PyTorch runs fp32")
                precision = "fp32"
            if precision == "int8":
                raise ModelConfigurationError("inference precision int8 needs the OpenVINO engine")
            self.engine_description = describe_engine(engine, str(self.device), precision)
            return engine, precision, None
        if precision == "reduced":
            candidates = [m for m in ("int8", "bf16") if m in ms.reduced_precision
                          and (m != "bf16" or cpu_has_native_bf16())]
            if not candidates:
                logger.warning("inference precision 'reduced': model set %s has no reduced-precision mode validated "
                               "for this CPU; running fp32", ms.name)
            precision = candidates[0] if candidates else "fp32"
        reduced = None
        if precision != "fp32":
            reduced = ms.reduced_precision.get(precision)
            if reduced is None:
                raise ModelConfigurationError(
                    f"inference precision {precision} is not validated for model set {ms.name} "
                    f"({ms.manifest_path}: no openvino_reduced_precision.{precision}; see python -m training quantize)")
            if precision == "bf16" and not cpu_has_native_bf16():
                raise ModelConfigurationError("inference precision bf16: this CPU has no native bf16 support")
        self.engine_description = describe_engine(engine, precision=reduced.describe() if reduced else "fp32")
        return engine, precision, reduced

    @staticmethod
    def _device(name: str) -> "torch.device":
        import torch

        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ModelConfigurationError(f"device {name!r} requested but CUDA is not available")
        return dev

    def _array(self, member: MemberSpec, inputs: MemberInputs) -> tuple[np.ndarray | None, str | None]:
        return member_input_array(member, inputs)

    def member_fold_scores(self, inputs: MemberInputs) -> tuple[dict[str, list[float]], dict[str, str]]:
        """Run every member whose input is available.

        Returns:
            (member -> fold probabilities, member -> reason it was left out).
        """
        scores: dict[str, list[float]] = {}
        left_out: dict[str, str] = {}
        compile0, t_all = self.compile_s(), time.perf_counter()
        for name, member in self.members.items():
            x, reason = self._array(member.spec, inputs)
            if x is None:
                left_out[name] = reason or "input not available"
                logger.info("member %s left out: %s", name, left_out[name])
                continue
            t0 = time.perf_counter()
            scores[name] = member.fold_probabilities(x)
            logger.debug("member %s: %d folds in %.2f s", name, len(scores[name]), time.perf_counter() - t0)
        self.last_timings = {"total_s": time.perf_counter() - t_all, "compile_s": self.compile_s() - compile0}
        return scores, left_out

    def predict(self, inputs: MemberInputs) -> Prediction:
        """Predict one study with the primary ensemble (others in ``other_ensembles``).

        Raises:
            InferenceError: No member of the primary ensemble could run, or an
                input has the wrong shape or non-finite values.
        """
        scores, left_out = self.member_fold_scores(inputs)
        ms = self.model_set
        primary = self._finish(fuse(ms.primary_ensemble, scores, left_out, ms.members))
        for name, ens in ms.ensembles.items():
            if name == ms.primary:
                continue
            if ens.withheld:
                primary.withheld_ensembles[name] = ens.withheld
                continue
            try:
                primary.other_ensembles[name] = self._finish(fuse(ens, scores, left_out, ms.members))
            except InferenceError as exc:
                logger.warning("ensemble %s not reported: %s", name, exc.reason)
                primary.withheld_ensembles[name] = f"not computed for this study: {exc.reason}"
        logger.info("%s fused score %.3f (members used %d/%d, renormalised=%s)", primary.ensemble,
                    primary.fused_score, int(primary.agreement["members_used"]),
                    int(primary.agreement["members_total"]), primary.weights_renormalised)
        return primary

    def _finish(self, prediction: Prediction) -> Prediction:
        ms = self.model_set
        prediction.model_set_name = ms.name
        prediction.model_set_version = ms.version
        prediction.model_set_synthetic = ms.synthetic
        prediction.model_set_identity = ms.identity
        prediction.intended_use = ms.intended_use
        # How the threshold was chosen, when the manifest records it (a ``threshold:`` block
        # {value, rule, description, fitted_on, metrics}; a plain number records nothing).
        info = getattr(ms.ensembles.get(prediction.ensemble), "threshold_info", None)
        prediction.threshold_rule = ({"rule": info.rule, "description": info.description,
                                      "fitted_on": info.fitted_on, **dict(info.metrics)}
                                     if info is not None else {})
        prediction.inference_engine = self.engine_description
        return prediction


def _operator_class() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class EnsembleInferenceOperator(Operator):
        """Runs the model set's ensembles on one study.

        The model set is loaded and checksummed when the operator is created
        (application start-up), not at the first study.

        Named input:
            model_inputs: ``MemberInputs`` (arrays per input key + clinical data).

        Named output:
            prediction: ``Prediction`` of the primary ensemble (others inside it).
        """

        def __init__(self, fragment: Fragment, *args: Any, model_set: ModelSet | str | Path | None = None,
                     runner: EnsembleRunner | None = None, options: RunnerOptions | None = None,
                     **kwargs: Any) -> None:
            if runner is None:
                if model_set is None:
                    raise ModelConfigurationError("EnsembleInferenceOperator needs model_set or runner")
                runner = EnsembleRunner(model_set, options)
            self.runner = runner
            self.input_name = "model_inputs"
            self.output_name = "prediction"
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input(self.input_name)
            spec.output(self.output_name)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            inputs = op_input.receive(self.input_name)
            op_output.emit(self.runner.predict(inputs), self.output_name)

    return EnsembleInferenceOperator


__getattr__ = lazy_operator(globals(), "EnsembleInferenceOperator", _operator_class)
