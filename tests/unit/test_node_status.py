"""``status`` as an operator's tool: heartbeat, reasons, problems (what ``--check`` exits 1 on)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from app.node.health import HEARTBEAT_STALE_S, Heartbeat, models_problem, read_heartbeat
from app.node.jobstore import write_json
from app.node.spool import Spool
from app.node.status import Thresholds, read_status, short_reason


def _job(spool: Spool, job_id: str, created: float, state: str = "queued") -> None:
    (spool.root / "jobs" / job_id / "input").mkdir(parents=True)
    write_json(spool.root / "jobs" / job_id / "job.json",
               {"job_id": job_id, "study_uid": "1.2.3", "state": state, "created": created, "started": created,
                "attempts": 1}, spool.path("tmp"))


def test_worker_that_cannot_load_models_is_a_problem_naming_the_path(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    error = ("processor app.pipeline:make_processor could not be loaded: ModelConfigurationError: "
             "models path /opt/models does not exist: set it ... (worker.options.models in the node's YAML)")
    hb = Heartbeat(spool.root, {"models": "/opt/models"},
                   lambda: [{"slot": 0, "state": "failed", "error": error, "since": time.time()}])
    hb.write()
    now = time.time()
    _job(spool, "j1", now - 30)
    _job(spool, "j2", now - 10)
    st = read_status(spool.root, models_dir=Path("/opt/models"), now=now)
    assert st.node["running"] and st.waiting == 2
    assert st.problems[0].startswith("worker cannot start:") and "/opt/models" in st.problems[0]
    assert all(s["reason"].startswith("worker cannot start:") for s in st.studies)
    assert [round(s["for_s"]) for s in st.studies] == [30, 10]
    assert st.check_line().startswith("PROBLEM: worker cannot start") and "worker.options.models" in st.check_line()
    assert "worker 0: failed: processor app.pipeline" in st.as_text()


def test_healthy_node_has_no_problem_and_says_why_each_study_waits(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    Heartbeat(spool.root, {}, lambda: [{"slot": 0, "state": "busy", "job_id": "j0"}]).write()
    now = time.time()
    _job(spool, "j0", now - 100, state="running")
    _job(spool, "j1", now - 50)
    _job(spool, "j2", now - 20)
    st = read_status(spool.root, now=now)
    assert st.problems == [] and st.check_line().startswith("OK: node running")
    assert [(s["state"], s["reason"]) for s in st.studies] == [
        ("running", "processing (attempt 1)"), ("waiting", "next in line"),
        ("waiting", "queued behind 1 other studies")]


def test_old_waits_unsent_results_and_undeliverable_are_problems(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    Heartbeat(spool.root, {}, lambda: [{"slot": 0, "state": "ready"}]).write()
    now = time.time()
    _job(spool, "j1", now - 7200)
    (spool.root / "outbox" / "r1").mkdir()
    write_json(spool.root / "outbox" / "r1" / "manifest.json", {
        "job_id": "r1", "created": now - 5000, "destinations": {
            "PACS@10.0.0.5_104": {"state": "pending", "attempts": 7, "next_attempt": now + 60,
                                  "last_error": "association with PACS@10.0.0.5:104 rejected"}}}, spool.path("tmp"))
    (spool.root / "undeliverable" / "r0").mkdir()
    st = read_status(spool.root, thresholds=Thresholds(max_wait_s=3600, max_unsent_age_s=3600), now=now)
    assert len(st.problems) == 3
    assert st.problems[0].startswith("study j1 waiting 2.0 h")
    assert "rejected" in st.problems[1] and st.problems[1].startswith("result r1 unsent for")
    assert st.problems[2].startswith("1 result sets undeliverable")
    assert st.liveness_problems == []  # a container health check stays green: the node itself is fine
    assert st.unsent[0]["destinations"]["PACS@10.0.0.5_104"]["attempts"] == 7
    assert "7 attempts: association with PACS@10.0.0.5:104 rejected" in st.as_text()
    assert read_status(spool.root, thresholds=Thresholds(max_wait_s=1e6, max_unsent_age_s=1e6),
                       now=now).problems == [st.problems[2]]


def test_stale_or_stopped_heartbeat_means_not_running(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    hb = Heartbeat(spool.root, {}, lambda: [])
    hb.write()
    assert read_heartbeat(spool.root)["running"]
    assert not read_heartbeat(spool.root, now=time.time() + HEARTBEAT_STALE_S + 1)["running"]
    hb.write(stopped=True)
    st = read_status(spool.root)
    assert not st.node["running"] and st.problems[0].startswith("node not running (last heartbeat")


def test_failures_are_split_into_not_analysable_and_errors(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    for name, failure in (("q1", "not_analysable"), ("q2", "error"), ("q3", None)):
        (spool.root / "quarantine" / name).mkdir()
        (spool.root / "quarantine" / name / "reason.json").write_text(json.dumps(
            {"job_id": name, "reason": "x " * 200, "failure": failure}))
    st = read_status(spool.root)
    assert (st.failed, st.not_analysable, st.errors) == (3, 1, 2)
    assert all(len(f["reason"]) <= 160 for f in st.failures)


def test_static_models_check(tmp_path: Path) -> None:
    assert "does not exist" in models_problem(tmp_path / "nope")
    assert "no manifest.yaml" in models_problem(tmp_path)
    (tmp_path / "set" / "manifest.yaml").parent.mkdir()
    (tmp_path / "set" / "manifest.yaml").write_text("x")
    assert models_problem(tmp_path) is None and models_problem(tmp_path / "set") is None
    assert models_problem(None) is None


def test_short_reason() -> None:
    assert short_reason("a\n  b") == "a" and short_reason(None) == "" and short_reason("x  y") == "x y"
    assert short_reason("y" * 300).endswith("...") and len(short_reason("y" * 300)) == 160


def test_cleanup_removes_only_finished_entries_past_retention(tmp_path: Path, capsys) -> None:
    import os

    from app.node.cleanup import clean_spool
    from app.node.cli import main

    spool = Spool(tmp_path / "spool", fsync=False)
    old = time.time() - 40 * 86400
    for folder in ("done", "sent", "undeliverable", "quarantine", "jobs", "outbox", "incoming"):
        for name, stamp in (("old", old), ("new", None)):
            entry = spool.root / folder / name
            entry.mkdir()
            (entry / "record.json").write_text("{}")
            if stamp:
                os.utime(entry / "record.json", (stamp, stamp))
                os.utime(entry, (stamp, stamp))
    for name, stamp in (("old.dcm", old), ("new.dcm", None)):  # instances kept for malformed UIDs
        (spool.root / "invalid" / name).write_bytes(b"")
        if stamp:
            os.utime(spool.root / "invalid" / name, (stamp, stamp))
    dry = clean_spool(spool.root, 30, dry_run=True)
    assert dry.count == 5 and (spool.root / "quarantine" / "old").exists()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"scp: {{allowed_calling_aes: [PACS]}}\nspool: {{dir: {spool.root}, retention_days: 30}}\n")
    assert main(["cleanup", "--config", str(cfg)]) == 0
    assert "quarantine/     removed 1, kept 1" in capsys.readouterr().out
    for folder in ("done", "sent", "undeliverable", "quarantine"):
        assert sorted(p.name for p in (spool.root / folder).iterdir()) == ["new"]
    assert sorted(p.name for p in (spool.root / "invalid").iterdir()) == ["new.dcm"]
    for folder in ("jobs", "outbox", "incoming"):  # work in progress is never touched
        assert sorted(p.name for p in (spool.root / folder).iterdir()) == ["new", "old"]
    assert main(["cleanup", "--config", str(tmp_path / "nope.yaml")]) == 2
