"""Platt calibration: fitting, the manifest entry, and its use by the ensemble runner."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from operators.errors import ModelConfigurationError
from operators.inference import EnsembleRunner, MemberInputs, RunnerOptions
from operators.model_manifest import PlattCalibration, load_model_set
from tests.unit._model_sets import make_model_set
from training.calibration import fit_platt, logit
from training.metrics import auc


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_fit_recovers_the_generating_slope_and_intercept():
    rng = np.random.default_rng(3)
    raw = _sigmoid(rng.normal(0.0, 0.4, 20000))  # squeezed near 0.5, like a focal-loss member
    labels = (rng.random(raw.size) < _sigmoid(6.0 * logit(raw) - 0.5)).astype(int)
    cal = fit_platt(labels, raw)
    assert cal.slope == pytest.approx(6.0, rel=0.05)
    assert cal.intercept == pytest.approx(-0.5, abs=0.06)
    calibrated = [cal.apply(p) for p in raw]
    assert auc(labels, calibrated) == pytest.approx(auc(labels, raw), abs=1e-12)  # ranking unchanged
    brier_raw = np.mean((raw - labels) ** 2)
    brier_cal = np.mean((np.asarray(calibrated) - labels) ** 2)
    assert brier_cal < brier_raw - 0.02


@pytest.mark.parametrize("labels,probs", [
    ([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8]),          # one class
    ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]),          # constant scores
    ([1, 1, 0, 0] * 10, [0.1, 0.2, 0.8, 0.9] * 10),  # ranks worse than chance: slope would be negative
])
def test_fit_refuses_what_cannot_be_calibrated(labels, probs):
    assert fit_platt(labels, probs) is None


def test_platt_calibration_validates_and_is_monotone():
    with pytest.raises(ValueError, match="slope must be positive"):
        PlattCalibration(slope=0.0, intercept=0.0)
    with pytest.raises(ValueError):
        PlattCalibration(slope=1.0, intercept=float("nan"))
    cal = PlattCalibration(slope=2.0, intercept=0.3)
    values = [cal.apply(p) for p in (0.0, 0.1, 0.5, 0.9, 1.0)]
    assert values == sorted(values) and 0 < values[0] and values[-1] < 1
    assert cal.apply(0.5) == pytest.approx(_sigmoid(0.3))
    assert PlattCalibration(1.0, 0.0).apply(0.37) == pytest.approx(0.37)


@pytest.fixture(scope="module")
def calibrated_set(tmp_path_factory):
    probs = {"t2_wae": [0.2, 0.4], "clinical": [0.45, 0.55]}
    cals = {"clinical": {"method": "platt", "slope": 5.0, "intercept": -0.2}}
    return make_model_set(tmp_path_factory.mktemp("cal"), probs, calibrations=cals), probs


def test_runner_calibrates_each_fold_before_averaging_and_fusion(calibrated_set):
    ms, probs = calibrated_set
    assert ms.members["clinical"].calibration == PlattCalibration(5.0, -0.2)
    assert ms.members["t2_wae"].calibration is None
    runner = EnsembleRunner(ms, RunnerOptions(device="cpu"))
    rng = np.random.default_rng(0)
    pred = runner.predict(MemberInputs(images={"t2@wae": rng.random((16, 16, 16), dtype=np.float32)},
                                       clinical=[14.0, 30.0, 1.0, 0.0]))
    by = {m.name: m for m in pred.members}
    expected = [float(_sigmoid(5.0 * logit(p) - 0.2)) for p in probs["clinical"]]
    assert by["clinical"].fold_scores == pytest.approx(expected, abs=1e-6)
    assert by["t2_wae"].fold_scores == pytest.approx(probs["t2_wae"], abs=1e-6)
    assert by["clinical"].calibration == "platt slope 5 intercept -0.2" and by["t2_wae"].calibration == ""
    assert pred.fused_score == pytest.approx(0.5 * np.mean(expected) + 0.5 * 0.3, abs=1e-6)


@pytest.mark.parametrize("entry,field", [
    ({"method": "isotonic", "slope": 1.0, "intercept": 0.0}, "members.clinical.calibration.method"),
    ({"method": "platt", "slope": -2.0, "intercept": 0.0}, "members.clinical.calibration: slope must be positive"),
    ({"method": "platt", "slope": 2.0}, "members.clinical.calibration.intercept: missing"),
    ("platt", "members.clinical.calibration: must be a mapping"),
])
def test_bad_calibration_entry_names_the_field(calibrated_set, tmp_path, entry, field):
    ms, _ = calibrated_set
    data = yaml.safe_load(ms.manifest_path.read_text())
    data["members"]["clinical"]["calibration"] = entry
    ms.manifest_path.with_name("bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelConfigurationError, match=field.replace(".", r"\.")):
        load_model_set(ms.manifest_path.with_name("bad.yaml"))
