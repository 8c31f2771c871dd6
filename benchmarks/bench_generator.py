"""Benchmark: synthetic study generation time, and the label model's best achievable AUC.

Part 1 times ``generate_study`` with default options (T2 384x384x24, FLAIR
320x320x24, localizer, T1, derived FLAIR copy, DWI; classic encoding) for
``--repeats`` consecutive seeds, each into a fresh folder, and reports the median
wall-clock and CPU seconds (and the same for the other encodings with
``--encodings``). Part 2 draws ``--subjects`` subjects (no images rendered) and
reports the AUC of the exact posterior P(uncontrolled | observables): all
variables, clinical only, imaging only.

Run: ``python -m benchmarks.bench_generator [--repeats 5] [--subjects 500] [--encodings classic,enhanced]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from synthetic import StudyOptions, best_achievable_auc, generate_study


def time_generation(repeats: int, encoding: str, first_seed: int = 1000) -> dict[str, object]:
    wall, cpu, files = [], [], 0
    for seed in range(first_seed, first_seed + repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            study = generate_study(Path(tmp), seed, StudyOptions(encoding=encoding))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            files = sum(len(v) for v in study.files.values())
    return {"encoding": encoding, "repeats": repeats, "files_per_study": files,
            "median_wall_s": round(statistics.median(wall), 3), "median_cpu_s": round(statistics.median(cpu), 3),
            "min_wall_s": round(min(wall), 3), "max_wall_s": round(max(wall), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--auc-seed", type=int, default=0)
    parser.add_argument("--encodings", default="classic", help="comma list (classic,enhanced,jpeg2000,jpegls,rle)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    timings = [time_generation(args.repeats, enc.strip()) for enc in args.encodings.split(",") if enc.strip()]
    t0 = time.perf_counter()
    auc = best_achievable_auc(args.subjects, args.auc_seed)
    auc["seconds"] = round(time.perf_counter() - t0, 2)

    print("Generation of one full study (T2 + FLAIR + 4 decoys), seconds")
    print(f"{'encoding':<10} {'files':>6} {'median wall':>12} {'median cpu':>11} {'min':>7} {'max':>7}")
    for t in timings:
        print(f"{t['encoding']:<10} {t['files_per_study']:>6} {t['median_wall_s']:>12.2f} {t['median_cpu_s']:>11.2f} "
              f"{t['min_wall_s']:>7.2f} {t['max_wall_s']:>7.2f}")
    print(f"\nBest achievable AUC (exact posterior), {auc['n']} subjects, seed {auc['seed']}, "
          f"{auc['n_uncontrolled']} uncontrolled:")
    print(f"  all variables {auc['auc_all']:.3f}   clinical only {auc['auc_clinical']:.3f}   "
          f"imaging only {auc['auc_imaging']:.3f}   ({auc['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps({"generation": timings, "auc": auc}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
