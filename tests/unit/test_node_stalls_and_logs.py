"""Stalled states visible in status and recovered without a restart; one sender per destination; logs."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from pydicom.uid import generate_uid

from app.node.config import Destination, OutboxConfig
from app.node.jobstore import read_json, write_json
from app.node.logs import JsonFormatter, RateLimitFilter, RedactingFilter, redact_free_text
from app.node.outbox import Outbox
from app.node.spool import Spool
from app.node.status import read_status
from app.node.study_tracker import Job, StudyTracker
from tests.node_helpers import PacsPeer, free_port, make_instance, wait_until


def _handler(buf: io.StringIO, burst: int = 5) -> logging.Handler:
    h = logging.StreamHandler(buf)
    h.setFormatter(JsonFormatter())
    h.addFilter(RedactingFilter())
    h.addFilter(RateLimitFilter(burst=burst, window_s=60))
    return h


def test_pynetdicom_records_are_redacted_and_garbage_cannot_flood_the_log() -> None:
    buf = io.StringIO()
    log = logging.getLogger("pynetdicom.test_redaction")
    log.propagate = False
    log.addHandler(_handler(buf))
    log.setLevel(logging.INFO)
    try:
        crafted = "1.2.3 Smith^John 2015-01-01"
        log.error("No supported service class available for the SOP Class UID '%s'", crafted)
        try:
            raise ValueError(f"bad value {crafted!r}")
        except ValueError as exc:
            log.exception(exc)
        for _ in range(1000):
            log.error("Unknown PDU type received '0x%02X'", 0x4B)
    finally:
        log.handlers.clear()
    text = buf.getvalue()
    assert "Smith" not in text and "2015" not in text
    assert "<value>" in text and "(ValueError)" in text
    assert len(text.splitlines()) <= 2 + 5  # two distinct messages, then the burst of the flood


def test_reasons_keep_no_free_text() -> None:
    reason = "[series_selection] no FLAIR: #3 'AX T2 Smith^John' and #4 \"flair bob\" rejected"
    assert redact_free_text(reason) == "[series_selection] no FLAIR: #3 <text> and #4 <text> rejected"


def _job(spool: Spool, name: str, state: str) -> Path:
    job = spool.path("jobs") / name
    (job / "input").mkdir(parents=True)
    write_json(job / "job.json", {"job_id": name, "study_key": name.split("-", 1)[1], "state": state},
               spool.path("tmp"), fsync=False)
    return job


def test_status_shows_stuck_and_half_made_jobs_and_a_full_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    long_ago = time.time() - 600
    for name in ("00000000000000000001-1.2.3", "00000000000000000002-1.2.4"):
        job = _job(spool, name, "running")
        record = read_json(job / "job.json")
        record["started"] = long_ago
        write_json(job / "job.json", record, spool.path("tmp"), fsync=False)
    staged = spool.path("jobs") / ".new-00000000000000000003-1.2.5"
    (staged / "input").mkdir(parents=True)
    assert not any("half-made" in p for p in read_status(spool.root).problems), \
        "a job being made right now is not a problem"
    os.utime(staged, (long_ago, long_ago))
    (spool.path("invalid") / "x1234.dcm").write_bytes(b"")
    # a live node whose only worker runs job 2
    write_json(spool.path("state") / "node.json", {
        "pid": os.getpid(), "updated": time.time(), "interval_s": 5, "stopped": False,
        "workers": [{"slot": 0, "state": "busy", "job_id": "00000000000000000002-1.2.4"}]},
        spool.path("tmp"), fsync=False)
    free_mb = os.statvfs(spool.root).f_bavail * os.statvfs(spool.root).f_frsize / 2 ** 20
    st = read_status(spool.root, min_free_mb=free_mb + 1024)
    assert st.node["running"] and st.stuck_jobs == ["00000000000000000001-1.2.3"]
    assert st.staged_jobs == 1 and st.invalid_instances == 1
    problems = " | ".join(st.problems)
    for expected in ("recorded running that no worker runs", "half-made", "disk:"):
        assert expected in problems, problems
    assert "disk:" in st.as_text()
    # with enough room and nothing stuck, none of these is a problem
    write_json(spool.path("state") / "node.json", {
        "pid": os.getpid(), "updated": time.time(), "interval_s": 5, "stopped": False,
        "workers": [{"slot": 0, "state": "busy", "job_id": "00000000000000000001-1.2.3"},
                    {"slot": 1, "state": "busy", "job_id": "00000000000000000002-1.2.4"}]},
        spool.path("tmp"), fsync=False)
    (staged / "input").rmdir()
    staged.rmdir()
    assert read_status(spool.root, min_free_mb=0).problems == []


def test_half_made_job_is_finished_or_dropped_on_the_next_pass_without_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    tracker = StudyTracker(spool, quiet_period_s=0)
    complete = spool.path("jobs") / ".new-00000000000000000001-1.2.3"
    (complete / "input" / "1.2.3.4").mkdir(parents=True)
    write_json(complete / "job.json", {"job_id": "00000000000000000001-1.2.3", "study_key": "1.2.3",
                                       "state": "queued"}, spool.path("tmp"), fsync=False)
    partial = spool.path("jobs") / ".new-00000000000000000002-1.2.4"
    (partial / "input").mkdir(parents=True)
    old = time.time() - 3600
    for p in (complete, partial):
        os.utime(p, (old, old))
    tracker.poll()
    assert [j.job_id for j in tracker.pending_jobs()] == ["00000000000000000001-1.2.3"]
    assert not partial.exists()


def _silent_peer(stop: threading.Event) -> int:
    """A TCP listener that accepts and never answers (a hung PACS)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []

    def run() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass
        for c in conns:
            c.close()
        srv.close()
    threading.Thread(target=run, daemon=True).start()
    return int(srv.getsockname()[1])


def test_a_silent_destination_does_not_delay_the_others(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    stop = threading.Event()
    silent_port = _silent_peer(stop)
    pacs = PacsPeer(tmp_path / "pacs").start()
    # "AAA" sorts first: the old single sender tried it first and waited for its timeout
    config = OutboxConfig(destinations=[Destination("AAA", "127.0.0.1", silent_port),
                                        Destination("PACS", "127.0.0.1", pacs.port)],
                          retry_initial_s=60, retry_max_s=60, poll_interval_s=0.1)
    outbox = Outbox(spool, config, "TSCNODE")
    study = generate_uid()
    result = tmp_path / "result.dcm"
    make_instance(study, generate_uid()).save_as(result, enforce_file_format=True)
    job = Job("00000000000000000001-x", spool.path("jobs") / "j", "x", study)
    outbox.start()
    try:
        t0 = time.monotonic()
        outbox.enqueue(job, [result], True, None)
        wait_until(lambda: pacs.received, 10, 0.05)
        assert time.monotonic() - t0 < 5  # not behind the silent PACS's 30 s timeouts
        def manifest() -> dict:
            return json.loads((spool.path("outbox") / job.job_id / "manifest.json").read_text())
        wait_until(lambda: manifest()["destinations"]["PACS_127.0.0.1_%d" % pacs.port]["state"] == "sent", 5, 0.05)
        assert manifest()["destinations"]["AAA_127.0.0.1_%d" % silent_port]["state"] == "pending"
    finally:
        stop.set()
        outbox.stop(timeout_s=1)
        pacs.stop()
