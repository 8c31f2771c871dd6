"""Model-grid resampling: geometry, axis order and interpolation against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from operators.model_grid import (
    ETSC_NET_GRID,
    WAE_NET_GRID,
    GridSpec,
    brain_center_lps,
    fraction_of_brain_inside_grid,
    grid_reference,
    to_model_grid,
)


def _ramp(x, y, z):
    return 2.0 * x - 3.0 * y + 0.5 * z + 7.0


def _image_from_function(size, spacing, origin, direction, fn) -> sitk.Image:
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    idx = np.indices(size, dtype=np.float64).reshape(3, -1).T  # (x, y, z) indices
    d = np.array(direction).reshape(3, 3)
    pts = (idx * np.array(spacing)) @ d.T + np.array(origin)
    vals = fn(pts[:, 0], pts[:, 1], pts[:, 2]).reshape(size)  # [i, j, k]
    arr = sitk.GetImageFromArray(vals.transpose(2, 1, 0).astype(np.float32))
    arr.CopyInformation(img)
    return arr


def test_published_grid_shapes() -> None:
    assert WAE_NET_GRID.shape == (128, 128, 128)
    assert ETSC_NET_GRID.shape == (256, 256, 128)
    assert WAE_NET_GRID.field_of_view_mm == pytest.approx((192.0, 192.0, 192.0))
    assert ETSC_NET_GRID.field_of_view_mm == pytest.approx((192.0, 192.0, 192.0))


def test_grid_spec_from_dict_and_validation() -> None:
    g = GridSpec.from_dict("x", {"shape": [4, 5, 6], "spacing_mm": [1, 2, 3]})
    assert g == GridSpec("x", (4, 5, 6), (1.0, 2.0, 3.0))
    with pytest.raises(ValueError):
        GridSpec.from_dict("x", {"shape": [4, 5, 6]})
    with pytest.raises(ValueError):
        GridSpec("x", (4, 5, 0), (1.0, 1.0, 1.0))


def test_grid_reference_is_centred_and_lps_aligned() -> None:
    ref = grid_reference(GridSpec("g", (4, 3, 2), (2.0, 1.0, 5.0)), (10.0, 20.0, 30.0))
    # first voxel centre = centre - spacing * (n - 1) / 2
    assert ref.GetOrigin() == pytest.approx((7.0, 19.0, 27.5))
    assert ref.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    last = ref.TransformIndexToPhysicalPoint((3, 2, 1))
    assert last == pytest.approx((13.0, 21.0, 32.5))


def test_brain_center_is_bounding_box_centre_in_mm() -> None:
    mask = sitk.Image([10, 10, 6], sitk.sitkUInt8)
    mask.SetSpacing((0.5, 0.5, 6.0))
    mask.SetOrigin((-2.0, 1.0, 3.0))
    arr = sitk.GetArrayFromImage(mask)
    arr[1:4, 2:9, 3:5] = 1  # z 1..3, y 2..8, x 3..4
    m = sitk.GetImageFromArray(arr)
    m.CopyInformation(mask)
    c = brain_center_lps(m)
    assert c == pytest.approx((-2.0 + 0.5 * 3.5, 1.0 + 0.5 * 5.0, 3.0 + 6.0 * 2.0))


def test_identity_grid_returns_voxels_in_xyz_order() -> None:
    spec = GridSpec("tiny", (4, 3, 2), (1.0, 1.0, 1.0))
    zyx = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    img = sitk.GetImageFromArray(zyx)
    img.SetOrigin((0.0, 0.0, 0.0))
    mask = sitk.GetImageFromArray(np.ones_like(zyx, dtype=np.uint8))
    mask.CopyInformation(img)
    out = to_model_grid(img, mask, spec)
    assert out.shape == (4, 3, 2)
    assert out.dtype == np.float32
    for i, j, k in [(0, 0, 0), (3, 0, 0), (1, 2, 1), (3, 2, 1)]:
        assert out[i, j, k] == pytest.approx(zyx[k, j, i])


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),                  # LPS (axial DICOM)
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),                # RAS
    (1, 0, 0, 0, 0, -1, 0, 1, 0),                 # coronal-like axis order
])
def test_linear_function_is_reproduced_exactly_in_any_source_orientation(direction) -> None:
    # a linear function of the LPS coordinates is interpolated exactly by trilinear resampling
    size, spacing = (40, 36, 30), (1.0, 1.2, 1.5)
    d = np.array(direction, dtype=float).reshape(3, 3)
    centre_index = (np.array(size) - 1) / 2.0
    origin = -(d @ (centre_index * np.array(spacing)))  # image centred on (0, 0, 0)
    img = _image_from_function(size, spacing, tuple(origin), direction, _ramp)
    mask_arr = np.zeros(sitk.GetArrayFromImage(img).shape, dtype=np.uint8)
    mask_arr[5:-5, 5:-5, 5:-5] = 1
    mask = sitk.GetImageFromArray(mask_arr)
    mask.CopyInformation(img)
    spec = GridSpec("small", (6, 5, 4), (2.0, 3.0, 2.5))
    out = to_model_grid(img, mask, spec)
    c = brain_center_lps(mask)
    i, j, k = np.indices(spec.shape)
    x = c[0] + (i - 2.5) * 2.0
    y = c[1] + (j - 2.0) * 3.0
    z = c[2] + (k - 1.5) * 2.5
    np.testing.assert_allclose(out, _ramp(x, y, z), atol=1e-3)


def test_left_posterior_superior_land_on_high_indices() -> None:
    size = (21, 21, 21)
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS-stored source
    img.SetOrigin((10.0, 10.0, -10.0))
    # bright blob at LPS (+8, 0, 0): patient's left
    idx = img.TransformPhysicalPointToIndex((8.0, 0.0, 0.0))
    img[idx] = 1.0
    mask = sitk.Image(list(size), sitk.sitkUInt8) + 1
    mask.CopyInformation(img)
    out = to_model_grid(img, mask, GridSpec("g", (21, 21, 21), (1.0, 1.0, 1.0)))
    i, j, k = np.unravel_index(np.argmax(out), out.shape)
    assert (i, j, k) == (18, 10, 10)


def test_masks_use_nearest_neighbour_and_stay_binary() -> None:
    arr = np.zeros((10, 10, 10), dtype=np.uint8)
    arr[2:8, 3:7, 1:9] = 1
    m = sitk.GetImageFromArray(arr)
    m.SetSpacing((1.0, 1.0, 5.0))
    out = to_model_grid(m, m, GridSpec("g", (16, 16, 16), (0.7, 0.7, 1.3)), is_mask=True)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1}


def test_fraction_of_brain_inside_grid() -> None:
    arr = np.zeros((1, 1, 20), dtype=np.uint8)
    arr[0, 0, :] = 1  # 20 voxels along x, 1 mm
    m = sitk.GetImageFromArray(arr)
    assert fraction_of_brain_inside_grid(m, GridSpec("g", (30, 1, 1), (1.0, 1.0, 1.0))) == 1.0
    # a 10-voxel grid centred on the brain keeps the middle 10 of 20 voxels
    assert fraction_of_brain_inside_grid(m, GridSpec("g", (10, 1, 1), (1.0, 1.0, 1.0))) == pytest.approx(0.5)
