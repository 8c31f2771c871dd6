"""Inference cost of one study with full-size members at the published grids.

WAE-Net: 3 x ResNet3D-34 (128^3) x 5 folds + clinical FCNN x 5 folds;
eTSC-Net: 2 x EfficientNet3D-B0 (256 x 256 x 128) x 5 folds. Weights are random
(timing does not depend on them) but written to a real model set folder and
loaded by the app's ``EnsembleRunner`` (checksums included).

Each variant runs in its own subprocess so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own:

* ``eager``: plain eager PyTorch as a first implementation would do it: every
  fold model built and kept in memory, ``model.eval()`` + ``torch.no_grad()``,
  fp32, torch's default thread count.
* ``optimised``: the app's runner defaults: ``torch.inference_mode``, thread
  count = the cgroup CPU quota, ``channels_last_3d`` tensors, fold weights
  streamed (memory-mapped into one network per architecture) instead of all 25
  fold models kept resident.
* ``no_channels_last``: ``optimised`` without ``channels_last_3d`` (to show that step).
* ``bf16``: ``optimised`` + bf16 autocast (opt-in: on CPUs without native bf16 it is
  far slower). Scores of every variant are compared with eager fp32; a variant is
  only acceptable where every score stays within 1e-3.

Run: ``python -m benchmarks.bench_inference [--repeats N] [--variants ...] [--json out.json]``.
The machine this runs on may be shared; the table says how many CPUs were used.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WAE_GRID = {"shape": [128, 128, 128], "spacing_mm": [1.5, 1.5, 1.5]}
ETSC_GRID = {"shape": [256, 256, 128], "spacing_mm": [0.75, 0.75, 1.5]}
VARIANTS = ("eager", "no_channels_last", "optimised", "bf16")


def build_full_size_set(folder: Path, folds: int = 5, seed: int = 0) -> Path:
    """Write a full-size model set with random weights (reused when already there)."""
    import torch

    from operators.networks import build_network
    from training.export import MemberExport, ModelSetExport, ensembles_mapping, write_model_set

    if (folder / "manifest.yaml").is_file():
        return folder
    members = {"t2_wae": ("resnet3d-34", "t2@wae"), "flair_wae": ("resnet3d-34", "flair@wae"),
               "flair3_wae": ("resnet3d-34", "flair3@wae"), "clinical": ("clinical-fcnn", "clinical"),
               "t2_etsc": ("efficientnet3d-b0", "t2@etsc"), "flair_etsc": ("efficientnet3d-b0", "flair@etsc")}
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    exports = []
    for i, (name, (arch, key)) in enumerate(members.items()):
        files = []
        for k in range(folds):
            torch.manual_seed(seed + 100 * i + k)
            net = build_network(arch)
            if arch == "clinical-fcnn":
                net.input_mean.copy_(torch.tensor([20.0, 40.0, 0.5, 0.5]))
                net.input_std.copy_(torch.tensor([25.0, 40.0, 0.5, 0.5]))
            p = src / f"{name}.{k}.pt"
            torch.save(net.state_dict(), p)
            files.append(p)
        exports.append(MemberExport(name, arch, {}, key, files))
    meta = ModelSetExport(
        "benchmark-random-full-size", "0.0.0", True, "Benchmark only: random weights.",
        {"wae": WAE_GRID, "etsc": ETSC_GRID},
        ensembles_mapping({"WAE-Net": {"t2_wae": 0.25, "flair_wae": 0.25, "flair3_wae": 0.25, "clinical": 0.25},
                           "eTSC-Net": {"t2_etsc": 0.6, "flair_etsc": 0.4}}), "WAE-Net")
    write_model_set(folder, meta, exports)
    for p in src.iterdir():
        p.unlink()
    src.rmdir()
    return folder


def study_inputs(seed: int):
    """Brain-like random inputs on both grids (values in [0, 1], zero outside an ellipsoid)."""
    from operators.inference import MemberInputs

    rng = np.random.default_rng(seed)
    images = {}
    for grid, shape in (("wae", WAE_GRID["shape"]), ("etsc", ETSC_GRID["shape"])):
        axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
        inside = sum(a ** 2 for a in axes) < 0.7
        for contrast in ("t2", "flair", "flair3"):
            img = rng.random(shape, dtype=np.float32) * inside
            images[f"{contrast}@{grid}"] = img
    return MemberInputs(images=images, clinical=[14.0, 30.0, 1.0, 0.0])


def _eager_load(model_set) -> dict[str, list[Any]]:
    """Plain eager PyTorch: every fold model built and kept resident, fp32, default threads."""
    import torch

    from operators.networks import build_network

    nets: dict[str, list[Any]] = {}
    for name, m in model_set.members.items():
        nets[name] = []
        for f in m.folds:
            net = build_network(m.architecture, m.hyperparameters)
            net.load_state_dict(torch.load(f.path, map_location="cpu", weights_only=True))
            nets[name].append(net.eval())
    return nets


def _eager_scores(model_set, nets, inputs) -> dict[str, list[float]]:
    """eval() + no_grad(), contiguous tensors."""
    import torch

    scores = {}
    for name, m in model_set.members.items():
        if m.is_clinical:
            x = torch.tensor([inputs.clinical], dtype=torch.float32)
        else:
            x = torch.from_numpy(inputs.images[m.input_key])[None, None]
        with torch.no_grad():
            scores[name] = [float(torch.sigmoid(n(x)).item()) for n in nets[name]]
    return scores


def run_variant(variant: str, model_set_dir: Path, repeats: int) -> dict[str, Any]:
    """Run in this (fresh) process; returns times, scores and peak RSS."""
    import torch

    from operators.inference import EnsembleRunner, RunnerOptions, fuse
    from operators.model_manifest import load_model_set

    model_set = load_model_set(model_set_dir, verify_checksums=(variant != "eager"))
    times, load_s = [], 0.0
    scores: dict[str, list[float]] = {}
    if variant == "eager":
        t0 = time.perf_counter()
        nets = _eager_load(model_set)
        load_s = time.perf_counter() - t0
        for r in range(repeats):
            inputs = study_inputs(r)
            t0 = time.perf_counter()
            scores = _eager_scores(model_set, nets, inputs)
            for ens in model_set.ensembles.values():
                fuse(ens, scores, {})
            times.append(time.perf_counter() - t0)
        threads = torch.get_num_threads()
    else:
        opts = RunnerOptions(device="cpu", weights_residency="stream", channels_last=variant != "no_channels_last",
                             precision="bf16" if variant == "bf16" else "fp32")
        t0 = time.perf_counter()
        runner = EnsembleRunner(model_set, opts)
        load_s = time.perf_counter() - t0
        threads = torch.get_num_threads()
        for r in range(repeats):
            inputs = study_inputs(r)
            t0 = time.perf_counter()
            scores, _ = runner.member_fold_scores(inputs)
            for ens in model_set.ensembles.values():
                fuse(ens, scores, {})
            times.append(time.perf_counter() - t0)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)
    return {"variant": variant, "times_s": times, "median_s": float(np.median(times)), "load_s": load_s,
            "peak_rss_gib": rss_gb, "threads": threads, "scores_last_repeat": scores}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1, help="studies per variant (median reported)")
    p.add_argument("--variants", nargs="*", default=["eager", "no_channels_last", "optimised"], choices=VARIANTS)
    p.add_argument("--model-set", type=Path, default=None, help="where to keep the random full-size set")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._child:
        result = run_variant(args._child, args.model_set, args.repeats)
        print("RESULT " + json.dumps(result))
        return 0

    folder = args.model_set or Path(tempfile.gettempdir()) / "tsc-bench-full-size-set"
    t0 = time.perf_counter()
    build_full_size_set(folder)
    size_gb = sum(f.stat().st_size for f in (folder / "weights").iterdir()) / 2**30
    print(f"model set: {folder} ({size_gb:.2f} GiB of weights; built/reused in {time.perf_counter() - t0:.0f} s)")
    results = {}
    for v in args.variants:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_inference", "--_child", v,
                               "--model-set", str(folder), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{v}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        results[v] = json.loads(line[len("RESULT "):])
        r = results[v]
        print(f"  {v}: median {r['median_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)

    base = results.get("eager")
    print(f"\nOne study, full-size WAE-Net (3 x ResNet3D-34 x 5 + FCNN x 5, 128^3) + eTSC-Net "
          f"(2 x EfficientNet3D-B0 x 5, 256x256x128); CPU, {os.cpu_count()} CPUs visible; repeats={args.repeats}")
    print(f"{'variant':15s} {'threads':>7s} {'median s':>9s} {'speed-up':>8s} {'load s':>7s} {'peak RSS GiB':>12s} "
          f"{'max |dscore|':>12s}")
    for v, r in results.items():
        speedup = base["median_s"] / r["median_s"] if base else float("nan")
        if base:
            diff = max(abs(a - b) for m in base["scores_last_repeat"]
                       for a, b in zip(base["scores_last_repeat"][m], r["scores_last_repeat"][m]))
        else:
            diff = float("nan")
        r["speedup_vs_eager"] = speedup
        r["max_abs_score_diff_vs_eager"] = diff
        r["scores_within_1e-3"] = bool(diff <= 1e-3)
        print(f"{v:15s} {r['threads']:7d} {r['median_s']:9.1f} {speedup:8.2f} {r['load_s']:7.1f} "
              f"{r['peak_rss_gib']:12.2f} {diff:12.2e}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "repeats": args.repeats,
                                         "weights_gib": size_gb}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
