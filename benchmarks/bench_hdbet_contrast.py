"""Which contrast should HD-BET's mask come from? Dice against the generator's brain mask.

For each of N synthetic studies (``synthetic.generate_study``; truth brain mask
on the FLAIR grid), the T2 is registered into FLAIR space as the app does
(``register_t2_to_flair``), then HD-BET v1 (``--mode``) predicts the brain
probability of the FLAIR and of the registered T2. From these two runs:

* ``flair``: FLAIR probability > 0.5;
* ``t2``: T2-in-FLAIR probability > 0.5;
* ``mean``: mean of the two probabilities > 0.5;

and the weight-free ``fallback`` on the same pair, each against the truth
(Dice, and volume error in ml). The synthetic phantom's brain mask follows the
definition of an HD-BET mask (parenchyma plus the CSF inside the brain
surface, see synthetic/README.md).

Run: ``python -m benchmarks.bench_hdbet_contrast [--studies 5] [--seed0 2000] [--mode fast] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk


def run(n_studies: int, seed0: int, mode: str) -> dict:
    import torch

    from operators.brain_extraction import available_cpus, fallback_brain_mask
    from operators.hdbet_v1 import HdBetV1Predictor, HdBetV1Settings, probability_to_mask
    from operators.quality import mask_volume_ml
    from operators.registration import register_t2_to_flair
    from synthetic import StudyOptions, generate_study
    from tests.real_anatomy import dice

    torch.set_num_threads(available_cpus())
    predictor = HdBetV1Predictor.from_parameters(settings=HdBetV1Settings(mode), device="cpu")
    rows = []
    print(f"{'seed':>6} {'truth ml':>8} {'flair':>6} {'t2':>6} {'mean':>6} {'fallbk':>6} {'s/run':>6}")
    with tempfile.TemporaryDirectory(prefix="bench_contrast_") as tmp:
        for i in range(n_studies):
            seed = seed0 + i
            study = generate_study(Path(tmp) / str(seed), seed, StudyOptions(decoys=False))
            flair, truth = study.flair_image, study.brain_mask
            reg = register_t2_to_flair(study.t2_image, flair)
            t0 = time.perf_counter()
            p_flair = predictor.brain_probability(flair)
            t2 = sitk.Cast(reg.t2_in_flair, sitk.sitkFloat32)
            t2.CopyInformation(flair)
            p_t2 = predictor.brain_probability(t2)
            seconds = (time.perf_counter() - t0) / 2
            masks = {"flair": probability_to_mask(p_flair, flair), "t2": probability_to_mask(p_t2, flair),
                     "mean": probability_to_mask((p_flair + p_t2) / 2.0, flair),
                     "fallback": fallback_brain_mask(flair, reg.t2_in_flair)}
            truth_ml = mask_volume_ml(truth)
            row = {"seed": seed, "truth_ml": round(truth_ml, 1), "seconds_per_run": round(seconds, 1)}
            for name, m in masks.items():
                row[f"dice_{name}"] = round(dice(m, truth), 4)
                row[f"ml_error_{name}"] = round(mask_volume_ml(m) - truth_ml, 1)
            rows.append(row)
            print(f"{seed:>6} {truth_ml:8.0f} {row['dice_flair']:6.3f} {row['dice_t2']:6.3f} {row['dice_mean']:6.3f} "
                  f"{row['dice_fallback']:6.3f} {seconds:6.1f}", flush=True)
            for p in sorted((Path(tmp) / str(seed)).rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
    summary = {}
    for name in ("flair", "t2", "mean", "fallback"):
        d = [r[f"dice_{name}"] for r in rows]
        e = [r[f"ml_error_{name}"] for r in rows]
        summary[name] = {"dice_median": statistics.median(d), "dice_min": min(d),
                         "ml_error_median": statistics.median(e)}
    return {"mode": predictor.settings.describe(), "studies": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=5)
    p.add_argument("--seed0", type=int, default=2000)
    p.add_argument("--mode", choices=("fast", "accurate"), default="fast")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    result = run(args.studies, args.seed0, args.mode)
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
