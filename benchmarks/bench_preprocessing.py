"""Whole preprocessing of one synthetic study (fallback brain extraction): median of repeats.

Run: ``python -m benchmarks.bench_preprocessing [--repeats 5] [--seed 7] [--json out.json]``.
The study is generated once; ``preprocess`` (registration, brain extraction,
normalisation, FLAIR3, quality checks) is timed ``--repeats`` times, wall and CPU,
with the per-step timings of the median run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from operators.brain_extraction import BrainExtractor
from operators.datatypes import Role, Volume
from operators.preprocessing import PreprocessingConfig, preprocess


def run(repeats: int, seed: int) -> dict:
    from synthetic import StudyOptions, generate_study

    with tempfile.TemporaryDirectory(prefix="bench_pre_") as tmp:
        study = generate_study(Path(tmp), seed, StudyOptions(decoys=False))
    t2 = Volume(study.t2_image, study.t2_series_uid, Role.T2)
    flair = Volume(study.flair_image, study.flair_series_uid, Role.FLAIR)
    age = study.subject.age_at_imaging_months
    extractor = BrainExtractor("fallback")
    config = PreprocessingConfig(fail_on_quality=False)
    runs = []
    print(f"{'run':>4} {'wall s':>7} {'cpu s':>7}  steps (s)")
    for i in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = preprocess(t2, flair, extractor=extractor, patient_age_months=age, config=config)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        runs.append({"wall_s": wall, "cpu_s": cpu, "steps_s": result.timings_s,
                     "flags": [f.code for f in result.flags]})
        print(f"{i:>4} {wall:7.2f} {cpu:7.2f}  {result.timings_s}", flush=True)
    summary = {"repeats": repeats, "seed": seed,
               "wall_median_s": statistics.median(r["wall_s"] for r in runs),
               "cpu_median_s": statistics.median(r["cpu_s"] for r in runs)}
    print(f"\nmedian wall {summary['wall_median_s']:.2f} s, median CPU {summary['cpu_median_s']:.2f} s "
          f"(flags: {runs[0]['flags']})")
    return {"summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = run(args.repeats, args.seed)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
