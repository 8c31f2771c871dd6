"""How much faster INT8 runs than f32 on this CPU: the ceiling of a ``reduced`` mode, before any validation.

Quantises one fold of each image architecture of the full-size benchmark set
(``benchmarks.bench_inference.build_full_size_set``: ResNet3D-34 at 128^3,
EfficientNet3D-B0 at 256 x 256 x 128) with NNCF (performance preset, 3 random
calibration inputs, as ``training.quantize`` does with its cases), then times one
forward of the f32 IR and of the INT8 IR (median of ``--repeats``, 2 threads, the
app's compile settings). Accuracy is not judged here (``bench_inference``'s
``reduced`` variant validates a whole set against the 1e-3 tolerance): this says
whether a validated INT8 set could reach a target at all on this CPU.

    python -m benchmarks.bench_int8_speed [--repeats 3] [--threads 2] [--json OUT]

Needs ``nncf`` (``pip install nncf``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {"resnet3d-34": (1, 1, 128, 128, 128), "efficientnet3d-b0": (1, 1, 256, 256, 128)}


def _median_forward_s(compiled, x: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compiled(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-set", type=Path, default=Path(tempfile.gettempdir()) / "tsc-bench-full-size-set")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from benchmarks.bench_inference import build_full_size_set
    from operators.inference import _OpenVinoMember
    from operators.model_manifest import IrFiles, load_model_set
    from operators.openvino_engine import CompiledNetwork, IrCache, import_openvino

    ov = import_openvino()
    import nncf

    model_set = load_model_set(build_full_size_set(a.model_set))
    cache = IrCache(a.model_set.parent / f"{a.model_set.name}-openvino-cache")
    core = ov.Core()
    result: dict[str, dict[str, float]] = {}
    for architecture, shape in SHAPES.items():
        spec = next(m for m in model_set.members.values() if m.architecture == architecture)
        source = _OpenVinoMember(spec, "fp32", None, cache, stream=True, threads=a.threads).sources[0]
        read = (lambda: core.read_model(str(source.xml))) if isinstance(source, IrFiles) else (lambda: source)
        rng = np.random.default_rng(0)
        inputs = [rng.random(shape, dtype=np.float32) for _ in range(3)]
        t0 = time.perf_counter()
        quantised = nncf.quantize(read(), nncf.Dataset(inputs), subset_size=len(inputs),
                                  preset=nncf.QuantizationPreset.PERFORMANCE)
        quantise_s = time.perf_counter() - t0
        f32_s = _median_forward_s(CompiledNetwork(read(), "fp32", a.threads), inputs[0], a.repeats)
        int8_s = _median_forward_s(CompiledNetwork(quantised, "int8", a.threads), inputs[0], a.repeats)
        result[architecture] = {"f32_median_s": round(f32_s, 3), "int8_median_s": round(int8_s, 3),
                                "int8_speed_up": round(f32_s / int8_s, 2), "quantise_s": round(quantise_s, 1)}
        print(architecture, json.dumps(result[architecture]), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"threads": a.threads, "repeats": a.repeats, "architectures": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
