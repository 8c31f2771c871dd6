"""Whole-app wall time for one synthetic study, and the share of each stage.

Two measurements, each the median of ``--repeats`` runs:
1. ``python -m app -i STUDY -o OUT -m MODELS`` in a fresh process (process start,
   imports, graph, models loaded, all outputs): what a MONAI Deploy host sees;
2. the same stages in process (``app.pipeline.StudyPipeline``, models already
   loaded, as in the DICOM node's warm worker), with seconds per stage.

    python -m benchmarks.bench_app [--repeats 5] [--models models] [--json out.json]

``--full-size``: the same with a full-size model set at the published grids (random
weights, ``benchmarks.bench_inference.build_full_size_set``: 3 x ResNet3D-34 x 5 at
128^3, FCNN x 5, 2 x EfficientNet3D-B0 x 5 at 256 x 256 x 128), the app's default
engine (OpenVINO f32 on CPU; the IR cache is filled once before timing and that
time is printed apart), and the configured brain extraction (``auto``: HD-BET when
its weights are installed; the method used is printed). Peak RSS is the largest of
the fresh app processes.

    python -m benchmarks.bench_app --full-size --repeats 3 [--warm-repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--full-size", action="store_true", help="full-size random model set at the published grids")
    ap.add_argument("--full-size-set", type=Path, default=Path(tempfile.gettempdir()) / "tsc-bench-full-size-set",
                    help="where the full-size set is kept (built once)")
    ap.add_argument("--warm-repeats", type=int, default=None, help="in-process runs for the stage shares "
                                                                    "(default: --repeats)")
    ap.add_argument("--brain-extraction", default=None, choices=["auto", "hd-bet", "fallback"],
                    help="default: fallback, or auto with --full-size")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    prepared_s = None
    if args.full_size:
        from benchmarks.bench_inference import build_full_size_set

        args.models = build_full_size_set(args.full_size_set)
        env.setdefault("TSC_OPENVINO_CACHE", str(args.full_size_set.parent / f"{args.full_size_set.name}-openvino-cache"))
        os.environ["TSC_OPENVINO_CACHE"] = env["TSC_OPENVINO_CACHE"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "app", "prepare-engine", "-m", str(args.models)], cwd=REPO, env=env,
                       check=True, capture_output=True)
        prepared_s = time.perf_counter() - t0
        print(f"full-size set {args.models}; OpenVINO IR cache {env['TSC_OPENVINO_CACHE']} "
              f"(prepared/verified in {prepared_s:.0f} s, not in the times below)", flush=True)
    method = args.brain_extraction or ("auto" if args.full_size else "fallback")
    warm_repeats = args.warm_repeats if args.warm_repeats is not None else args.repeats

    from app.config import AppConfig
    from app.pipeline import StudyPipeline
    from synthetic import StudyOptions, generate_study

    work = Path(tempfile.mkdtemp(prefix="bench_app_"))
    study = generate_study(work / "studies", args.seed, StudyOptions(decoys=True, descriptions="random"))
    config = AppConfig(models=args.models, brain_extraction=method)
    config_file = work / "config.yaml"
    config_file.write_text(f"brain_extraction: {method}\n", encoding="utf-8")

    process_s = []
    for k in range(args.repeats):
        t0 = time.perf_counter()
        cmd = ["bash", "-c", 'ulimit -s 32768; exec "$0" -m app "$@"', sys.executable, "-i", str(study.input_dir),
               "-o", str(work / f"out{k}"), "-m", str(args.models), "-c", str(config_file)]
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
        process_s.append(time.perf_counter() - t0)
        print(f"  fresh process {k + 1}/{args.repeats}: {process_s[-1]:.1f} s", flush=True)
        if result.returncode != 0:
            print(result.stdout, result.stderr, file=sys.stderr)
            return 1

    t0 = time.perf_counter()
    pipeline = StudyPipeline(config)
    load_s = time.perf_counter() - t0
    peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    stage_runs = []
    for k in range(max(1, warm_repeats)):
        result = pipeline.run(study.input_dir, work / f"warm{k}")
        if not result.analysed:
            print(f"not analysed: {result.error}", file=sys.stderr)
            return 1
        stage_runs.append(result.timings_s)
    engine = result.prediction.inference_engine if result.prediction else ""
    brain = "hd-bet" if getattr(pipeline.extractor, "hdbet", None) is not None else f"fallback ({method})"
    stages = {name: statistics.median(run[name] for run in stage_runs) for name in stage_runs[0]}
    total = sum(stages.values())

    print(f"whole app, fresh process (python -m app, start to SR written), median of {args.repeats}: "
          f"{statistics.median(process_s):.1f} s (min {min(process_s):.1f}, max {max(process_s):.1f}); "
          f"peak RSS {peak_rss_gib:.2f} GiB")
    print(f"inference engine: {engine}; brain extraction: {brain}")
    print(f"warm pipeline (models loaded once in {load_s:.1f} s), median of {len(stage_runs)}: {total:.1f} s")
    print(f"{'stage':<16}{'median s':>10}{'share':>8}")
    for name, seconds in stages.items():
        print(f"{name:<16}{seconds:>10.2f}{seconds / total:>8.1%}")
    if args.json:
        args.json.write_text(json.dumps({"process_s": process_s, "process_median_s": statistics.median(process_s),
                                         "peak_rss_gib": peak_rss_gib, "model_load_s": load_s, "stages_s": stages,
                                         "stage_shares": {n: v / total for n, v in stages.items()},
                                         "inference_engine": engine, "brain_extraction": brain,
                                         "full_size": args.full_size, "engine_prepare_s": prepared_s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
