"""Benchmark: study ingestion time for a 2-series study (T2 512x512x24, FLAIR 320x320x24).

Generates the study once with the synthetic generator (no decoys), then times,
over ``--repeats`` runs (median reported): the header scan (``load_study``),
series selection, and the conversion of each series to a volume (pixel decoding,
rescale, geometry). Files are in the OS page cache after the first run, so the
numbers are CPU cost, not disk latency.

Run: ``python -m benchmarks.bench_volume_conversion [--repeats 5] [--encoding classic] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from operators.dicom_loading import load_study
from operators.series_selection import select_series
from operators.volume_conversion import convert_selected


def run(repeats: int, encoding: str) -> dict[str, object]:
    from synthetic import StudyOptions, generate_study

    with tempfile.TemporaryDirectory() as tmp:
        options = StudyOptions(t2_matrix=(512, 512), flair_matrix=(320, 320), slices=24, decoys=False,
                               encoding=encoding, slab_samples=1)
        study = generate_study(Path(tmp), 11, options)
        times: dict[str, list[float]] = {"scan headers": [], "select series": [], "convert T2": [],
                                         "convert FLAIR": [], "total": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            loaded = load_study(study.input_dir)
            t1 = time.perf_counter()
            selection = select_series(loaded)
            t2 = time.perf_counter()
            t2_volume = convert_selected(selection.t2)
            t3 = time.perf_counter()
            flair_volume = convert_selected(selection.flair)
            t4 = time.perf_counter()
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                times[key].append(value)
        sizes = {"T2": t2_volume.image.GetSize(), "FLAIR": flair_volume.image.GetSize()}
    return {
        "encoding": encoding,
        "repeats": repeats,
        "sizes": {k: list(v) for k, v in sizes.items()},
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "min_s": {k: min(v) for k, v in times.items()},
        "max_s": {k: max(v) for k, v in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encoding", default="classic", help="synthetic encoding: classic, enhanced, jpeg2000, rle")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.encoding)
    print(f"ingestion of T2 {result['sizes']['T2']} + FLAIR {result['sizes']['FLAIR']}, "
          f"encoding {result['encoding']}, {result['repeats']} runs")
    print(f"{'step':<16}{'median s':>10}{'min s':>10}{'max s':>10}")
    for key in result["median_s"]:  # type: ignore[union-attr]
        print(f"{key:<16}{result['median_s'][key]:>10.3f}{result['min_s'][key]:>10.3f}"  # type: ignore[index]
              f"{result['max_s'][key]:>10.3f}")  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
