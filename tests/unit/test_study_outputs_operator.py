"""The output operators run inside a real MONAI Deploy (Holoscan) application."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from operators.output_config import OutputConfig
from tests.output_fixtures import StudyHeader, make_prediction, make_preprocessed, make_selected


def test_output_operators_run_in_a_monai_deploy_graph(tmp_path: Path) -> None:
    pytest.importorskip("holoscan", reason="MONAI Deploy App SDK runtime (holoscan) not installed")
    from holoscan.conditions import CountCondition
    from monai.deploy.core import Application, Operator, OperatorSpec

    import operators.study_outputs as study_outputs

    t2, flair = make_selected(StudyHeader(), slices=2)
    preprocessed = make_preprocessed([t2, flair])
    prediction = make_prediction()
    received: dict[str, object] = {}
    ports = ("prediction", "t2_series", "flair_series", "preprocessed")

    class Source(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            for name in ports:
                spec.output(name)

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            for name, value in zip(ports, (prediction, t2, flair, preprocessed)):
                op_output.emit(value, name)

    class Sink(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            spec.input("outputs")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            received["outputs"] = op_input.receive("outputs")

    class OutputsApp(Application):
        def compose(self) -> None:
            source = Source(self, CountCondition(self, 1), name="source")
            outputs = study_outputs.StudyOutputsOperator(
                self, output_folder=tmp_path / "all", name="outputs",
                config=OutputConfig(flair3_series=True, pdf=True))
            sink = Sink(self, name="sink")
            mapping = {(name, name) for name in ports}
            self.add_flow(source, outputs, mapping)
            self.add_flow(outputs, sink, {("outputs", "outputs")})

    OutputsApp().run()
    written = received["outputs"]
    assert written.failures == {}  # type: ignore[union-attr]
    assert len(written.flair3_series) == 2 and written.pdf.exists()  # type: ignore[union-attr]
    sr = pydicom.dcmread(written.sr)  # type: ignore[union-attr]
    assert sr.StudyInstanceUID == t2.datasets[0].StudyInstanceUID
    assert sr.Modality == "SR" and sr.VerificationFlag == "UNVERIFIED"
