"""The FLAIR3-and-grids stage: normalisation, FLAIR3 and quality checks, then the model inputs.

The cores are :func:`operators.preprocessing.finish_preprocessing` (normalisation,
FLAIR3, quality flags) and :func:`operators.inference.member_inputs_from_preprocessed`
(every image on each grid the model set needs, with
``operators.model_grid.to_model_grid``, the code training uses too, plus the
clinical vector); this module only adds their thin operator.
"""

from __future__ import annotations

from typing import Any

from operators.inference import member_inputs_from_preprocessed
from operators.lazy_operator import lazy_operator
from operators.model_manifest import ModelSet
from operators.preprocessing import PreprocessingConfig, finish_preprocessing


def _build_operator() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class Flair3AndGridsOperator(Operator):
        """Normalises FLAIR and T2 over the brain, synthesises FLAIR3, checks quality and resamples to the grids.

        Named inputs:
            brain: :class:`~operators.datatypes.BrainExtracted` (the registered pair and its brain mask).
            clinical: :class:`~operators.datatypes.ClinicalData` (age at imaging feeds the brain-volume
                check; when unusable, its ``missing_reason`` leaves the clinical member out).

        Named outputs:
            preprocessed: :class:`~operators.datatypes.Preprocessed` (for the report writers).
            model_inputs: :class:`~operators.inference.MemberInputs` (for ``EnsembleInferenceOperator``).
        """

        def __init__(self, fragment: Fragment, *args: Any, model_set: ModelSet,
                     config: PreprocessingConfig | None = None, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application.
                model_set: The loaded model set (its members' inputs and grids).
                config: Normalisation and quality-check settings.
            """
            self.model_set = model_set
            self.config = config or PreprocessingConfig()
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("brain")
            spec.input("clinical")
            spec.output("preprocessed")
            spec.output("model_inputs")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            brain = op_input.receive("brain")
            clinical = op_input.receive("clinical")
            age = getattr(clinical, "age_at_imaging_months", None) if clinical is not None else None
            preprocessed = finish_preprocessing(brain, patient_age_months=age.value if age is not None else None,
                                                config=self.config)
            op_output.emit(preprocessed, "preprocessed")
            op_output.emit(member_inputs_from_preprocessed(preprocessed, clinical, self.model_set), "model_inputs")

    return Flair3AndGridsOperator


__getattr__ = lazy_operator(globals(), "Flair3AndGridsOperator", _build_operator)
