"""Brain min-max normalisation and FLAIR3 against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from operators.errors import PreprocessingError
from operators.intensity import (
    DEFAULT_NORMALISATION,
    PAPER_MINMAX,
    NormalisationSpec,
    brain_minmax_array,
    flair3,
    flair3_array,
    normalise_brain,
)


def test_paper_minmax_is_x_minus_min_over_range_inside_brain_and_zero_outside() -> None:
    values = np.array([[100.0, 10.0, 20.0], [30.0, 50.0, -7.0]])
    mask = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8)
    out = brain_minmax_array(values, mask, PAPER_MINMAX)
    # brain values 10, 20, 30, 50 -> min 10, max 50
    expected = np.array([[0.0, 0.0, 0.25], [0.5, 1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-7)
    assert out.dtype == np.float32


def test_percentile_spec_uses_brain_percentiles_and_clips() -> None:
    values = np.arange(101, dtype=np.float64)  # 0..100
    mask = np.ones_like(values, dtype=bool)
    spec = NormalisationSpec(lower_percentile=10.0, upper_percentile=90.0)
    out = brain_minmax_array(values, mask, spec)
    # 10th percentile of 0..100 is 10, 90th is 90 (linear interpolation on exact ranks)
    assert out[10] == pytest.approx(0.0)
    assert out[50] == pytest.approx(0.5)
    assert out[90] == pytest.approx(1.0)
    assert out[0] == 0.0 and out[100] == 1.0  # clipped
    assert out[30] == pytest.approx(20.0 / 80.0)


def test_default_spec_resists_hot_voxels_where_plain_minmax_does_not() -> None:
    rng = np.random.default_rng(0)
    brain = rng.normal(500.0, 50.0, size=20000)
    hot = brain.copy()
    hot[:20] = 20000.0  # 20 hot voxels (0.1%)
    mask = np.ones_like(brain, dtype=bool)
    clean_median = np.median(brain_minmax_array(brain, mask, PAPER_MINMAX)[20:])
    hot_plain = np.median(brain_minmax_array(hot, mask, PAPER_MINMAX)[20:])
    hot_robust = np.median(brain_minmax_array(hot, mask, DEFAULT_NORMALISATION)[20:])
    assert 0.3 < clean_median < 0.7
    assert hot_plain < 0.05  # whole brain squashed towards 0
    assert abs(hot_robust - 0.5) < 0.05


@pytest.mark.parametrize("values,mask,message", [
    (np.ones((2, 2)), np.zeros((2, 2)), "empty"),
    (np.full((2, 2), 3.0), np.ones((2, 2)), "constant"),
    (np.array([1.0, np.nan]), np.ones(2), "non-finite"),
    (np.ones((2, 2)), np.ones((2, 3)), "shape"),
])
def test_normalisation_rejects_bad_input_with_named_reason(values, mask, message) -> None:
    with pytest.raises(PreprocessingError, match=message):
        brain_minmax_array(values, mask, PAPER_MINMAX, name="FLAIR")


def test_spec_validates_percentiles() -> None:
    with pytest.raises(ValueError):
        NormalisationSpec(lower_percentile=60, upper_percentile=40)
    assert "percentiles 0.5/99.5" in DEFAULT_NORMALISATION.describe()
    assert PAPER_MINMAX.describe() == "min-max over brain"


def test_flair3_hand_computed_values() -> None:
    f = np.array([0.0, 1.0, 0.5, 0.25, 1.0, 0.8])
    t = np.array([0.7, 1.0, 0.5, 1.0, 0.25, 0.0])
    out = flair3_array(f, t)
    expected = [
        0.0,                      # 0^1.55 * anything
        1.0,                      # 1 * 1
        0.125,                    # 0.5^1.55 * 0.5^1.45 = 0.5^3
        2.0 ** -3.1,              # 0.25^1.55 = 2^(-3.1)
        2.0 ** -2.9,              # 0.25^1.45 = 2^(-2.9)
        0.0,
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def _image(arr: np.ndarray, spacing=(0.7, 0.7, 6.0), origin=(-10.0, 5.0, 2.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def test_sitk_wrappers_keep_geometry_and_chain_to_flair3() -> None:
    flair_arr = np.zeros((3, 4, 5), dtype=np.float32)
    t2_arr = np.zeros_like(flair_arr)
    mask_arr = np.zeros((3, 4, 5), dtype=np.uint8)
    mask_arr[1, 1:3, 1:4] = 1
    flair_arr[1, 1:3, 1:4] = [[10, 20, 30], [40, 50, 60]]
    t2_arr[1, 1:3, 1:4] = [[5, 5, 5], [5, 5, 15]]
    flair_arr[0, 0, 0] = 1000.0  # outside the brain: ignored
    mask = _image(mask_arr)
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    fn = normalise_brain(_image(flair_arr), mask, PAPER_MINMAX, name="FLAIR")
    tn = normalise_brain(_image(t2_arr), mask, PAPER_MINMAX, name="T2")
    f3 = flair3(fn, tn)
    assert fn.GetSpacing() == pytest.approx((0.7, 0.7, 6.0))
    assert f3.GetOrigin() == pytest.approx((-10.0, 5.0, 2.0))
    fa = sitk.GetArrayFromImage(fn)
    np.testing.assert_allclose(fa[1, 1:3, 1:4], [[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]], atol=1e-6)
    assert fa[0, 0, 0] == 0.0
    f3a = sitk.GetArrayFromImage(f3)
    # only the voxel with T2 = 15 (normalised 1) and FLAIR = 60 (normalised 1) is non-zero
    assert f3a[1, 2, 3] == pytest.approx(1.0)
    assert np.count_nonzero(f3a) == 1


def test_grid_mismatch_is_refused() -> None:
    a = _image(np.ones((3, 4, 5)))
    b = _image(np.ones((3, 4, 5)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(PreprocessingError, match="same grid"):
        normalise_brain(a, sitk.Cast(b, sitk.sitkUInt8), name="T2")
    with pytest.raises(PreprocessingError, match="same grid"):
        flair3(a, b)
