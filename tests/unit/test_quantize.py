"""INT8 quantisation (NNCF) is recorded only when it validates against PyTorch f32."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from operators.inference import EnsembleRunner, MemberInputs, RunnerOptions
from operators.model_manifest import load_model_set
from tests.unit._model_sets import make_model_set

pytest.importorskip("nncf")
pytest.importorskip("openvino")
pytestmark = pytest.mark.slow  # conversion + NNCF statistics of a few small networks


def _inputs(seed: int) -> MemberInputs:
    rng = np.random.default_rng(seed)
    return MemberInputs(images={"t2@wae": rng.random((16,) * 3, dtype=np.float32)}, clinical=[14.0, 30.0, 1.0, 0.0])


def test_int8_that_validates_is_recorded_and_used(tmp_path, monkeypatch):
    from training.quantize import quantize_model_set

    monkeypatch.setenv("TSC_OPENVINO_CACHE", str(tmp_path / "cache"))
    # Last layers with zero weights: every fold outputs its bias, which INT8 keeps exactly.
    ms = make_model_set(tmp_path, {"t2_wae": [0.3, 0.6], "clinical": [0.4, 0.4]})
    record = quantize_model_set(ms.root, [_inputs(1)], [_inputs(2), _inputs(3)])
    assert record["validation"]["max_abs_probability_diff"] <= 1e-3
    assert set(record["members"]) == {"t2_wae"}  # the clinical FCNN stays f32
    loaded = load_model_set(ms.root)
    assert loaded.reduced_precision["int8"].members["t2_wae"][1].bin.is_file()
    assert "Reduced precision (OpenVINO)" in loaded.model_card.read_text()
    runner = EnsembleRunner(loaded, RunnerOptions(device="cpu", precision="reduced"))
    prediction = runner.predict(_inputs(4))
    assert runner.precision == "int8" and "int8 (validated on 2 cases" in prediction.inference_engine
    assert [m.score for m in prediction.members if m.name == "t2_wae"][0] == pytest.approx(0.45, abs=1e-3)


def test_int8_that_does_not_validate_records_nothing(tmp_path, monkeypatch):
    from training.quantize import QuantizationError, quantize_model_set

    monkeypatch.setenv("TSC_OPENVINO_CACHE", str(tmp_path / "cache"))
    # Random small networks: INT8 moves their probabilities by about 1e-2.
    ms = make_model_set(tmp_path, {"t2_wae": [None, None]}, ensembles={"WAE-Net": {"t2_wae": 1.0}})
    before = (ms.root / "manifest.yaml").read_text()
    with pytest.raises(QuantizationError, match="INT8 not validated .* > 0.001; the set stays f32"):
        quantize_model_set(ms.root, [_inputs(1)], [_inputs(2), _inputs(3)])
    assert (ms.root / "manifest.yaml").read_text() == before
    assert "openvino_reduced_precision" not in yaml.safe_load(before)
    assert not list((ms.root / "openvino").glob("*.bin"))
