"""Configuration of the DICOM node: a YAML file plus ``TSC_NODE_*`` environment overrides.

The file has one mapping per section (``scp``, ``spool``, ``study``, ``worker``,
``outbox``, ``logging``). Any scalar or list setting can be overridden by an
environment variable named ``TSC_NODE_<SECTION>__<KEY>`` (double underscore
between section and key), e.g. ``TSC_NODE_SCP__PORT=11112`` or
``TSC_NODE_SCP__ALLOWED_CALLING_AES=PACS1,PACS2``. Lists are comma separated;
destinations are written ``AE@host:port`` (``TSC_NODE_OUTBOX__DESTINATIONS=
ORTHANC@127.0.0.1:4242``). Booleans accept 1/0, true/false, yes/no.
Relative paths (``spool.dir`` and the path settings of ``worker.options``) are
resolved against the folder of the YAML file. The model set of the application's
pipeline is ``worker.options.models``; when it is not set the node uses
``$HOLOSCAN_MODEL_PATH`` (``/opt/tsc/models`` in the site image).
See docs/dicom-node.md for the full reference.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from app.config import PATH_KEYS as APP_PATH_KEYS
from app.config import app_config_from_options
from operators.errors import ConfigurationError
from operators.typed_config import apply_env, build, is_settings_file, read_mapping, section

ENV_PREFIX = "TSC_NODE_"
# The configuration file's path (read by the command line), not a setting.
CONFIG_ENV = "TSC_NODE_CONFIG"
APP_PROCESSOR = "app.pipeline:make_processor"
MODEL_PATH_ENV = "HOLOSCAN_MODEL_PATH"
# worker.options keys that are paths (the application configuration's path keys).
WORKER_PATH_OPTIONS = ("config", *APP_PATH_KEYS)
_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


class ConfigError(ConfigurationError, ValueError):
    """The node configuration is invalid; the message names the setting."""

    stage = "node configuration"

    def __str__(self) -> str:
        return self.reason


@dataclass
class TlsConfig:
    """TLS for the SCP (and, when ``use_for_outbox``, for outgoing associations).

    Attributes:
        enabled: Wrap accepted connections in TLS.
        cert_file: PEM certificate of this node.
        key_file: PEM private key of this node.
        ca_file: PEM CA bundle; when set, peers must present a certificate signed by it.
    """

    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""


@dataclass
class ScpConfig:
    """The listening side (C-ECHO and C-STORE SCP)."""

    ae_title: str = "TSCNODE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aes: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    max_associations: int = 64
    max_associations_per_host: int = 16
    max_pdu_size: int = 262144
    max_instance_mb: float = 1024.0
    network_timeout_s: float = 60.0
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    tls_handshake_timeout_s: float = 10.0
    quickack: bool = True
    csa_non_image: str = "ignore"
    tls: TlsConfig = field(default_factory=TlsConfig)


@dataclass
class SpoolConfig:
    """Where received instances, jobs, results and state are kept (one filesystem)."""

    dir: str = "spool"
    min_free_mb: float = 1024.0
    fsync: bool = True
    keep_done_inputs: bool = False
    retention_days: float = 30.0


@dataclass
class StudyConfig:
    """When a study counts as complete."""

    quiet_period_s: float = 60.0
    interrupted_quiet_period_s: float = 300.0
    poll_interval_s: float = 1.0
    reopen_window_s: float = 86400.0


@dataclass
class WorkerConfig:
    """How studies are processed."""

    processor: str = "app.pipeline:make_processor"
    options: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 1
    study_timeout_s: float = 1800.0
    max_attempts: int = 2
    startup_timeout_s: float = 600.0


@dataclass
class Destination:
    """A C-STORE SCP results are sent to."""

    ae_title: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def from_dict(cls, value: Any) -> "Destination":
        """A destination written ``AE@host:port`` or as a mapping of its fields."""
        return cls.parse(value) if isinstance(value, str) else build(cls, value, "destination", error=ConfigError)

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """Parse ``AE@host:port`` (optionally suffixed ``+tls``)."""
        m = re.fullmatch(r"\s*([^@]{1,16})@([^:]+):(\d+)(\+tls)?\s*", text)
        if not m:
            raise ConfigError(f"destination {text!r} is not AE@host:port")
        return cls(m.group(1), m.group(2), int(m.group(3)), bool(m.group(4)))

    @property
    def name(self) -> str:
        """Stable name used in the outbox (also a safe file-name component)."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.ae_title}@{self.host}_{self.port}")


