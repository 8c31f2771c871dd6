"""The GPU checks of issue 14 as one prepared run: the app's CUDA path, and a full-size training smoke test.

1. **App on CUDA.** One generated study; the full-size benchmark set (random weights at
   the published grids, ``benchmarks.bench_inference.build_full_size_set``); HD-BET with
   the CUDA default (``accurate``: 5 models x 8 mirrorings); ``device: cuda``. A fresh
   ``python -m app`` process (start to SR written), then two in-process runs of
   ``app.pipeline.StudyPipeline`` (the first warms CUDA), with stage times and peak GPU
   memory (``torch.cuda.max_memory_allocated``).
2. **Training smoke test.** Per image architecture of ``training/configs/published.yaml``
   (ResNet3D-34 at 128^3 with the WAE recipe; EfficientNet3D-B0 at 256 x 256 x 128 with the
   eTSC recipe, augmentation on): one fold, two epochs (``training.trainer.train_fold``) on
   ``--cases`` random cases at the published grid; seconds per epoch and peak GPU memory.

    python -m benchmarks.bench_cuda [--cases 16] [--json OUT]

``--device cpu --small`` runs the same code on the CPU at small grids and widths, with
HD-BET in fast mode: a check of this script, not a measurement. CI never has a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
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

REPO = Path(__file__).resolve().parents[1]
SMALL_GRIDS = {"wae": (32, 32, 32), "etsc": (64, 64, 32)}


def _peak_memory_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def app_check(device: str, small: bool, work: Path) -> dict[str, Any]:
    """The whole app on one study: a fresh process, then two warm in-process runs."""
    from app.config import AppConfig
    from app.pipeline import StudyPipeline
    from benchmarks.bench_inference import build_full_size_set
    from synthetic import StudyOptions, generate_study

    models = REPO / "models" if small else build_full_size_set(Path(tempfile.gettempdir()) / "tsc-bench-full-size-set")
    hdbet_mode = "fast" if small else "auto"
    study = generate_study(work / "studies", 20260, StudyOptions())
    config_file = work / "config.yaml"
    config_file.write_text(f"device: {device}\nbrain_extraction: hd-bet\nhdbet_mode: {hdbet_mode}\n", encoding="utf-8")
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", 'ulimit -s 32768; exec "$0" -m app "$@"', sys.executable, "-i",
                           str(study.input_dir), "-o", str(work / "fresh"), "-m", str(models), "-c", str(config_file)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    fresh_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"python -m app failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    pipeline = StudyPipeline(AppConfig(models=models, device=device, brain_extraction="hd-bet",
                                       hdbet_mode=hdbet_mode))
    runs = []
    for k in range(2):
        _reset_peak(device)
        result = pipeline.run(study.input_dir, work / f"warm{k}")
        if not result.analysed:
            raise SystemExit(f"not analysed: {result.error}")
        runs.append({"stages_s": result.timings_s, "total_s": sum(result.timings_s.values()),
                     "peak_memory_gib": _peak_memory_gib(device)})
    return {"models": str(models), "fresh_process_s": fresh_s, "warm_runs": runs,
            "inference_engine": result.prediction.inference_engine if result.prediction else "",
            "brain_extraction": pipeline.extractor.method}


def training_check(device: str, small: bool, cases: int, work: Path) -> dict[str, Any]:
    """One fold, two epochs, per image architecture at the published grid and recipe."""
    import torch

    from training.config import load_config
    from training.trainer import MemberData, train_fold

    config = load_config("published")
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for name in ("t2_wae", "t2_etsc"):
        member = config.members[name]
        grid = member.input_key.split("@")[1]
        shape = SMALL_GRIDS[grid] if small else tuple(config.grids[grid].shape)
        hyper = dict(member.hyperparameters, **({"width_factor": 0.0625} if small and "resnet" in
                                                member.architecture else {}))
        member = dataclasses.replace(member, hyperparameters=hyper, recipe=dataclasses.replace(member.recipe, epochs=2))
        labels = np.arange(cases) % 2
        x = torch.from_numpy(rng.random((cases, 1, *shape), dtype=np.float32).astype(np.float16))
        data = MemberData([f"case{i}" for i in range(cases)], labels, x, clinical=False)
        val = np.arange(cases)[-4:]
        _reset_peak(device)
        summary = train_fold(member, data, np.arange(cases)[:-4], val, 0, work / name, seed=0,
                             device=torch.device(device), progress=False)
        out[name] = {"architecture": member.architecture, "grid": list(shape), "cases": cases,
                     "recipe": dataclasses.asdict(member.recipe), "seconds_per_epoch": summary["seconds"] / 2,
                     "peak_memory_gib": _peak_memory_gib(device)}
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small grids and HD-BET fast mode (script check)")
    ap.add_argument("--cases", type=int, default=16, help="random training cases (4 of them validate)")
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --small to check the script")
    if a.cases < 8:
        raise SystemExit("--cases must be at least 8 (4 validate, and a batch needs two)")
    work = Path(tempfile.mkdtemp(prefix="bench_cuda_"))
    result: dict[str, Any] = {"device": a.device, "small": a.small, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None,
                              "cpus": os.cpu_count()}
    result["training"] = training_check(a.device, a.small, a.cases, work)
    if not a.skip_app:
        result["app"] = app_check(a.device, a.small, work)
        print("app", json.dumps(result["app"], default=str), flush=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
