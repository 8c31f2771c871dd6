"""Rigid MI registration of T2 into FLAIR space on analytic phantoms with known transforms."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from operators.errors import PreprocessingError
from operators.registration import (
    RegistrationSettings,
    head_mask,
    normalised_mutual_information,
    register_t2_to_flair,
    target_registration_error,
)
from tests.unit import phantoms


@pytest.fixture(scope="module")
def moved_study():
    truth = phantoms.rigid((3.0, -2.0, 4.0), (5.0, -6.0, 3.0), (0.0, 0.0, 10.0))
    return phantoms.study(truth, seed=3)


@pytest.fixture(scope="module")
def registered(moved_study):
    flair, t2, _, _ = moved_study
    return register_t2_to_flair(t2, flair)


def test_tre_of_known_transforms_is_exact() -> None:
    mask = sitk.Image([5, 4, 3], sitk.sitkUInt8) + 1
    mask.SetSpacing((1.0, 2.0, 3.0))
    shift = sitk.TranslationTransform(3, (3.0, 4.0, 0.0))
    tre = target_registration_error(shift, sitk.Euler3DTransform(), mask)
    assert tre.shape == (60,)
    np.testing.assert_allclose(tre, 5.0)
    # a rotation by 90 degrees about z around the origin moves (x, y) to (-y, x): error sqrt(2) * r
    rot = sitk.Euler3DTransform()
    rot.SetRotation(0.0, 0.0, np.pi / 2)
    tre = target_registration_error(rot, sitk.Euler3DTransform(), mask)
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1] * np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(tre, np.sqrt(2.0) * np.hypot(idx[:, 0], idx[:, 1]), atol=1e-9)


def test_recovers_known_rigid_motion(moved_study, registered) -> None:
    flair, _, brain, truth = moved_study
    start = target_registration_error(sitk.Euler3DTransform(), truth, brain).mean()
    tre = target_registration_error(registered.transform, truth, brain)
    assert start > 7.0
    assert tre.mean() < 1.0, f"mean TRE {tre.mean():.2f} mm"
    assert tre.max() < 2.5
    assert registered.nmi > 1.1
    assert registered.overlap_fraction > 0.95


def test_outputs_on_flair_grid_and_report_parameters(moved_study, registered) -> None:
    flair = moved_study[0]
    out = registered.t2_in_flair
    assert out.GetSize() == flair.GetSize()
    assert out.GetSpacing() == pytest.approx(flair.GetSpacing())
    assert out.GetOrigin() == pytest.approx(flair.GetOrigin())
    assert isinstance(registered.transform, sitk.Euler3DTransform)
    p = registered.parameters
    assert len(p["rotation_rad"]) == 3 and len(p["translation_mm"]) == 3
    assert registered.metric_value < 0  # Mattes MI metric (negative MI)
    assert registered.initialisation in ("geometry", "moments")
    assert len(registered.iterations) == len(RegistrationSettings().inplane_shrink)


def test_registration_is_deterministic(moved_study, registered) -> None:
    flair, t2, _, _ = moved_study
    again = register_t2_to_flair(t2, flair)
    np.testing.assert_allclose(again.transform.GetParameters(), registered.transform.GetParameters(), atol=1e-6)


def test_misaligned_images_have_lower_nmi(moved_study, registered) -> None:
    flair, t2, _, truth = moved_study
    wrong = sitk.Euler3DTransform(truth)
    wrong.SetTranslation(tuple(np.array(truth.GetTranslation()) + (12.0, 0.0, 0.0)))
    misregistered = sitk.Resample(t2, flair, wrong, sitk.sitkLinear, 0.0)
    head = sitk.GetArrayFromImage(head_mask(flair)) > 0
    bad = normalised_mutual_information(sitk.GetArrayViewFromImage(flair)[head],
                                        sitk.GetArrayViewFromImage(misregistered)[head])
    assert bad < registered.nmi - 0.03


def test_degenerate_inputs_raise_named_errors() -> None:
    flat = sitk.Image([16, 16, 1], sitk.sitkFloat32)
    vol = sitk.Image([16, 16, 8], sitk.sitkFloat32)
    with pytest.raises(PreprocessingError, match="T2 has a degenerate size"):
        register_t2_to_flair(flat, vol)
    with pytest.raises(PreprocessingError, match="empty or constant"):
        register_t2_to_flair(vol, vol)


def test_settings_validate_levels() -> None:
    with pytest.raises(ValueError):
        RegistrationSettings(inplane_shrink=(4, 2), smoothing_mm=(1.0,))
