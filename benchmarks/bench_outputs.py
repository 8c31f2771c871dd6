"""Benchmark: time to build and write the results of one study.

Generates one full-size synthetic study (T2 384x384x24, FLAIR 320x320x24, no
decoys), derives the preprocessed images from the generator's truth, then times
over ``--repeats`` runs (median reported): the result SR (build + write), the
FLAIR3 series (24 instances, build + write), the PDF (render), its DICOM
encapsulation (build + write), the result page (render, Secondary Capture
build + write), and the sizes of what is written.

Run: ``python -m benchmarks.bench_outputs [--repeats 5] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from operators.flair3_series import build_flair3_series, save_series
from operators.pdf_report import build_encapsulated_pdf, render_report_pdf, save_pdf_instance
from operators.result_page import build_result_page_sc, render_result_page, save_result_page
from operators.sr_writer import build_result_sr, save_sr


def run(repeats: int) -> dict[str, object]:
    from tests.output_fixtures import make_prediction, synthetic_inputs

    times: dict[str, list[float]] = {"result SR": [], "FLAIR3 series": [], "PDF render": [],
                                     "PDF encapsulate": [], "result page": [], "total": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _, selected, preprocessed = synthetic_inputs(Path(tmp) / "study", 11, full_size=True)
        prediction = make_prediction()
        for index in range(repeats):
            out = Path(tmp) / f"out{index}"
            t0 = time.perf_counter()
            sr_path = save_sr(build_result_sr(prediction, selected, preprocessed), out)
            t1 = time.perf_counter()
            flair3 = save_series(build_flair3_series(preprocessed, selected), out / "flair3")
            t2 = time.perf_counter()
            pdf = render_report_pdf(prediction, selected, preprocessed)
            t3 = time.perf_counter()
            pdf_path = save_pdf_instance(build_encapsulated_pdf(pdf, selected), out)
            t4 = time.perf_counter()
            page_path = save_result_page(build_result_page_sc(
                render_result_page(prediction, selected, preprocessed), selected), out)
            t5 = time.perf_counter()
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                times[key].append(value)
        sizes = {"result SR bytes": sr_path.stat().st_size,
                 "FLAIR3 series bytes": sum(p.stat().st_size for p in flair3),
                 "FLAIR3 instances": len(flair3),
                 "PDF bytes": len(pdf),
                 "encapsulated PDF bytes": pdf_path.stat().st_size,
                 "result page bytes": page_path.stat().st_size}
    return {
        "repeats": repeats,
        "flair_grid": list(preprocessed.flair3.GetSize()),
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "min_s": {k: min(v) for k, v in times.items()},
        "max_s": {k: max(v) for k, v in times.items()},
        "sizes": sizes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.repeats)
    print(f"outputs of one study, FLAIR grid {result['flair_grid']}, "
          f"median of {result['repeats']} runs")
    print(f"{'step':<18}{'median s':>10}{'min s':>10}{'max s':>10}")
    for key, value in result["median_s"].items():
        print(f"{key:<18}{value:>10.3f}{result['min_s'][key]:>10.3f}{result['max_s'][key]:>10.3f}")
    for key, value in result["sizes"].items():
        print(f"{key:<24}{value:>12}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
