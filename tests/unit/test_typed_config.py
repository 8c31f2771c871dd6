"""The one configuration system: typed values, unknown keys named, env overrides, one settings file."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from app.config import AppConfig, app_config_from_dict, load_app_config
from app.node.config import ConfigError, load_config as load_node_config
from operators.errors import ConfigurationError
from operators.typed_config import apply_env, build, is_settings_file
from training.config import TrainingConfigError, load_config as load_training_config

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Inner:
    level: Literal["low", "high"] = "low"
    limit: float = 1.0


@dataclass
class Outer:
    name: str
    count: int = 1
    enabled: bool = False
    folder: Path | None = None
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_values_are_typed_and_unknown_keys_are_named() -> None:
    built = build(Outer, {"name": "x", "count": 3, "enabled": True, "folder": "~/data", "tags": ["a"],
                          "inner": {"level": "high", "limit": "1e-3"}})
    assert built == Outer("x", 3, True, Path("~/data").expanduser(), ["a"], Inner("high", 0.001))
    cases = [
        ({"name": "x", "inner": {"levle": "high"}}, r"unknown setting\(s\) in inner: inner\.levle "
                                                   r"\(known: level, limit\)"),
        ({"name": "x", "count": "many"}, r"count: 'many' is not an integer"),
        ({"name": "x", "count": 2.5}, r"count: 2\.5 is not an integer"),
        ({"name": "x", "enabled": "yes"}, r"enabled must be true or false, got 'yes'"),
        ({"name": "x", "tags": "a,b"}, r"tags: expected a list"),
        ({"name": "x", "inner": {"level": "medium"}}, r"inner\.level must be one of low, high, got 'medium'"),
        ({"name": "x", "inner": []}, r"inner: expected a mapping"),
        ({}, r"missing setting\(s\) name"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            build(Outer, data)


def test_environment_text_is_read_as_the_declared_type() -> None:
    built = build(Outer, {"name": "x"})
    applied = apply_env(built, "T_", {"T_COUNT": "7", "T_ENABLED": "yes", "T_TAGS": "a, b",
                                      "T_INNER__LEVEL": "high", "OTHER": "1"})
    assert applied == ["count", "enabled", "inner.level", "tags"]
    assert (built.count, built.enabled, built.tags, built.inner.level) == (7, True, ["a", "b"], "high")
    for env, message in (({"T_NOPE": "1"}, "no setting 'nope'"), ({"T_INNER": "x"}, "is a mapping"),
                         ({"T_COUNT": "x"}, "not an integer")):
        with pytest.raises(ConfigurationError, match=message):
            apply_env(build(Outer, {"name": "x"}), "T_", env)


def test_app_settings_name_the_bad_key() -> None:
    assert app_config_from_dict({"hdbet_mode": "fast", "series_rules": "r.yaml"},
                                base_dir=Path("/etc/tsc")).series_rules == Path("/etc/tsc/r.yaml")
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\): hdbet_mdoe \(known: brain_extraction"):
        app_config_from_dict({"hdbet_mdoe": "fast"})
    with pytest.raises(ConfigurationError, match="outputs: Unknown output setting"):
        app_config_from_dict({"outputs": {"pfd": True}})


SETTINGS = """
app:
  models: models
  brain_extraction: fallback
  clinical_lookup: site/clinical.csv
node:
  scp: {allowed_calling_aes: [ORTHANC], port: 11199}
  spool: {dir: spool}
training: demo
"""


def test_one_settings_file_serves_app_node_and_training(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(SETTINGS)
    assert is_settings_file(yaml.safe_load(SETTINGS))
    app = load_app_config(path)
    assert (app.models, app.brain_extraction, app.clinical_lookup) == \
        (tmp_path / "models", "fallback", tmp_path / "site/clinical.csv")
    node = load_node_config(path, environ={"TSC_NODE_SCP__PORT": "11200"})
    assert node.scp.port == 11200 and node.spool_dir == tmp_path / "spool"
    # the node's worker runs with the app section, paths resolved against the same folder
    assert node.worker.options == {"models": str(tmp_path / "models"), "brain_extraction": "fallback",
                                   "clinical_lookup": str(tmp_path / "site/clinical.csv")}
    assert node.models_dir == tmp_path / "models"
    assert load_training_config(path).name == "tsc-demo-synthetic"
    # the training section may be the training configuration itself
    inline = yaml.safe_load(SETTINGS)
    inline["training"] = yaml.safe_load((REPO / "training/configs/demo.yaml").read_text())
    inline["training"]["name"] = "site-v1"
    path.write_text(yaml.safe_dump(inline))
    assert load_training_config(path).name == "site-v1"


@pytest.mark.parametrize("change, error, message", [
    (("app", "hdbet_mdoe", "fast"), ConfigError, r"app: unknown setting\(s\): hdbet_mdoe"),
    (("node", "scpp", {}), ConfigError, r"unknown setting\(s\): scpp"),
    (("node", "worker", {"options": {"models": "x"}}), ConfigError, "write the app's settings there only"),
    (("training", "folds", 3), TrainingConfigError, r"unknown setting\(s\): folds"),
])
def test_a_typo_in_any_section_is_named(tmp_path: Path, change: tuple, error: type, message: str) -> None:
    data = yaml.safe_load(SETTINGS)
    section, key, value = change
    if section == "training":
        data["training"] = yaml.safe_load((REPO / "training/configs/demo.yaml").read_text())
        data["training"].pop("folds")
        data["training"] = {"fold": value, **data["training"]}
        message = r"unknown setting\(s\): fold "
    else:
        data[section][key] = value
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    loader = load_training_config if section == "training" else load_node_config
    with pytest.raises(error, match=message):
        loader(path, **({} if section == "training" else {"environ": {}}))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_each_program_exits_1_on_a_configuration_error(tmp_path: Path) -> None:
    data = yaml.safe_load(SETTINGS)
    data["app"]["hdbet_mdoe"] = "fast"
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    study = tmp_path / "study"
    study.mkdir()
    app = _run("-m", "app", "-i", str(study), "-o", str(tmp_path / "out"), "-c", str(path))
    node = _run("-m", "app.node", "serve", "--config", str(path))
    data["app"].pop("hdbet_mdoe")
    data["training"] = {"format": "tsc-training/1", "name": "x", "memebers": {}}
    path.write_text(yaml.safe_dump(data))
    training = _run("-m", "training", "train", "--config", str(path), "--cases", str(tmp_path),
                    "--workdir", str(tmp_path / "w"), "--no-progress")
    for name, result, key in (("app", app, "hdbet_mdoe"), ("node", node, "hdbet_mdoe"),
                              ("training", training, "memebers")):
        assert result.returncode == 1, (name, result.stderr)
        assert key in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)


def test_the_documented_settings_file_loads(tmp_path: Path) -> None:
    doc = (REPO / "docs/configuration.md").read_text()
    block = re.search(r"```yaml\n(# /etc/tsc/settings.yaml\n.*?)```", doc, re.S).group(1)
    path = tmp_path / "settings.yaml"
    path.write_text(block)
    (tmp_path / "series-rules.yaml").write_text("")
    assert load_app_config(path).outputs.flair3_series
    node = load_node_config(path, environ={})
    assert node.scp.allowed_hosts == ["10.0.5.20"] and node.outbox.destinations[0].port == 4242
    assert load_training_config(path).name == "tsc-demo-synthetic"
    assert AppConfig().brain_extraction == "auto"
