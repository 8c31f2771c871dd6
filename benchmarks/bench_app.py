"""Whole-app wall time for one synthetic study, and the share of each stage.

Two measurements, each the median of ``--repeats`` runs:
1. ``python -m app -i STUDY -o OUT -m MODELS`` in a fresh process (process start,
   imports, graph, models loaded, all outputs): what a MONAI Deploy host sees;
2. the same stages in process (``app.pipeline.StudyPipeline``, models already
   loaded, as in the DICOM node's warm worker), with seconds per stage.

    python -m benchmarks.bench_app [--repeats 5] [--models models] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args(argv)

    from app.config import AppConfig
    from app.pipeline import StudyPipeline
    from synthetic import StudyOptions, generate_study

    work = Path(tempfile.mkdtemp(prefix="bench_app_"))
    study = generate_study(work / "studies", args.seed, StudyOptions(decoys=True, descriptions="random"))
    config = AppConfig(models=args.models, brain_extraction="fallback")

    process_s = []
    for k in range(args.repeats):
        t0 = time.perf_counter()
        cmd = ["bash", "-c", 'ulimit -s 32768; exec "$0" -m app "$@"', sys.executable, "-i", str(study.input_dir),
               "-o", str(work / f"out{k}"), "-m", str(args.models)]
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        process_s.append(time.perf_counter() - t0)
        if result.returncode != 0:
            print(result.stdout, result.stderr, file=sys.stderr)
            return 1

    t0 = time.perf_counter()
    pipeline = StudyPipeline(config)
    load_s = time.perf_counter() - t0
    stage_runs = []
    for k in range(args.repeats):
        result = pipeline.run(study.input_dir, work / f"warm{k}")
        if not result.analysed:
            print(f"not analysed: {result.error}", file=sys.stderr)
            return 1
        stage_runs.append(result.timings_s)
    stages = {name: statistics.median(run[name] for run in stage_runs) for name in stage_runs[0]}
    total = sum(stages.values())

    print(f"whole app, fresh process (python -m app), median of {args.repeats}: "
          f"{statistics.median(process_s):.1f} s (min {min(process_s):.1f}, max {max(process_s):.1f})")
    print(f"warm pipeline (models loaded once in {load_s:.1f} s), median of {args.repeats}: {total:.1f} s")
    print(f"{'stage':<16}{'median s':>10}{'share':>8}")
    for name, seconds in stages.items():
        print(f"{name:<16}{seconds:>10.2f}{seconds / total:>8.1%}")
    if args.json:
        args.json.write_text(json.dumps({"process_s": process_s, "model_load_s": load_s, "stages_s": stages}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
