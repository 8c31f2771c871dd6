"""The graph's last operator: hands the study's result back to the code that ran the graph."""

from __future__ import annotations

from typing import Any, Callable

from app.pipeline import StudyResult
from operators.lazy_operator import lazy_operator


def _build_operator() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class ResultSinkOperator(Operator):
        """Collects the prediction and the files written into a :class:`StudyResult`.

        Named inputs:
            prediction: ``Prediction`` of the primary ensemble.
            outputs: ``WrittenOutputs`` (the DICOM files written).
        """

        def __init__(self, fragment: Fragment, *args: Any, on_result: Callable[[StudyResult], None],
                     **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application.
                on_result: Called once with the study's result.
            """
            self.on_result = on_result
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("prediction")
            spec.input("outputs")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            self.on_result(StudyResult(True, prediction=op_input.receive("prediction"),
                                       outputs=op_input.receive("outputs")))

    return ResultSinkOperator


__getattr__ = lazy_operator(globals(), "ResultSinkOperator", _build_operator)
