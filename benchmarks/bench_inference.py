"""Inference cost of one study with full-size members at the published grids.

WAE-Net: 3 x ResNet3D-34 (128^3) x 5 folds + clinical FCNN x 5 folds;
eTSC-Net: 2 x EfficientNet3D-B0 (256 x 256 x 128) x 5 folds. Weights are random
(timing does not depend on them) but written to a real model set folder and
loaded by the app's ``EnsembleRunner`` (checksums included).

Each variant runs in its own subprocess so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own:

* ``eager``: plain eager PyTorch as a first implementation would do it: every
  fold model built and kept in memory, ``model.eval()`` + ``torch.no_grad()``,
  fp32, torch's default thread count. The reference for every difference.
* ``default``: what the app does by default (``RunnerOptions(device="cpu")``): on
  CPU with OpenVINO installed, f32 OpenVINO IR (converted once into the IR
  cache before timing), threads = the cgroup CPU quota, fold networks compiled
  from their IR when they run (stream residency: the full-size set exceeds the
  memory budget); compile time is inside the study time and also reported alone.
* ``reduced``: ``default`` with ``precision="reduced"``: the fastest
  reduced-precision mode validated for the set (INT8 IR made by
  ``training.quantize`` with 1 calibration and 1 validation study, before timing).
* ``pytorch``: the app's PyTorch path (``engine="pytorch"``: inference mode,
  quota threads, channels-last, streamed folds), for comparison.

Conversion and quantisation (one-time per weights) are timed and printed apart.
GFLOP/s = the study's FLOP (counted by ``torch.utils.flop_counter`` on the meta
device) / the median study time.

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
VARIANTS = ("eager", "default", "reduced", "pytorch")
CALIBRATION_SEEDS = (1000,)
VALIDATION_SEEDS = (2000,)


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
    """Run in this (fresh) process; returns times, fold probabilities and peak RSS."""
    import torch

    from operators.inference import EnsembleRunner, RunnerOptions, fuse
    from operators.model_manifest import load_model_set

    model_set = load_model_set(model_set_dir, verify_checksums=(variant != "eager"))
    times, compile_s = [], []
    scores: dict[str, list[float]] = {}
    engine, startup_compile_s = f"pytorch {torch.__version__} eager", 0.0
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
            compile_s.append(0.0)
        threads = torch.get_num_threads()
    else:
        opts = {"default": RunnerOptions(device="cpu"),
                "reduced": RunnerOptions(device="cpu", precision="reduced"),
                "pytorch": RunnerOptions(device="cpu", engine="pytorch")}[variant]
        t0 = time.perf_counter()
        runner = EnsembleRunner(model_set, opts)
        load_s = time.perf_counter() - t0
        engine, startup_compile_s = runner.engine_description, runner.startup_compile_s
        threads = torch.get_num_threads()
        for r in range(repeats):
            inputs = study_inputs(r)
            t0 = time.perf_counter()
            scores, _ = runner.member_fold_scores(inputs)
            for ens in model_set.ensembles.values():
                fuse(ens, scores, {})
            times.append(time.perf_counter() - t0)
            compile_s.append(runner.last_timings.get("compile_s", 0.0))
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)
    return {"variant": variant, "engine": engine, "times_s": times, "median_s": float(np.median(times)),
            "load_s": load_s, "startup_compile_s": startup_compile_s, "study_compile_s": float(np.median(compile_s)),
            "peak_rss_gib": rss_gb, "threads": threads, "probabilities_last_repeat": scores}


def prepare(model_set_dir: Path, reduced: bool) -> dict[str, Any]:
    """One-time work before timing: f32 IR into the cache; INT8 IR + validation when ``reduced``."""
    from operators.inference import EnsembleRunner, RunnerOptions
    from operators.model_manifest import load_model_set

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    runner = EnsembleRunner(model_set_dir, RunnerOptions(device="cpu", weights_residency="stream"))
    out["convert_s"] = runner.conversion_s
    out["prepare_f32_s"] = time.perf_counter() - t0
    del runner
    if reduced and "int8" not in load_model_set(model_set_dir).reduced_precision:
        from training.quantize import QuantizationError, quantize_model_set

        t0 = time.perf_counter()
        try:
            record = quantize_model_set(model_set_dir, [study_inputs(s) for s in CALIBRATION_SEEDS],
                                        [study_inputs(s) for s in VALIDATION_SEEDS],
                                        source=f"bench_inference random studies, seeds {list(VALIDATION_SEEDS)}")
        except QuantizationError as exc:
            out["reduced_not_validated"] = str(exc)
        else:
            out["int8_validation_max_abs_probability_diff"] = record["validation"]["max_abs_probability_diff"]
        out["quantise_and_validate_s"] = time.perf_counter() - t0
    return out


def study_gflop() -> float:
    """FLOP of one study's forwards (GFLOP), counted on the meta device (no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from operators.networks import build_network

    total = 0.0
    for arch, shape, n in (("resnet3d-34", (1, 1, 128, 128, 128), 15), ("efficientnet3d-b0", (1, 1, 256, 256, 128), 10),
                           ("clinical-fcnn", (1, 4), 5)):
        with torch.device("meta"):
            net = build_network(arch).eval()
            x = torch.empty(*shape)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(x)
        total += n * counter.get_total_flops()
    return total / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1, help="studies per variant (median reported)")
    p.add_argument("--variants", nargs="*", default=["eager", "default", "reduced"], choices=VARIANTS)
    p.add_argument("--model-set", type=Path, default=None, help="where to keep the random full-size set")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_prepare", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._child:
        print("RESULT " + json.dumps(run_variant(args._child, args.model_set, args.repeats)))
        return 0
    if args._prepare:
        print("RESULT " + json.dumps(prepare(args.model_set, args._prepare == "reduced")))
        return 0

    folder = args.model_set or Path(tempfile.gettempdir()) / "tsc-bench-full-size-set"
    env = dict(os.environ)
    env.setdefault("TSC_OPENVINO_CACHE", str(folder.parent / f"{folder.name}-openvino-cache"))
    t0 = time.perf_counter()
    build_full_size_set(folder)
    size_gb = sum(f.stat().st_size for f in (folder / "weights").iterdir()) / 2**30
    print(f"model set: {folder} ({size_gb:.2f} GiB of weights; built/reused in {time.perf_counter() - t0:.0f} s); "
          f"OpenVINO IR cache: {env['TSC_OPENVINO_CACHE']}", flush=True)

    def child(flag: str, value: str) -> dict[str, Any] | None:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_inference", flag, value,
                               "--model-set", str(folder), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=False, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{value}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            return None
        return json.loads(line[len("RESULT "):])

    gflop = study_gflop()
    prepared: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps({"variants": results, "repeats": args.repeats, "weights_gib": size_gb,
                                             "study_gflop": gflop, "prepared": prepared,
                                             "cpus_visible": os.cpu_count()}, indent=1))

    # eager first: it needs no preparation, and it is the reference of every difference.
    for v in sorted(args.variants, key=lambda name: name != "eager"):
        if v in ("default", "reduced") and not prepared.get("f32" if v == "default" else "reduced"):
            step = child("--_prepare", "reduced" if v == "reduced" else "f32") or {}
            prepared.update(step)
            prepared["f32"] = True
            prepared["reduced"] = prepared.get("reduced") or v == "reduced"
            print("one-time preparation (not in the study times): " +
                  ", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k}: {val}"
                            for k, val in step.items()), flush=True)
        if v == "reduced" and prepared.get("reduced_not_validated"):
            # precision "reduced" would silently run f32: a reduced variant is only timed once validated
            print(f"  reduced: not timed, no reduced-precision mode validated ({prepared['reduced_not_validated']})")
            continue
        r = child("--_child", v)
        if r is None:
            continue
        results[v] = r
        print(f"  {v}: median {r['median_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB ({r['engine']})", flush=True)
        save()

    base = results.get("eager")
    print(f"\nOne study, full-size WAE-Net (3 x ResNet3D-34 x 5 + FCNN x 5, 128^3) + eTSC-Net "
          f"(2 x EfficientNet3D-B0 x 5, 256x256x128), {gflop:.0f} GFLOP; CPU, {os.cpu_count()} CPUs visible; "
          f"repeats={args.repeats}")
    print(f"{'variant':9s} {'threads':>7s} {'median s':>9s} {'speed-up':>8s} {'GFLOP/s':>8s} {'load s':>7s} "
          f"{'compile s':>9s} {'peak RSS GiB':>12s} {'max |dp|':>9s}  engine")
    for v, r in results.items():
        r["speedup_vs_eager"] = base["median_s"] / r["median_s"] if base else float("nan")
        if base:
            ref = base["probabilities_last_repeat"]
            r["max_abs_probability_diff"] = max(abs(a - b) for m in ref
                                                for a, b in zip(ref[m], r["probabilities_last_repeat"][m]))
        else:
            r["max_abs_probability_diff"] = float("nan")
        r["gflop_per_s"] = gflop / r["median_s"]
        print(f"{v:9s} {r['threads']:7d} {r['median_s']:9.1f} {r['speedup_vs_eager']:8.2f} {r['gflop_per_s']:8.0f} "
              f"{r['load_s']:7.1f} {r['study_compile_s']:9.1f} {r['peak_rss_gib']:12.2f} "
              f"{r['max_abs_probability_diff']:9.1e}  {r['engine']}")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
