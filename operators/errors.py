"""Typed errors raised by pipeline stages.

Every error names what was wrong and where (file, series, stage), so that a
"not analysable" report can state the reason to the radiologist. Messages must
never contain patient names, IDs or birth dates: name files by path and series
by Series Instance UID or number.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every expected, explainable failure of the pipeline.

    Attributes:
        stage: Short name of the stage that failed (e.g. ``"series_selection"``).
        reason: One-line, human-readable reason, safe to put in a report or log.
    """

    stage: str = "pipeline"

    def __init__(self, reason: str, *, stage: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if stage is not None:
            self.stage = stage

    def __str__(self) -> str:
        return f"[{self.stage}] {self.reason}"


class DicomReadError(PipelineError):
    """A file could not be read as a usable DICOM instance."""

    stage = "dicom_loading"


class SeriesSelectionError(PipelineError):
    """No suitable T2 or FLAIR series, or no unambiguous choice between candidates."""

    stage = "series_selection"


class VolumeConversionError(PipelineError):
    """A series cannot be turned into one consistent 3D volume."""

    stage = "volume_conversion"


class PreprocessingError(PipelineError):
    """Registration, brain extraction or normalisation failed or cannot be trusted."""

    stage = "preprocessing"


class QualityCheckError(PreprocessingError):
    """A hard quality check failed: the result could not be trusted."""

    stage = "quality_check"


class ConfigurationError(PipelineError):
    """A site's configuration is invalid: a settings file, a rules file, a model set.

    The one error type that means "fix the installation" (exit status 1), as
    opposed to a study that cannot be analysed (exit status 2).
    """

    stage = "configuration"


class ModelConfigurationError(ConfigurationError):
    """The model manifest or weight files are invalid (raised at start-up)."""

    stage = "models"


class ClinicalDataError(PipelineError):
    """A clinical-data record is missing or invalid."""

    stage = "clinical_data"


class InferenceError(PipelineError):
    """No ensemble member could be run on this study."""

    stage = "inference"


class NoSuitableSeriesError(SeriesSelectionError):
    """No series qualifies for a role; ``candidates`` lists what was found and why each was refused.

    Attributes:
        role: The role that could not be filled (``"T2"`` or ``"FLAIR"``).
        candidates: Per-series scores and reasons (``CandidateScore`` objects).
    """

    def __init__(self, reason: str, *, role: str = "", candidates: tuple = ()) -> None:
        super().__init__(reason)
        self.role = role
        self.candidates = candidates


class AmbiguousSeriesError(SeriesSelectionError):
    """Two or more series qualify equally well for a role; ``candidates`` names them."""

    def __init__(self, reason: str, *, role: str = "", candidates: tuple = ()) -> None:
        super().__init__(reason)
        self.role = role
        self.candidates = candidates


class SeriesRulesError(ConfigurationError):
    """A site's series-selection rules file is invalid."""

    stage = "series_selection"


class QualityCheckFailed(QualityCheckError):
    """One or more hard quality checks failed; carries every quality flag of the study.

    Attributes:
        flags: All ``QualityFlag`` objects of the study (failures and warnings),
            for the "not analysable" report.
    """

    def __init__(self, reason: str, *, flags: list | None = None, stage: str | None = None) -> None:
        super().__init__(reason, stage=stage)
        self.flags = list(flags or [])


class OutputError(PipelineError):
    """A result object (SR, derived series, PDF report) cannot be built from its inputs."""

    stage = "outputs"
