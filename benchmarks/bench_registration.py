"""Registration accuracy/speed and fallback brain-extraction Dice on synthetic studies.

For each of N generator studies (known T2-to-FLAIR transform, brain mask):
registration TRE over the true brain voxels of the FLAIR grid
(``||T_est(p) - T_true(p)||``, mean per study), wall and CPU time of the
registration, and Dice of the weight-free brain extraction (run on the FLAIR and
the T2 registered by the estimated transform) against the generator's mask.

Run: ``python -m benchmarks.bench_registration [--studies 50] [--seed0 1000] [--json out.json]``.
Prints a per-study table and the medians / worst values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from operators.brain_extraction import fallback_brain_mask
from operators.registration import register_t2_to_flair, target_registration_error


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def run(n_studies: int, seed0: int) -> dict:
    from synthetic import StudyOptions, generate_study

    rows = []
    print(f"{'seed':>6} {'start mm':>8} {'TRE mm':>7} {'max mm':>7} {'reg s':>6} {'reg cpu':>7} "
          f"{'Dice':>6} {'bet s':>6} {'NMI':>6}")
    with tempfile.TemporaryDirectory(prefix="bench_reg_") as tmp:
        for i in range(n_studies):
            seed = seed0 + i
            study = generate_study(Path(tmp) / str(seed), seed, StudyOptions(decoys=False))
            truth_mask = study.brain_mask
            start = float(target_registration_error(sitk.Euler3DTransform(), study.t2_to_flair, truth_mask).mean())
            w0, c0 = time.perf_counter(), time.process_time()
            reg = register_t2_to_flair(study.t2_image, study.flair_image)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            tre = target_registration_error(reg.transform, study.t2_to_flair, truth_mask)
            b0 = time.perf_counter()
            mask = fallback_brain_mask(study.flair_image, reg.t2_in_flair)
            bet_s = time.perf_counter() - b0
            d = dice(sitk.GetArrayViewFromImage(mask) > 0, sitk.GetArrayViewFromImage(truth_mask) > 0)
            row = {"seed": seed, "start_mm": start, "tre_mean_mm": float(tre.mean()), "tre_max_mm": float(tre.max()),
                   "registration_wall_s": wall, "registration_cpu_s": cpu, "dice": d, "bet_wall_s": bet_s,
                   "nmi": reg.nmi}
            rows.append(row)
            print(f"{seed:>6} {start:8.2f} {row['tre_mean_mm']:7.3f} {row['tre_max_mm']:7.2f} {wall:6.1f} "
                  f"{cpu:7.1f} {d:6.3f} {bet_s:6.2f} {reg.nmi:6.3f}", flush=True)
            for p in (Path(tmp) / str(seed)).rglob("*"):
                if p.is_file():
                    p.unlink()
    tre = [r["tre_mean_mm"] for r in rows]
    dices = [r["dice"] for r in rows]
    summary = {
        "studies": len(rows),
        "tre_median_mm": statistics.median(tre), "tre_worst_mm": max(tre),
        "registration_wall_median_s": statistics.median(r["registration_wall_s"] for r in rows),
        "registration_cpu_median_s": statistics.median(r["registration_cpu_s"] for r in rows),
        "dice_median": statistics.median(dices), "dice_worst": min(dices),
        "bet_wall_median_s": statistics.median(r["bet_wall_s"] for r in rows),
    }
    print("\nsummary")
    for k, v in summary.items():
        print(f"  {k:28s} {v:.3f}" if isinstance(v, float) else f"  {k:28s} {v}")
    return {"summary": summary, "studies": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None, help="write per-study rows and the summary here")
    args = ap.parse_args(argv)
    out = run(args.studies, args.seed0)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
