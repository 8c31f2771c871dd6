"""Tracker, worker pool, outbox and status working on a real spool (no network except the outbox peer)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from app.node.config import Destination, OutboxConfig
from app.node.jobstore import read_json, write_json
from app.node.outbox import Outbox
from app.node.spool import Spool, inspect_dataset
from app.node.status import read_status
from app.node.study_tracker import StudyTracker
from app.node.worker import WorkerPool
from tests.node_helpers import PacsPeer, dataset_body, free_port, make_instance, wait_until

PROCESSOR = "tests.node_doubles:make_result_writer"


def _receive(spool: Spool, tmp: Path, n: int = 3, description: str = "MRI BRAIN",
             study_uid: str | None = None) -> str:
    study_uid = study_uid or generate_uid()
    series = generate_uid(entropy_srcs=[study_uid, "series"])
    for i in range(n):
        ds = make_instance(study_uid, series, payload_bytes=1024, instance_number=i + 1,
                           description=description,
                           sop_uid=generate_uid(entropy_srcs=[study_uid, str(i)]))
        f = tmp / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(f, enforce_file_format=True)
        body = dataset_body(f)
        spool.store(body, f.read_bytes()[: len(f.read_bytes()) - len(body)],
                    inspect_dataset(body, "1.2.840.10008.1.2.1"), ds.SOPInstanceUID)
    return study_uid


def test_quiet_period_and_duplicate_resend(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    tracker = StudyTracker(spool, quiet_period_s=0.3)
    study = _receive(spool, tmp_path)
    assert tracker.poll() == []  # still inside the quiet period
    time.sleep(0.35)
    (job,) = tracker.poll()
    assert job.study_uid == study and len(list(job.input_dir.rglob("*.dcm"))) == 3
    assert read_json(job.record_path)["state"] == "queued"
    assert not spool.incoming_studies()
    # the PACS sends the same study again: recognised, not queued twice
    _receive(spool, tmp_path, study_uid=study)
    time.sleep(0.35)
    assert tracker.poll() == []
    # a new instance of the study is a new batch
    ds = make_instance(study, generate_uid(), payload_bytes=512)
    f = tmp_path / "late.dcm"
    ds.save_as(f, enforce_file_format=True)
    body = dataset_body(f)
    spool.store(body, b"", inspect_dataset(body, "1.2.840.10008.1.2.1"), ds.SOPInstanceUID)
    time.sleep(0.35)
    assert len(tracker.poll()) == 1


def test_recover_requeues_running_jobs_and_finishes_staged_moves(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    tracker = StudyTracker(spool, quiet_period_s=0)
    _receive(spool, tmp_path)
    (job,) = tracker.poll()
    record = read_json(job.record_path)
    record["state"] = "running"
    write_json(job.record_path, record, spool.path("tmp"))
    # a crash after the job snapshot was complete (job.json written) but before its rename
    staged = spool.path("jobs") / ".new-00000000000000000001-1.2.3"
    (staged / "input" / "1.2.3.4").mkdir(parents=True)
    write_json(staged / "job.json", {"job_id": staged.name[5:], "study_key": "1.2.3", "state": "queued"},
               spool.path("tmp"))
    # and one during the snapshot (hard links only, no job.json): dropped, sources intact
    half = spool.path("jobs") / ".new-00000000000000000002-1.2.4"
    (half / "input" / "1.2.4.5").mkdir(parents=True)
    _receive(spool, tmp_path)  # and a study still arriving
    spool.last_activity.clear()
    fresh = StudyTracker(spool, quiet_period_s=60)
    fresh.recover()
    jobs = fresh.pending_jobs()
    assert [j.job_id for j in jobs] == ["00000000000000000001-1.2.3", job.job_id]
    assert not half.exists()
    assert read_json(job.record_path)["state"] == "queued"
    assert len(spool.last_activity) == 1  # the incoming study restarts its quiet period


def _pool(spool: Spool, outbox: Outbox, **kw) -> WorkerPool:
    args = dict(processor=PROCESSOR, options={"ledger": str(spool.root / "ledger.txt")}, concurrency=1,
                study_timeout_s=20, max_attempts=2, startup_timeout_s=60)
    args.update(kw)
    return WorkerPool(spool, outbox.enqueue, outbox.delivered_record, **args)


@pytest.mark.timeout(180)
def test_worker_success_failure_crash_timeout_and_delivery(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    tracker = StudyTracker(spool, quiet_period_s=0)
    pacs = PacsPeer(tmp_path / "pacs").start()
    outbox = Outbox(spool, OutboxConfig(destinations=[Destination("PACS", "127.0.0.1", pacs.port)],
                                        retry_initial_s=0.2, retry_max_s=0.5, poll_interval_s=0.1), "TSCNODE")
    pool = _pool(spool, outbox, study_timeout_s=8)
    studies = {d: _receive(spool, tmp_path, description=d) for d in ("MRI BRAIN", "RAISE", "CRASH", "HANG")}
    studies["AFTER"] = _receive(spool, tmp_path, description="MRI BRAIN AFTER")
    jobs = tracker.poll()
    assert len(jobs) == 5
    pool.start()
    outbox.start()
    try:
        for job in sorted(jobs, key=lambda j: list(studies.values()).index(j.study_uid)):
            pool.submit(job)
        wait_until(lambda: pool.idle() and len(list(spool.path("sent").iterdir())) == 5, 120)
    finally:
        pool.stop()
        outbox.stop()
        pacs.stop()
    st = read_status(spool.root)
    assert (st.processed, st.failed, st.results_sent, st.results_unsent, st.waiting) == (2, 3, 5, 0, 0)
    reasons = {f["study_uid"]: f["reason"] for f in st.failures}
    assert "test double asked to raise" in reasons[studies["RAISE"]]
    assert "crashed" in reasons[studies["CRASH"]]
    assert "time limit" in reasons[studies["HANG"]]
    # every study got exactly one SR back, in its own study; failures got the node's not-analysable SR
    got: dict[str, list[str]] = {}
    for f in (tmp_path / "pacs").iterdir():
        ds = dcmread(f)
        got.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.SeriesDescription))
    assert {k: v for k, v in got.items() if k in (studies["MRI BRAIN"], studies["AFTER"])} == {
        studies["MRI BRAIN"]: ["TSC outcome (test double)"], studies["AFTER"]: ["TSC outcome (test double)"]}
    for kind in ("RAISE", "CRASH", "HANG"):  # the SR writer's own not-analysable series description
        (description,) = got[studies[kind]]
        assert "not analysable" in description.lower(), description
    # the processor was loaded once per worker process: the first two studies share a pid,
    # and a fresh process took over after the crash and the hang
    runs = [line.split() for line in (spool.root / "ledger.txt").read_text().splitlines()]
    pids = {uid: pid for uid, pid in runs}
    assert len(runs) == 5
    assert pids[studies["MRI BRAIN"]] == pids[studies["RAISE"]] == pids[studies["CRASH"]]
    assert pids[studies["AFTER"]] not in (pids[studies["CRASH"]], pids[studies["HANG"]])


def test_interrupted_too_often_is_not_run_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    outbox = Outbox(spool, OutboxConfig(destinations=[]), "TSCNODE")
    _receive(spool, tmp_path)
    (job,) = StudyTracker(spool, 0).poll()
    record = read_json(job.record_path)
    record.update(attempts=2, state="running")
    write_json(job.record_path, record, spool.path("tmp"))
    pool = _pool(spool, outbox)
    pool.run_job(job, worker=None)  # type: ignore[arg-type]  # never started: not run again
    st = read_status(spool.root)
    assert st.failed == 1 and "interrupted 2 times" in st.failures[0]["reason"]
    assert not (spool.root / "ledger.txt").exists()
    outbox.flush_once()
    (entry,) = list(spool.path("sent").iterdir())  # no destination: kept in sent/ with the SR
    assert len(list((entry / "files").iterdir())) == 1


def test_job_already_handed_to_outbox_is_not_processed_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    outbox = Outbox(spool, OutboxConfig(destinations=[]), "TSCNODE")
    _receive(spool, tmp_path)
    (job,) = StudyTracker(spool, 0).poll()
    (job.path / "output").mkdir()
    sr = job.path / "output" / "r.dcm"
    sr.write_bytes(b"x")
    outbox.enqueue(job, [sr], True, None)  # ... and the node died before moving the job to done/
    _pool(spool, outbox).run_job(job, worker=None)  # type: ignore[arg-type]
    assert read_status(spool.root).processed == 1
    assert not (spool.root / "ledger.txt").exists()


def test_outbox_retries_with_the_same_uids_until_the_pacs_is_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    port = free_port()
    cfg = OutboxConfig(destinations=[Destination("PACS", "127.0.0.1", port)], retry_initial_s=0.1,
                       retry_max_s=0.2)
    outbox = Outbox(spool, cfg, "TSCNODE")
    _receive(spool, tmp_path)
    (job,) = StudyTracker(spool, 0).poll()
    out = job.path / "out"
    out.mkdir()
    files = []
    for i in range(2):
        ds = make_instance(job.study_uid, "1.2.3.9", payload_bytes=256, sop_uid=f"1.2.3.9.{i}")
        ds.save_as(out / f"{i}.dcm", enforce_file_format=True)
        files.append(out / f"{i}.dcm")
    outbox.enqueue(job, files, True, None)
    for _ in range(3):  # PACS down
        outbox.flush_once(now=time.time() + 3600)
    (entry,) = outbox.pending_entries()
    d = json.loads((entry / "manifest.json").read_text())["destinations"]["PACS_127.0.0.1_" + str(port)]
    assert d["attempts"] == 3 and d["state"] == "pending" and "connection refused" in d["last_error"]
    assert read_status(spool.root).results_unsent == 1
    pacs = PacsPeer(tmp_path / "pacs", port=port).start()
    try:
        outbox.flush_once(now=time.time() + 3600)
    finally:
        pacs.stop()
    assert sorted(pacs.received) == ["1.2.3.9.0", "1.2.3.9.1"]
    assert not outbox.pending_entries() and read_status(spool.root).results_sent == 1


def test_outbox_gives_up_after_the_horizon(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0, fsync=False)
    cfg = OutboxConfig(destinations=[Destination("PACS", "127.0.0.1", free_port())], retry_initial_s=0.1,
                       retry_max_s=0.1, retry_horizon_s=0.0)
    outbox = Outbox(spool, cfg, "TSCNODE")
    _receive(spool, tmp_path)
    (job,) = StudyTracker(spool, 0).poll()
    sr = tmp_path / "r.dcm"
    make_instance(job.study_uid, "1.2.3.9", payload_bytes=64).save_as(sr, enforce_file_format=True)
    outbox.enqueue(job, [sr], True, None)
    outbox.flush_once()
    assert read_status(spool.root).results_undeliverable == 1
