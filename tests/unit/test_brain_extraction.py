"""Weight-free brain extraction and the extractor choice."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from operators.brain_extraction import (
    METHOD_FALLBACK,
    BrainExtractor,
    FallbackSettings,
    fallback_brain_mask,
    largest_component_filled,
)
from operators.errors import PreprocessingError
from tests.unit import phantoms


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def aligned_study():
    return phantoms.study(None, seed=5)


def _t2_on_flair(flair: sitk.Image, t2: sitk.Image, truth: sitk.Transform) -> sitk.Image:
    return sitk.Resample(t2, flair, truth, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def test_fallback_matches_phantom_brain(aligned_study) -> None:
    flair, t2, brain, truth = aligned_study
    mask = fallback_brain_mask(flair, _t2_on_flair(flair, t2, truth))
    assert mask.GetSize() == flair.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    m = sitk.GetArrayViewFromImage(mask) > 0
    b = sitk.GetArrayViewFromImage(brain) > 0
    assert dice(m, b) > 0.9
    # scalp is excluded: nothing in the outer shell of the head
    assert not (m & ~(sitk.GetArrayFromImage(_head(flair)) > 0)).any()


def _head(flair: sitk.Image) -> sitk.Image:
    from operators.registration import head_mask

    return head_mask(flair)


def test_fallback_works_on_flair_alone(aligned_study) -> None:
    flair, _, brain, _ = aligned_study
    m = sitk.GetArrayFromImage(fallback_brain_mask(flair, None)) > 0
    assert dice(m, sitk.GetArrayViewFromImage(brain) > 0) > 0.85


def test_fallback_rejects_empty_image() -> None:
    empty = sitk.Image([32, 32, 8], sitk.sitkFloat32)
    with pytest.raises(PreprocessingError):
        fallback_brain_mask(empty, None)


def test_t2_on_other_grid_is_refused(aligned_study) -> None:
    flair, t2, _, _ = aligned_study
    with pytest.raises(PreprocessingError, match="not on the FLAIR grid"):
        fallback_brain_mask(flair, t2)


def test_largest_component_filled_keeps_one_filled_component() -> None:
    arr = np.zeros((3, 12, 12), dtype=bool)
    arr[:, 2:9, 2:9] = True
    arr[:, 4:6, 4:6] = False  # a hole (like a ventricle)
    arr[1, 11, 11] = True  # a speck
    out = largest_component_filled(arr)
    assert out[:, 4:6, 4:6].all()
    assert not out[1, 11, 11]
    assert out.sum() == 3 * 49


def test_extractor_modes_record_the_method(aligned_study, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TSC_HDBET_WEIGHTS", raising=False)
    flair, t2, _, truth = aligned_study
    ex = BrainExtractor("fallback", fallback_settings=FallbackSettings())
    result = ex.extract(flair, _t2_on_flair(flair, t2, truth))
    assert ex.method == result.method == METHOD_FALLBACK
    assert result.details["contrasts"] == "FLAIR+T2"
    assert result.details["note"] == "weight-free fallback selected in the configuration"
    auto = BrainExtractor("auto", hdbet_weights=tmp_path)  # a folder without HD-BET parameters
    res = auto.extract(flair, None)
    assert res.method == METHOD_FALLBACK and res.details["note"] == "HD-BET parameters not installed"
    monkeypatch.setenv("TSC_HDBET_WEIGHTS", str(tmp_path))
    assert BrainExtractor("auto").method == METHOD_FALLBACK
    with pytest.raises(ValueError):
        BrainExtractor("bet2")
