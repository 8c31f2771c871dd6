"""The clinical-data and ensemble-inference operators run inside a real MONAI Deploy (Holoscan) application."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from operators.inference import MemberInputs
from tests.unit._model_sets import make_model_set


def test_clinical_and_inference_operators_in_a_monai_deploy_graph(tmp_path: Path) -> None:
    pytest.importorskip("holoscan", reason="MONAI Deploy App SDK runtime (holoscan) not installed")
    synthetic = pytest.importorskip("synthetic")
    from holoscan.conditions import CountCondition
    from monai.deploy.core import Application, Operator, OperatorSpec

    import operators.clinical_data as clinical_data
    import operators.inference as inference
    from operators.dicom_loading import load_study

    generated = synthetic.generate_study(tmp_path / "studies", seed=5, options=synthetic.StudyOptions(
        decoys=False, t2_matrix=(64, 64), flair_matrix=(64, 64), slices=8))
    study = load_study(generated.input_dir)
    model_set = make_model_set(tmp_path / "ms", {"t2_wae": [0.2, 0.4], "clinical": [0.7, 0.9]},
                               ensembles={"WAE-Net": {"t2_wae": 0.5, "clinical": 0.5}})
    images = {"t2@wae": np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)}
    received: dict[str, object] = {}

    class Source(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            spec.output("study")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            op_output.emit(study, "study")

    class ToInputs(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            spec.input("clinical")
            spec.output("model_inputs")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            clinical = op_input.receive("clinical")
            received["clinical"] = clinical
            op_output.emit(MemberInputs(images=images, clinical=clinical), "model_inputs")

    class Sink(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            spec.input("prediction")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            received["prediction"] = op_input.receive("prediction")

    class ModelsApp(Application):
        def compose(self) -> None:
            source = Source(self, CountCondition(self, 1), name="source")
            clinical = clinical_data.ClinicalDataOperator(self, name="clinical")
            to_inputs = ToInputs(self, name="to_inputs")
            infer = inference.EnsembleInferenceOperator(self, model_set=model_set.root, name="inference")
            sink = Sink(self, name="sink")
            self.add_flow(source, clinical, {("study", "study")})
            self.add_flow(clinical, to_inputs, {("clinical", "clinical")})
            self.add_flow(to_inputs, infer, {("model_inputs", "model_inputs")})
            self.add_flow(infer, sink, {("prediction", "prediction")})

    ModelsApp().run()
    clinical = received["clinical"]
    truth = json.loads((generated.truth_dir / "truth.json").read_text())["clinical"]
    assert clinical.missing_reason is None
    assert clinical.age_at_onset_months.value == pytest.approx(truth["age_at_seizure_onset_months"])
    prediction = received["prediction"]
    assert prediction.fused_score == pytest.approx(0.5 * 0.3 + 0.5 * 0.8, abs=1e-6)
    assert prediction.model_set_synthetic and not prediction.weights_renormalised
