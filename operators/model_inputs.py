"""Model inputs: the preprocessed images on every grid the model set needs, plus the clinical vector.

The core is :func:`operators.inference.member_inputs_from_preprocessed` (the same
resampling code, ``operators.model_grid.to_model_grid``, is used by training);
this module only adds its thin operator.
"""

from __future__ import annotations

from typing import Any

from operators.inference import member_inputs_from_preprocessed
from operators.model_manifest import ModelSet
from operators.lazy_operator import lazy_operator


def _build_operator() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class ModelInputsOperator(Operator):
        """Resamples the preprocessed images onto each member's grid.

        Named inputs:
            preprocessed: ``Preprocessed`` (FLAIR, T2 in FLAIR space, FLAIR3, brain mask).
            clinical: ``ClinicalData`` (when unusable, its ``missing_reason`` leaves the clinical member out).

        Named output:
            model_inputs: ``MemberInputs`` for ``EnsembleInferenceOperator``.
        """

        def __init__(self, fragment: Fragment, *args: Any, model_set: ModelSet, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application.
                model_set: The loaded model set (its members' inputs and grids).
            """
            self.model_set = model_set
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("preprocessed")
            spec.input("clinical")
            spec.output("model_inputs")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            inputs = member_inputs_from_preprocessed(op_input.receive("preprocessed"), op_input.receive("clinical"),
                                                     self.model_set)
            op_output.emit(inputs, "model_inputs")

    return ModelInputsOperator


__getattr__ = lazy_operator(globals(), "ModelInputsOperator", _build_operator)
