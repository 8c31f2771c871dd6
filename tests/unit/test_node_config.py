"""Node configuration: YAML, TSC_NODE_* overrides, validation."""

from pathlib import Path

import pytest

from app.node.config import ConfigError, Destination, config_reference, load_config


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.yaml"
    p.write_text(text)
    return p


BASE = """
scp: {ae_title: TSCNODE, port: 11112, allowed_calling_aes: [PACS]}
spool: {dir: spool}
outbox:
  destinations:
    - {ae_title: PACS, host: 10.0.0.5, port: 104}
    - "ARCHIVE@10.0.0.6:11112"
"""


def test_yaml_is_read_and_relative_spool_resolved(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE), environ={})
    assert cfg.scp.allowed_calling_aes == ["PACS"]
    assert cfg.spool_dir == tmp_path / "spool"
    assert cfg.outbox.destinations == [Destination("PACS", "10.0.0.5", 104),
                                       Destination("ARCHIVE", "10.0.0.6", 11112)]


def test_environment_overrides_scalars_lists_and_nested(tmp_path: Path) -> None:
    env = {"TSC_NODE_SCP__PORT": "4242", "TSC_NODE_SCP__ALLOWED_CALLING_AES": "A, B",
           "TSC_NODE_SCP__TLS__ENABLED": "yes", "TSC_NODE_SCP__TLS__CERT_FILE": "c.pem",
           "TSC_NODE_SCP__TLS__KEY_FILE": "k.pem", "TSC_NODE_STUDY__QUIET_PERIOD_S": "2.5",
           "TSC_NODE_OUTBOX__DESTINATIONS": "PACS@127.0.0.1:4243+tls", "OTHER": "x"}
    cfg = load_config(_write(tmp_path, BASE), environ=env)
    assert cfg.scp.port == 4242
    assert cfg.scp.allowed_calling_aes == ["A", "B"]
    assert cfg.scp.tls.enabled and cfg.scp.tls.cert_file == "c.pem"
    assert cfg.study.quiet_period_s == 2.5
    assert cfg.outbox.destinations == [Destination("PACS", "127.0.0.1", 4243, tls=True)]


@pytest.mark.parametrize("text, env, match", [
    (BASE + "\nbogus: 1\n", {}, "unknown setting"),
    (BASE, {"TSC_NODE_SCP__NOPE": "1"}, "no setting"),
    (BASE, {"TSC_NODE_SCP__PORT": "abc"}, "not an integer"),
    (BASE, {"TSC_NODE_SCP__PORT": "70000"}, "out of range"),
    (BASE, {"TSC_NODE_SCP__AE_TITLE": "A" * 17}, "not a valid AE title"),
    (BASE, {"TSC_NODE_SCP__ALLOWED_CALLING_AES": ""}, "allowed_calling_aes"),
    (BASE, {"TSC_NODE_OUTBOX__DESTINATIONS": "nonsense"}, "AE@host:port"),
    (BASE, {"TSC_NODE_WORKER__PROCESSOR": "no_colon"}, "module:attribute"),
    (BASE, {"TSC_NODE_SCP__TLS__ENABLED": "1"}, "cert_file"),
])
def test_invalid_settings_are_named(tmp_path: Path, text: str, env: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text), environ=env)


def test_reference_lists_every_environment_variable() -> None:
    ref = config_reference()
    for name in ("TSC_NODE_SCP__PORT", "TSC_NODE_STUDY__QUIET_PERIOD_S", "TSC_NODE_WORKER__PROCESSOR",
                 "TSC_NODE_OUTBOX__RETRY_HORIZON_S", "TSC_NODE_SCP__TLS__CA_FILE"):
        assert name in ref


