"""The MONAI Deploy application: the operator graph, and nothing else.

    dicom_loader --study--> intended_use (the gate: age, from the model set's manifest)
    intended_use --study--> series_selector --t2_series/flair_series--> t2_volume, flair_volume
    intended_use --study--> clinical_data
    t2_volume, flair_volume --> registration --registered--> brain_extraction
    brain_extraction, clinical_data --> flair3_and_grids (normalisation, FLAIR3, quality checks,
        model grids) --model_inputs--> inference (fold ensembles, late fusion)
    inference, flair3_and_grids --preprocessed--, series_selector, clinical_data, intended_use
        --> study_outputs (SR, result page, FLAIR3 series, PDF) --> result
"""

from __future__ import annotations

from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.core import Application

from app.config import AppConfig, runner_options
from app.pipeline import StudyResult, checked_site_intended_use, find_model_set, make_brain_extractor
from app.result_sink import ResultSinkOperator
from operators.clinical_data import ClinicalDataOperator
from operators.datatypes import SelectedSeries
from operators.dicom_loading import DicomStudyLoaderOperator, LoadedFolder
from operators.brain_extraction import BrainExtractionOperator
from operators.inference import EnsembleInferenceOperator
from operators.intended_use import IntendedUseGateOperator
from operators.model_inputs import Flair3AndGridsOperator
from operators.registration import RegistrationOperator
from operators.series_selection import SeriesSelectorOperator
from operators.study_outputs import StudyOutputsOperator
from operators.volume_conversion import VolumeConverterOperator


class TscOutcomeApp(Application):
    """Predicts one-year seizure control in TSC from pre-treatment T2 + FLAIR MRI (research use only).

    Args:
        input_dir: Study folder (DICOM files, optional ``clinical.json``).
        output_dir: Folder for the result DICOM objects.
        models_dir: Model-set folder (or the MAP models folder holding one).
        config: Application configuration.

    After ``run()``, ``result`` holds the :class:`~app.pipeline.StudyResult`, ``scanned``
    what the loader found in the input folder (read once, also for a failure report) and
    ``selected`` the series chosen before any later failure.
    """

    def __init__(self, *args, input_dir: Path, output_dir: Path, models_dir: Path,
                 config: AppConfig | None = None, **kwargs) -> None:
        self.input_dir = Path(input_dir)
        self.output_dir = Path(output_dir)
        self.models_dir = Path(models_dir)
        self.config = config or AppConfig()
        self.result: StudyResult | None = None
        self.scanned: LoadedFolder | None = None
        self.selected: list[SelectedSeries] = []
        super().__init__(*args, **kwargs)

    def _keep_result(self, result: StudyResult) -> None:
        self.result = result

    def _keep_scanned(self, folder: LoadedFolder) -> None:
        self.scanned = folder

    def _keep_selected(self, series: list[SelectedSeries]) -> None:
        self.selected = series

    def compose(self) -> None:
        model_set_dir = find_model_set(self.models_dir)
        loader = DicomStudyLoaderOperator(self, CountCondition(self, 1), input_folder=self.input_dir,
                                          on_scanned=self._keep_scanned, name="dicom_loader")
        selector = SeriesSelectorOperator(self, rules_path=self.config.series_rules,
                                          on_selected=self._keep_selected, name="series_selector")
        t2_volume = VolumeConverterOperator(self, name="t2_volume")
        flair_volume = VolumeConverterOperator(self, name="flair_volume")
        clinical = ClinicalDataOperator(self, lookup_table=self.config.clinical_lookup, name="clinical_data")
        registration = RegistrationOperator(self, name="registration")
        brain_extraction = BrainExtractionOperator(self, extractor=make_brain_extractor(self.config, model_set_dir),
                                                   name="brain_extraction")
        inference = EnsembleInferenceOperator(self, model_set=model_set_dir,
                                              options=runner_options(self.config), name="inference")
        model_set = inference.runner.model_set
        gate = IntendedUseGateOperator(self, population=model_set.intended_population,
                                       site=checked_site_intended_use(self.config, model_set.intended_population),
                                       name="intended_use")
        flair3_and_grids = Flair3AndGridsOperator(self, model_set=inference.runner.model_set,
                                                  name="flair3_and_grids")
        outputs = StudyOutputsOperator(self, output_folder=self.output_dir, config=self.config.outputs,
                                       model_card=model_set.model_card, name="study_outputs")
        result = ResultSinkOperator(self, on_result=self._keep_result, name="result")

        self.add_flow(loader, gate, {("study", "study")})
        self.add_flow(gate, selector, {("study", "study")})
        self.add_flow(gate, clinical, {("study", "study")})
        self.add_flow(selector, t2_volume, {("t2_series", "series")})
        self.add_flow(selector, flair_volume, {("flair_series", "series")})
        self.add_flow(t2_volume, registration, {("volume", "t2_volume")})
        self.add_flow(flair_volume, registration, {("volume", "flair_volume")})
        self.add_flow(registration, brain_extraction, {("registered", "registered")})
        self.add_flow(brain_extraction, flair3_and_grids, {("brain", "brain")})
        self.add_flow(clinical, flair3_and_grids, {("clinical", "clinical")})
        self.add_flow(flair3_and_grids, inference, {("model_inputs", "model_inputs")})
        self.add_flow(inference, outputs, {("prediction", "prediction")})
        self.add_flow(selector, outputs, {("t2_series", "t2_series"), ("flair_series", "flair_series")})
        self.add_flow(flair3_and_grids, outputs, {("preprocessed", "preprocessed")})
        self.add_flow(clinical, outputs, {("clinical", "clinical")})
        self.add_flow(gate, outputs, {("intended_use", "intended_use")})
        self.add_flow(inference, result, {("prediction", "prediction")})
        self.add_flow(outputs, result, {("outputs", "outputs")})
