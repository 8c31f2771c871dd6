"""Inference: fold averaging, late fusion, missing members and renormalisation, on CPU.

These run the PyTorch engine (the subject is fusion, not the engine);
``test_openvino_engine.py`` shows that OpenVINO, the CPU default, gives the same
probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest

from operators.datatypes import ClinicalData, ClinicalValue
from operators.errors import InferenceError
from operators.inference import EnsembleRunner, MemberInputs, RunnerOptions, fuse
from operators.model_manifest import EnsembleSpec
from tests.unit._model_sets import make_model_set

PROBS = {"t2_wae": [0.2, 0.4, 0.3], "flair_wae": [0.6, 0.8, 0.7], "flair3_wae": [0.5, 0.5, 0.5],
         "clinical": [0.1, 0.5, 0.3], "t2_etsc": [0.4, 0.4, 0.4], "flair_etsc": [0.9, 0.7, 0.8]}
MEAN = {m: float(np.mean(p)) for m, p in PROBS.items()}


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> EnsembleRunner:
    ms = make_model_set(tmp_path_factory.mktemp("ms"), PROBS)
    return EnsembleRunner(ms, RunnerOptions(device="cpu", engine="pytorch"))


def _inputs(rng, drop=(), clinical=True) -> MemberInputs:
    images = {}
    for key, shape in [("t2@wae", (16,) * 3), ("flair@wae", (16,) * 3), ("flair3@wae", (16,) * 3),
                       ("t2@etsc", (32,) * 3), ("flair@etsc", (32,) * 3)]:
        if key not in drop:
            images[key] = rng.random(shape, dtype=np.float32)
    missing = {k: f"{k.split('@')[0].upper()} series not found" for k in drop}
    vec = [14.0, 30.0, 1.0, 0.0] if clinical else None
    return MemberInputs(images=images, clinical=vec, missing=missing)


def test_fold_models_are_averaged_per_member(runner):
    pred = runner.predict(_inputs(np.random.default_rng(0)))
    by_name = {m.name: m for m in pred.members}
    for name in ("t2_wae", "flair_wae", "flair3_wae", "clinical"):
        assert by_name[name].fold_scores == pytest.approx(PROBS[name], abs=1e-6)
        assert by_name[name].score == pytest.approx(MEAN[name], abs=1e-6)
    assert pred.fused_score == pytest.approx(np.mean([MEAN[m] for m in by_name]), abs=1e-6)
    assert not pred.weights_renormalised
    assert pred.agreement["fold_sd_max"] == pytest.approx(np.std(PROBS["clinical"]), abs=1e-6)


def test_secondary_ensemble_uses_its_own_weights(runner):
    pred = runner.predict(_inputs(np.random.default_rng(1)))
    etsc = pred.other_ensembles["eTSC-Net"]
    assert etsc.fused_score == pytest.approx(0.6 * MEAN["t2_etsc"] + 0.4 * MEAN["flair_etsc"], abs=1e-6)
    assert pred.model_set_synthetic and etsc.model_set_synthetic
    assert pred.model_set_identity == runner.model_set.identity


def test_missing_input_leaves_member_out_and_renormalises(runner):
    pred = runner.predict(_inputs(np.random.default_rng(2), drop=("flair3@wae",), clinical=False))
    by_name = {m.name: m for m in pred.members}
    assert not by_name["flair3_wae"].used and "FLAIR3 series not found" in by_name["flair3_wae"].reason_left_out
    assert not by_name["clinical"].used and by_name["clinical"].reason_left_out == "no clinical data"
    assert pred.weights_renormalised
    assert by_name["t2_wae"].weight == pytest.approx(0.5) and by_name["t2_wae"].nominal_weight == 0.25
    assert pred.fused_score == pytest.approx((MEAN["t2_wae"] + MEAN["flair_wae"]) / 2, abs=1e-6)
    assert pred.agreement["members_used"] == 2 and pred.agreement["members_total"] == 4


def test_invalid_clinical_record_reason_is_reported(runner):
    inputs = _inputs(np.random.default_rng(3))
    inputs.clinical = ClinicalData(None, ClinicalValue("age_at_imaging_months", 30.0, "DICOM"), None, None,
                                   missing_reason="clinical.json: age_at_seizure_onset_months after imaging")
    pred = runner.predict(inputs)
    clin = next(m for m in pred.members if m.name == "clinical")
    assert not clin.used and "after imaging" in clin.reason_left_out


def test_no_member_available_is_an_inference_error(runner):
    drop = ("t2@wae", "flair@wae", "flair3@wae")
    with pytest.raises(InferenceError, match="WAE-Net: no member could be run"):
        runner.predict(_inputs(np.random.default_rng(4), drop=drop, clinical=False))


def test_wrong_grid_shape_is_an_error_not_a_silent_resize(runner):
    inputs = _inputs(np.random.default_rng(5))
    inputs.images["t2@wae"] = np.zeros((16, 16, 15), np.float32)
    with pytest.raises(InferenceError, match="t2@wae has shape"):
        runner.predict(inputs)


def test_stream_residency_gives_the_same_scores(runner):
    stream = EnsembleRunner(runner.model_set, RunnerOptions(device="cpu", engine="pytorch", weights_residency="stream"))
    inputs = _inputs(np.random.default_rng(6))
    a, b = runner.predict(inputs), stream.predict(inputs)
    assert stream.residency == "stream" and runner.residency == "memory"
    assert b.fused_score == pytest.approx(a.fused_score, abs=1e-7)


def test_random_networks_give_input_dependent_scores(tmp_path):
    # Untrained fold networks (random last layer): scores must vary with the input and stay in (0, 1).
    ms = make_model_set(tmp_path, {"t2_wae": [None, None]}, ensembles={"WAE-Net": {"t2_wae": 1.0}})
    r = EnsembleRunner(ms, RunnerOptions(device="cpu", engine="pytorch"))
    rng = np.random.default_rng(7)
    scores = {r.predict(MemberInputs(images={"t2@wae": rng.random((16,) * 3, dtype=np.float32) * s})).fused_score
              for s in (0.5, 1.0, 3.0)}
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)


def test_fuse_pure_function_weights_and_agreement():
    ens = EnsembleSpec("E", {"a": 0.6, "b": 0.4, "c": 0.0}, threshold=0.5)
    pred = fuse(ens, {"a": [0.9, 0.7], "b": [0.2, 0.2]}, {})
    assert pred.fused_score == pytest.approx(0.6 * 0.8 + 0.4 * 0.2)
    assert not pred.weights_renormalised  # only the zero-weight member is absent
    assert pred.predicted_uncontrolled == (pred.fused_score >= 0.5)
    assert pred.agreement["member_weight_agreeing"] == pytest.approx(0.6)
    assert pred.agreement["member_range"] == pytest.approx(0.6)
    assert pred.agreement["fold_sd_max"] == pytest.approx(0.1)
