"""Which results the app sends back to the PACS, and how they are numbered.

Configured from a dict or a YAML file, either flat or under an ``outputs:``
key (so it can live in a larger app configuration)::

    outputs:
      sr: true                  # TID 1500 result SR
      not_analysable_sr: true   # short SR saying why a study could not be analysed
      flair3_series: false      # FLAIR3 derived MR series (a new image series)
      pdf: true                 # encapsulated PDF report
      result_page: true         # Secondary Capture result page (every viewer shows it)
      sr_series_number: 9001
      flair3_series_number: 9002
      pdf_series_number: 9003
      result_page_series_number: 9004
      institution_name: null
      model_card_summary: null  # text printed in the PDF; or model_card_summary_file
      model_card_summary_file: null

Unknown keys are rejected so that a typo does not silently switch an output
off. See docs/outputs.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class OutputConfig:
    """The outputs to produce for each study.

    Attributes:
        sr: Write the TID 1500 result SR for an analysed study.
        not_analysable_sr: Write the short SR when a study cannot be analysed.
        flair3_series: Write FLAIR3 as a derived MR series (off by default: it
            adds a whole image series to the study in the PACS).
        pdf: Write the encapsulated PDF report.
        result_page: Write the Secondary Capture result page.
        sr_series_number / flair3_series_number / pdf_series_number /
            result_page_series_number: Series
            Numbers of the new series.
        institution_name: Institution Name written into the SR, if any.
        model_card_summary: Text of the model-card section of the PDF (default:
            a summary taken from the model set's own model card).
        model_card_summary_file: File with that text (relative paths resolve
            against the configuration file's folder).
    """

    sr: bool = True
    not_analysable_sr: bool = True
    flair3_series: bool = False
    pdf: bool = True
    result_page: bool = True
    sr_series_number: int = 9001
    flair3_series_number: int = 9002
    pdf_series_number: int = 9003
    result_page_series_number: int = 9004
    institution_name: str | None = None
    model_card_summary: str | None = None
    model_card_summary_file: str | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "OutputConfig":
        """The configuration from a mapping; see :func:`output_config_from_dict`."""
        return output_config_from_dict(values)

    def model_card_text(self, base_dir: Path | None = None) -> str:
        """The model-card summary text (inline text wins over the file)."""
        if self.model_card_summary:
            return self.model_card_summary
        if self.model_card_summary_file:
            path = Path(self.model_card_summary_file)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            return path.read_text(encoding="utf-8").strip()
        return ""


_BOOLS = ("sr", "not_analysable_sr", "flair3_series", "pdf", "result_page")
_INTS = ("sr_series_number", "flair3_series_number", "pdf_series_number", "result_page_series_number")


def output_config_from_dict(values: Mapping[str, Any] | None) -> OutputConfig:
    """Build an :class:`OutputConfig` from a mapping (flat or under ``outputs``).

    Raises:
        ValueError: Unknown key, or a value of the wrong type.
    """
    if not values:
        return OutputConfig()
    if "outputs" in values and isinstance(values["outputs"], Mapping):
        values = values["outputs"]
    known = {f.name for f in fields(OutputConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown output setting(s): {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    for key in _BOOLS:
        if key in values and not isinstance(values[key], bool):
            raise ValueError(f"Output setting {key!r} must be true or false, got {values[key]!r}")
    for key in _INTS:
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], int)
                              or not 0 < values[key] < 2**31):
            raise ValueError(f"Output setting {key!r} must be a positive integer, "
                             f"got {values[key]!r}")
    numbers = [values.get(k, getattr(OutputConfig, k)) for k in _INTS]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"Output series numbers must differ, got {numbers}")
    return replace(OutputConfig(), **dict(values))


def load_output_config(path: Path | str | None = None) -> OutputConfig:
    """Read an :class:`OutputConfig` from a YAML file (defaults when ``path`` is None).

    A relative ``model_card_summary_file`` is made absolute against the file's folder.

    Raises:
        ValueError: Invalid content.
        FileNotFoundError: ``path`` does not exist.
    """
    if path is None:
        return OutputConfig()
    import yaml

    path = Path(path)
    with path.open(encoding="utf-8") as stream:
        values = yaml.safe_load(stream) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{path.name}: expected a mapping of output settings")
    config = output_config_from_dict(values)
    if config.model_card_summary_file and not Path(config.model_card_summary_file).is_absolute():
        config = replace(config, model_card_summary_file=str(path.parent /
                                                              config.model_card_summary_file))
    return config
