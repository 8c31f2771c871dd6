"""The preprocessing stage on a phantom study: outputs, geometry, flags and failures."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from operators.brain_extraction import METHOD_FALLBACK, BrainExtractor
from operators.datatypes import Role, Volume
from operators.errors import PreprocessingError, QualityCheckFailed
from operators.model_grid import WAE_NET_GRID, to_model_grid
from operators.preprocessing import PreprocessingConfig, preprocess
from operators.quality import QualityThresholds
from operators.registration import target_registration_error
from tests.unit import phantoms


@pytest.fixture(scope="module")
def study():
    truth = phantoms.rigid((2.0, 1.0, -3.0), (-4.0, 5.0, 2.0), (0.0, 0.0, 10.0))
    flair, t2, brain, truth = phantoms.study(truth, seed=11)
    return (Volume(t2, "1.2.3.2", Role.T2), Volume(flair, "1.2.3.1", Role.FLAIR), brain, truth)


@pytest.fixture(scope="module")
def extractor():
    return BrainExtractor("fallback")


@pytest.fixture(scope="module")
def result(study, extractor):
    t2, flair, _, _ = study
    return preprocess(t2, flair, extractor=extractor, patient_age_months=120.0)


def test_outputs_on_flair_grid_normalised_and_masked(study, result) -> None:
    flair = study[1].image
    for img in (result.t2_in_flair, result.brain_mask, result.flair_norm, result.t2_norm, result.flair3):
        assert img.GetSize() == flair.GetSize()
        assert img.GetOrigin() == pytest.approx(flair.GetOrigin())
    mask = sitk.GetArrayViewFromImage(result.brain_mask) > 0
    for img in (result.flair_norm, result.t2_norm, result.flair3):
        arr = sitk.GetArrayViewFromImage(img)
        assert arr.min() >= 0.0 and arr.max() <= 1.0
        assert not arr[~mask].any()
    f = sitk.GetArrayViewFromImage(result.flair_norm)
    t = sitk.GetArrayViewFromImage(result.t2_norm)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(result.flair3), f ** 1.55 * t ** 1.45, atol=1e-6)


def test_numbers_method_and_timings(study, result) -> None:
    _, _, brain, truth = study
    assert result.brain_extraction_method == METHOD_FALLBACK
    # wiring check (starts 7 mm off); accuracy is measured on generator studies in benchmarks/
    assert target_registration_error(result.t2_to_flair, truth, brain).mean() < 2.5
    true_ml = float(sitk.GetArrayViewFromImage(brain).sum()) * np.prod(brain.GetSpacing()) / 1000.0
    assert result.brain_volume_ml == pytest.approx(true_ml, rel=0.1)
    assert result.registration_nmi > 1.1 and result.registration_metric < 0
    assert result.t2_brain_coverage > 0.99
    assert "percentiles" in result.normalisation
    assert {"registration", "brain_extraction", "normalisation", "total"} <= set(result.timings_s)
    assert result.details["registration"]["initialisation"] in ("geometry", "moments")
    assert not [f for f in result.flags if f.severity == "fail"]
    fallback = [f for f in result.flags if f.code == "BRAIN_EXTRACTION_FALLBACK"]
    assert [f.severity for f in fallback] == ["warning"]
    assert result.details["brain_extraction"]["method"] == METHOD_FALLBACK


def test_model_grid_input_from_preprocessed(result) -> None:
    arr = to_model_grid(result.flair3, result.brain_mask, WAE_NET_GRID)
    assert arr.shape == (128, 128, 128) and 0.0 <= arr.min() and arr.max() <= 1.0 and arr.any()


def test_hard_quality_failure_raises_with_flags(study, extractor) -> None:
    t2, flair, _, _ = study
    strict = PreprocessingConfig(quality=QualityThresholds(nmi_warn=1.9, nmi_fail=1.8))
    with pytest.raises(QualityCheckFailed) as exc:
        preprocess(t2, flair, extractor=extractor, patient_age_months=120.0, config=strict)
    assert any(f.code == "REGISTRATION_POOR" and f.severity == "fail" for f in exc.value.flags)
    relaxed = PreprocessingConfig(quality=strict.quality, fail_on_quality=False)
    out = preprocess(t2, flair, extractor=extractor, patient_age_months=120.0, config=relaxed)
    assert any(f.severity == "fail" for f in out.flags)


def test_unusable_input_names_the_series(extractor) -> None:
    empty = sitk.Image([32, 32, 8], sitk.sitkFloat32)
    with pytest.raises(PreprocessingError, match="1.2.3.9"):
        preprocess(Volume(empty, "1.2.3.9"), Volume(empty, "1.2.3.8"), extractor=extractor)
