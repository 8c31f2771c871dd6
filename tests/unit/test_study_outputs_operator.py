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

    import operators.sr_writer as sr_writer
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
            spec.input("sr")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            received["outputs"] = op_input.receive("outputs")
            received["sr"] = op_input.receive("sr")

    class OutputsApp(Application):
        def compose(self) -> None:
            source = Source(self, CountCondition(self, 1), name="source")
            outputs = study_outputs.StudyOutputsOperator(
                self, output_folder=tmp_path / "all", name="outputs",
                config=OutputConfig(flair3_series=True, pdf=True))
            sr_only = sr_writer.ResultSRWriterOperator(self, output_folder=tmp_path / "sr",
                                                       name="sr_only")
            sink = Sink(self, name="sink")
            mapping = {(name, name) for name in ports}
            self.add_flow(source, outputs, mapping)
            self.add_flow(source, sr_only, mapping)
            self.add_flow(outputs, sink, {("outputs", "outputs")})
            self.add_flow(sr_only, sink, {("sr", "sr")})

    OutputsApp().run()
    written = received["outputs"]
    assert written.failures == {}  # type: ignore[union-attr]
    assert len(written.flair3_series) == 2 and written.pdf.exists()  # type: ignore[union-attr]
    sr_files = list((tmp_path / "sr").glob("*.dcm"))
    assert [p.stem for p in sr_files] == [received["sr"].SOPInstanceUID]  # type: ignore[union-attr]
    assert pydicom.dcmread(sr_files[0]).StudyInstanceUID == t2.datasets[0].StudyInstanceUID
