"""Registration, brain extraction and FLAIR3-and-grids as separate operators in a real MONAI Deploy graph.

The graph must give exactly what the chained stage cores (``preprocess`` and
``member_inputs_from_preprocessed``, used by training and the DICOM node) give.
ITK's multi-threaded metric sums in a varying order (last-bit differences in the
transform), so both runs use one ITK thread here to make "exactly" testable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from operators.brain_extraction import BrainExtractor
from operators.clinical_data import clinical_data_for_study
from operators.dicom_loading import load_study
from operators.inference import member_inputs_from_preprocessed
from operators.preprocessing import PreprocessingConfig, preprocess
from operators.series_selection import select_series
from operators.volume_conversion import convert_selected
from tests.unit._model_sets import make_model_set


@pytest.fixture
def one_itk_thread():
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def test_three_preprocessing_operators_equal_the_chained_cores(tmp_path: Path, one_itk_thread) -> None:
    pytest.importorskip("holoscan", reason="MONAI Deploy App SDK runtime (holoscan) not installed")
    synthetic = pytest.importorskip("synthetic")
    from holoscan.conditions import CountCondition
    from monai.deploy.core import Application, Operator, OperatorSpec

    from operators.brain_extraction import BrainExtractionOperator
    from operators.model_inputs import Flair3AndGridsOperator
    from operators.registration import RegistrationOperator

    generated = synthetic.generate_study(tmp_path / "studies", seed=11, options=synthetic.StudyOptions(
        decoys=False, t2_matrix=(128, 128), t2_pixel_mm=1.8, flair_matrix=(96, 96), flair_pixel_mm=2.33))
    study = load_study(generated.input_dir)
    selection = select_series(study)
    t2, flair = convert_selected(selection.t2), convert_selected(selection.flair)
    clinical = clinical_data_for_study(study)
    model_set = make_model_set(tmp_path / "ms", {"t2_wae": [0.2], "flair3_wae": [0.6], "clinical": [0.7]},
                               ensembles={"WAE-Net": {"t2_wae": 0.4, "flair3_wae": 0.3, "clinical": 0.3}})
    config = PreprocessingConfig(fail_on_quality=False)
    extractor = BrainExtractor("fallback")
    received: dict[str, object] = {}

    class Source(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            spec.output("t2")
            spec.output("flair")
            spec.output("clinical")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            op_output.emit(t2, "t2")
            op_output.emit(flair, "flair")
            op_output.emit(clinical, "clinical")

    class Sink(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            spec.input("preprocessed")
            spec.input("model_inputs")

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            received["preprocessed"] = op_input.receive("preprocessed")
            received["model_inputs"] = op_input.receive("model_inputs")

    class PreprocessingApp(Application):
        def compose(self) -> None:
            source = Source(self, CountCondition(self, 1), name="source")
            registration = RegistrationOperator(self, settings=config.registration, name="registration")
            brain = BrainExtractionOperator(self, extractor=extractor, name="brain_extraction")
            grids = Flair3AndGridsOperator(self, model_set=model_set, config=config, name="flair3_and_grids")
            sink = Sink(self, name="sink")
            self.add_flow(source, registration, {("t2", "t2_volume"), ("flair", "flair_volume")})
            self.add_flow(registration, brain, {("registered", "registered")})
            self.add_flow(brain, grids, {("brain", "brain")})
            self.add_flow(source, grids, {("clinical", "clinical")})
            self.add_flow(grids, sink, {("preprocessed", "preprocessed"), ("model_inputs", "model_inputs")})

    PreprocessingApp().run()

    age = clinical.age_at_imaging_months.value
    expected = preprocess(t2, flair, extractor=extractor, patient_age_months=age, config=config)
    got = received["preprocessed"]
    for name in ("brain_mask", "flair_norm", "t2_norm", "flair3", "t2_in_flair"):
        assert np.array_equal(sitk.GetArrayViewFromImage(getattr(got, name)),
                              sitk.GetArrayViewFromImage(getattr(expected, name))), name
    assert got.t2_to_flair.GetParameters() == expected.t2_to_flair.GetParameters()
    assert [f.code for f in got.flags] == [f.code for f in expected.flags]
    assert got.brain_extraction_method == "fallback-morphology" and got.brain_volume_ml > 0
    assert set(got.timings_s) == {"registration", "brain_extraction", "normalisation", "total"}

    inputs = received["model_inputs"]
    expected_inputs = member_inputs_from_preprocessed(expected, clinical, model_set)
    assert set(inputs.images) == {"t2@wae", "flair3@wae"}
    for key, image in expected_inputs.images.items():
        assert np.array_equal(inputs.images[key], image), key
    assert inputs.clinical == expected_inputs.clinical
