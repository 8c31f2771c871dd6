"""Quality checks: each condition becomes a flag; failures raise with all flags attached."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from operators.errors import QualityCheckError, QualityCheckFailed
from operators.quality import (
    QualityThresholds,
    check_brain_volume,
    check_fov_overlap,
    check_mask_edges,
    check_model_grid,
    check_registration,
    check_registration_motion,
    expected_brain_volume_ml,
    mask_volume_ml,
    raise_on_failure,
)

T = QualityThresholds()


def _codes(flags):
    return [(f.code, f.severity) for f in flags]


def test_registration_thresholds() -> None:
    assert check_registration(1.09) == []
    assert _codes(check_registration(1.05)) == [("REGISTRATION_POOR", "warning")]
    assert _codes(check_registration(1.01)) == [("REGISTRATION_POOR", "fail")]
    assert _codes(check_registration(float("nan"))) == [("REGISTRATION_POOR", "fail")]


def test_expected_brain_volume_curve() -> None:
    assert expected_brain_volume_ml(0) == pytest.approx(400.0)
    assert expected_brain_volume_ml(12) == pytest.approx(1250 - 850 * np.exp(-12 / 14))
    assert 1230 < expected_brain_volume_ml(192) <= 1250
    assert expected_brain_volume_ml(6) < expected_brain_volume_ml(24) < expected_brain_volume_ml(60)


@pytest.mark.parametrize("volume,age,expected", [
    (1200.0, 120.0, []),
    (600.0, 120.0, [("BRAIN_VOLUME_IMPLAUSIBLE", "warning")]),   # 0.48 x expected
    (300.0, 120.0, [("BRAIN_VOLUME_IMPLAUSIBLE", "fail")]),      # 0.24 x
    (1500.0, 6.0, [("BRAIN_VOLUME_IMPLAUSIBLE", "warning")]),    # 2.1 x an infant's
    (100.0, None, [("BRAIN_VOLUME_IMPLAUSIBLE", "fail")]),       # impossible at any age
    (1000.0, None, [("BRAIN_VOLUME_AGE_UNKNOWN", "info")]),
])
def test_brain_volume(volume, age, expected) -> None:
    assert _codes(check_brain_volume(volume, age)) == expected


def _mask(shape=(10, 40, 40)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def _img(arr: np.ndarray, spacing=(1.0, 1.0, 6.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    return img


def test_mask_edges_inside_touching_and_leaking() -> None:
    arr = _mask()
    arr[1:9, 5:35, 5:35] = 1
    arr[1, :, :] = 0
    assert check_mask_edges(_img(arr)) == []
    touching = arr.copy()
    touching[4, 20, 0] = 1  # one voxel on the in-plane border
    assert _codes(check_mask_edges(_img(touching))) == [("BRAIN_MASK_AT_EDGE", "warning")]
    leaking = arr.copy()
    leaking[2:8, :, 0:3] = 1
    assert _codes(check_mask_edges(_img(leaking))) == [("BRAIN_MASK_AT_EDGE", "fail")]


def test_brain_cut_by_slab_and_empty_mask() -> None:
    arr = _mask()
    arr[0:9, 5:35, 5:35] = 1  # full area on the first slice
    assert _codes(check_mask_edges(_img(arr))) == [("BRAIN_CUT_BY_SLAB", "warning")]
    assert _codes(check_mask_edges(_img(_mask()))) == [("BRAIN_MASK_EMPTY", "fail")]


def test_mask_volume_ml() -> None:
    arr = _mask()
    arr[0:5, 0:10, 0:10] = 1  # 500 voxels of 6 mm^3
    assert mask_volume_ml(_img(arr)) == pytest.approx(3.0)


def test_fov_overlap_and_grid_crop() -> None:
    assert check_fov_overlap(0.99) == []
    assert _codes(check_fov_overlap(0.8)) == [("FOV_OVERLAP_LOW", "warning")]
    assert _codes(check_fov_overlap(0.3)) == [("FOV_OVERLAP_LOW", "fail")]
    assert check_model_grid(1.0, "wae-net") == []
    flags = check_model_grid(0.9, "wae-net")
    assert _codes(flags) == [("MODEL_GRID_CROP", "warning")] and "wae-net" in flags[0].message


def test_raise_on_failure_carries_all_flags() -> None:
    flags = check_registration(1.05) + check_fov_overlap(0.3)
    with pytest.raises(QualityCheckFailed) as exc:
        raise_on_failure(flags)
    assert isinstance(exc.value, QualityCheckError)
    assert exc.value.stage == "quality_check"
    assert [f.code for f in exc.value.flags] == ["REGISTRATION_POOR", "FOV_OVERLAP_LOW"]
    assert "T2 covers only 30%" in exc.value.reason
    raise_on_failure(check_registration(1.05))  # warnings only: no exception


def test_registration_motion() -> None:
    small = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, np.deg2rad(4.0), (5.0, -3.0, 2.0))
    assert check_registration_motion(small, (0.0, 0.0, 0.0)) == []
    # 15 degrees about z around the origin: the head centre at (0, 0, 0) does not move
    turned = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, np.deg2rad(15.0), (0.0, 0.0, 0.0))
    flags = check_registration_motion(turned, (0.0, 0.0, 0.0))
    assert _codes(flags) == [("REGISTRATION_LARGE_MOTION", "warning")] and "15.0 degrees" in flags[0].message
    # a 5 degree turn about a far centre displaces the head centre by 100 mm * 2 sin(2.5 deg) = 8.7 mm
    far = sitk.Euler3DTransform((100.0, 0.0, 0.0), 0.0, 0.0, np.deg2rad(5.0), (0.0, 0.0, 0.0))
    assert check_registration_motion(far, (0.0, 0.0, 0.0)) == []
    shifted = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, 0.0, (0.0, 25.0, 0.0))
    assert _codes(check_registration_motion(shifted, (0.0, 0.0, 0.0))) == [("REGISTRATION_LARGE_MOTION", "warning")]