@dataclass
class OutboxConfig:
    """Delivery of results."""

    destinations: list[Destination] = field(default_factory=list)
    calling_ae_title: str = ""
    retry_initial_s: float = 10.0
    retry_max_s: float = 600.0
    retry_horizon_s: float = 7 * 24 * 3600.0
    poll_interval_s: float = 1.0


@dataclass
class LoggingConfig:
    """Log output."""

    format: str = "json"
    level: str = "INFO"


@dataclass
class NodeConfig:
    """The whole node configuration."""

    scp: ScpConfig = field(default_factory=ScpConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def spool_dir(self) -> Path:
        return Path(self.spool.dir)

    @property
    def models_dir(self) -> Path | None:
        """The model-set folder the worker loads (None for a processor without one)."""
        models = self.worker.options.get("models")
        return Path(models) if models else None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid setting."""
        for name, ae in (("scp.ae_title", self.scp.ae_title),
                         ("outbox.calling_ae_title", self.outbox.calling_ae_title or "X")):
            if not _AE_RE.match(ae) or ae.strip() == "" or "\\" in ae:
                raise ConfigError(f"{name}: {ae!r} is not a valid AE title (1-16 printable chars)")
        if not (0 < self.scp.port < 65536):
            raise ConfigError(f"scp.port: {self.scp.port} out of range")
        if not self.scp.allowed_calling_aes:
            raise ConfigError("scp.allowed_calling_aes: empty; list the PACS AE titles (or '*' for any)")
        if not self.scp.allowed_hosts:
            raise ConfigError("scp.allowed_hosts: empty; list the PACS addresses or CIDRs "
                              "(or write 'any' to accept every host)")
        for entry in self.scp.allowed_hosts:
            if entry.strip().lower() != "any":
                try:
                    ipaddress.ip_network(entry.strip(), strict=False)
                except ValueError:
                    raise ConfigError(f"scp.allowed_hosts: {entry!r} is not an IP address, "
                                      "a CIDR or 'any'") from None
        if not 0 < self.scp.max_associations_per_host <= self.scp.max_associations:
            raise ConfigError("scp.max_associations_per_host must be between 1 and scp.max_associations")
        if not 4096 <= self.scp.max_pdu_size <= 16 * 1024 * 1024:
            raise ConfigError(f"scp.max_pdu_size: {self.scp.max_pdu_size} not in 4096..16777216 "
                              "(0 = unlimited is not allowed: it would let a peer size our buffers)")
        if self.scp.max_instance_mb <= 0:
            raise ConfigError("scp.max_instance_mb must be > 0")
        for name in ("network_timeout_s", "acse_timeout_s", "dimse_timeout_s", "tls_handshake_timeout_s"):
            if getattr(self.scp, name) <= 0:
                raise ConfigError(f"scp.{name} must be > 0 (a timeout that never fires lets a peer hold a slot)")
        if self.scp.csa_non_image not in ("ignore", "store"):
            raise ConfigError(f"scp.csa_non_image: {self.scp.csa_non_image!r} is not 'ignore' or 'store'")
        if self.scp.tls.enabled and not (self.scp.tls.cert_file and self.scp.tls.key_file):
            raise ConfigError("scp.tls: enabled but cert_file/key_file not set")
        if self.study.quiet_period_s < 0 or self.study.interrupted_quiet_period_s < 0:
            raise ConfigError("study.quiet_period_s and study.interrupted_quiet_period_s must be >= 0")
        if self.spool.retention_days < 0:
            raise ConfigError("spool.retention_days must be >= 0")
        if self.worker.concurrency < 1:
            raise ConfigError("worker.concurrency must be >= 1")
        if self.worker.study_timeout_s <= 0:
            raise ConfigError("worker.study_timeout_s must be > 0")
        if ":" not in self.worker.processor:
            raise ConfigError(f"worker.processor: {self.worker.processor!r} is not 'module:attribute'")
        if self.outbox.retry_initial_s <= 0 or self.outbox.retry_max_s < self.outbox.retry_initial_s:
            raise ConfigError("outbox.retry_initial_s must be > 0 and <= outbox.retry_max_s")
        if self.logging.format not in ("json", "text"):
            raise ConfigError("logging.format must be 'json' or 'text'")


def load_config(path: str | os.PathLike[str] | None,
                environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read the YAML file (if given), apply ``TSC_NODE_*`` overrides and validate.

    The file is the node's own, or a shared settings file (docs/configuration.md):
    then the ``node`` section configures the node and the ``app`` section is the
    application configuration its worker runs with.

    Args:
        path: YAML configuration file, or None for defaults plus environment.
        environ: Environment to read overrides from (default ``os.environ``).

    Returns:
        The validated configuration. A relative ``spool.dir`` and the relative paths
        of ``worker.options`` are resolved against the configuration file's folder.

    Raises:
        ConfigError: The file or an override is invalid; the message names the setting.
    """
    data: Any = {}
    base = Path.cwd()
    app_section = None
    if path is not None:
        p = Path(path)
        raw = read_mapping(p, error=ConfigError)
        data = section(raw, "node") or {}
        if is_settings_file(raw):
            app_section = raw.get("app")
        base = p.resolve().parent
    cfg: NodeConfig = build(NodeConfig, data, "", error=ConfigError)
    env = os.environ if environ is None else environ
    apply_env(cfg, ENV_PREFIX, env, ignore=(CONFIG_ENV,), error=ConfigError)
    spool = Path(cfg.spool.dir).expanduser()
    cfg.spool.dir = str(spool if spool.is_absolute() else base / spool)
    options = dict(cfg.worker.options)
    if app_section is not None:
        if options:
            raise ConfigError("node.worker.options: the settings file has an app section; write the app's "
                              "settings there only")
        if not isinstance(app_section, Mapping):
            raise ConfigError("app: expected a mapping of settings")
        options = dict(app_section)
    if cfg.worker.processor == APP_PROCESSOR and not options.get("models") and not options.get("config") \
            and env.get(MODEL_PATH_ENV):
        options["models"] = env[MODEL_PATH_ENV]
    for key in WORKER_PATH_OPTIONS:
        value = options.get(key)
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            options[key] = str(path if path.is_absolute() else base / path)
    cfg.worker.options = options
    cfg.validate()
    if cfg.worker.processor == APP_PROCESSOR:
        _check_app_options(options, "app" if app_section is not None else "worker.options")
    return cfg


def _check_app_options(options: Mapping[str, Any], where: str) -> None:
    """Refuse at start-up (and in ``status``) application settings the worker would refuse."""
    try:
        app_config_from_options(options)
    except ConfigurationError as exc:
        raise ConfigError(f"{where}: {exc.reason}") from None


def config_reference() -> str:
    """Every setting with its default and environment variable, for ``--help`` and the docs."""
    lines = []
    for part in dataclasses.fields(NodeConfig):
        cls = part.type if isinstance(part.type, type) else typing.get_type_hints(NodeConfig)[part.name]
        default = getattr(NodeConfig(), part.name)
        for f in dataclasses.fields(cls):
            value = getattr(default, f.name)
            if dataclasses.is_dataclass(value):
                for sub in dataclasses.fields(value):
                    lines.append(f"  {part.name}.{f.name}.{sub.name} = {getattr(value, sub.name)!r}"
                                 f"  [{ENV_PREFIX}{part.name.upper()}__{f.name.upper()}__{sub.name.upper()}]")
                continue
            env = "" if isinstance(value, dict) else \
                f"  [{ENV_PREFIX}{part.name.upper()}__{f.name.upper()}]"
            lines.append(f"  {part.name}.{f.name} = {value!r}{env}")
    return "\n".join(lines)