def test_example_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "app" / "node" / "node.example.yaml"
    cfg = load_config(example, environ={"TSC_NODE_OUTBOX__DESTINATIONS": "ORTHANC@orthanc:4242"})
    assert cfg.scp.allowed_calling_aes == ["ORTHANC"] and cfg.outbox.destinations[0].port == 4242
    # the models path is the one the image (Dockerfile HOLOSCAN_MODEL_PATH) and the systemd guide use
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert cfg.models_dir == Path("/opt/tsc/models") and "HOLOSCAN_MODEL_PATH=/opt/tsc/models" in dockerfile


def test_cli_help_documents_file_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    from app.node.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "TSC_NODE_<SECTION>__<KEY>" in out and "TSC_NODE_SCP__AE_TITLE" in out


def test_cli_status_reads_the_spool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from app.node.cli import main
    from app.node.spool import Spool
    cfg = _write(tmp_path, BASE)
    Spool(tmp_path / "spool")
    (tmp_path / "spool" / "quarantine" / "job1").mkdir(parents=True)
    (tmp_path / "spool" / "quarantine" / "job1" / "reason.json").write_text(
        json.dumps({"job_id": "job1", "study_uid": "1.2.3", "reason": "worker process crashed\ntraceback...",
                    "failure": "error"}))
    (tmp_path / "spool" / "jobs" / "job2").mkdir(parents=True)
    # the node never ran on this spool: a problem (exit 1), but the spool is read
    assert main(["status", "--config", str(cfg), "--json"]) == 1
    st = json.loads(capsys.readouterr().out)
    assert st["failed"] == 1 and st["errors"] == 1 and st["not_analysable"] == 0 and st["waiting"] == 1
    assert st["failures"][0]["reason"] == "worker process crashed"  # first line only
    assert st["studies"][0]["reason"] == "node not running"
    assert main(["status", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "studies failed:         1 (0 not analysable, 1 processing errors)" in out
    assert "node: not running (no heartbeat in this spool)" in out
    assert main(["status", "--config", str(cfg), "--check"]) == 1
    assert capsys.readouterr().out.startswith("PROBLEM: node not running")


def test_cli_status_wrong_spool_path_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.node.cli import main
    cfg = _write(tmp_path, BASE.replace("{dir: spool}", "{dir: nowhere/spool}"))
    assert main(["status", "--config", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("UNKNOWN: cannot read the spool") and str(tmp_path / "nowhere" / "spool") in err
    (tmp_path / "nowhere" / "spool").mkdir(parents=True)  # a folder, but not a spool
    assert main(["status", "--config", str(cfg)]) == 2
    assert "is not a node spool" in capsys.readouterr().err
    assert main(["status", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_relative_worker_paths_resolve_against_the_yaml(tmp_path: Path) -> None:
    text = BASE + "worker:\n  options: {models: m, clinical_lookup: lut.csv, brain_extraction: fallback}\n"
    cfg = load_config(_write(tmp_path, text), environ={"HOLOSCAN_MODEL_PATH": "/elsewhere"})
    assert cfg.worker.options == {"models": str(tmp_path / "m"), "clinical_lookup": str(tmp_path / "lut.csv"),
                                  "brain_extraction": "fallback"}
    assert cfg.models_dir == tmp_path / "m"


def test_config_path_variable_is_not_a_setting(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE), environ={"TSC_NODE_CONFIG": str(tmp_path / "node.yaml")})
    assert cfg.scp.allowed_calling_aes == ["PACS"]


def test_models_path_falls_back_to_holoscan_model_path(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE), environ={"HOLOSCAN_MODEL_PATH": "/opt/tsc/models"})
    assert cfg.worker.options["models"] == "/opt/tsc/models" and cfg.models_dir == Path("/opt/tsc/models")
    assert "models" not in load_config(_write(tmp_path, BASE), environ={}).worker.options
    # another processor than the app's pipeline gets no models option it did not ask for
    other = load_config(_write(tmp_path, BASE), environ={"HOLOSCAN_MODEL_PATH": "/x",
                                                         "TSC_NODE_WORKER__PROCESSOR": "tests.node_doubles:x"})
    assert "models" not in other.worker.options
