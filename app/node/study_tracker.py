"""Study completion by a quiet period, and the queue of stable studies.

A study is complete when no instance of it has arrived for ``quiet_period_s``
(what PACS routers call a stable study). Its incoming folder is then moved, in
one atomic rename, into ``jobs/<job_id>/input``; the job record ``job.json``
holds its state (``queued`` / ``running``), attempt count and study UID.

After a restart, every incoming folder gets the longer
``interrupted_quiet_period_s`` (the node may have died in the middle of the
study, and the sender needs time to retry; the same applies to studies of an
association that was aborted), and every job folder is queued again, so
nothing that was acknowledged is forgotten. A batch whose instances were all part of an
earlier job of the same study (a PACS re-sending a study already processed) is
recognised from ``state/<study>.seen`` and not processed twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from .jobstore import read_json, write_json
from .spool import Spool, fsync_dir, uid_key

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """A stable study waiting for, or in, processing."""

    job_id: str
    path: Path
    study_key: str
    study_uid: str

    @property
    def input_dir(self) -> Path:
        return self.path / "input"

    @property
    def record_path(self) -> Path:
        return self.path / "job.json"


def instance_files(folder: Path) -> list[Path]:
    """All spooled instance files under ``folder``, sorted."""
    return sorted(folder.rglob("*.dcm"))


def read_study_uid(folder: Path) -> str:
    """Study Instance UID of the first readable instance under ``folder`` ('' if none).

    A malformed UID (which could carry any text) is replaced by its spool key, so
    records and logs only ever hold well-formed UIDs or hashes.
    """
    for f in instance_files(folder)[:5]:
        try:
            ds = dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except Exception:
            continue
        return uid_key(str(ds.get("StudyInstanceUID", "")))
    return ""


class StudyTracker:
    """Finds stable studies in the spool and turns them into jobs.

    Args:
        spool: The spool written by the SCP.
        quiet_period_s: Seconds without a new instance after which a study is complete.
    """

    def __init__(self, spool: Spool, quiet_period_s: float,
                 interrupted_quiet_period_s: float | None = None) -> None:
        self.spool = spool
        self.quiet_period_s = quiet_period_s
        self.interrupted_quiet_period_s = (quiet_period_s if interrupted_quiet_period_s is None
                                           else interrupted_quiet_period_s)
        self.jobs_dir = spool.path("jobs")
        self._seq_lock = threading.Lock()
        self._last_ns = 0

    def recover(self) -> None:
        """Finish half-done moves and restart the quiet period of incoming studies."""
        for staging in self.jobs_dir.glob(".new-*"):
            job_id = staging.name[len(".new-"):]
            if (staging / "input").is_dir():
                self._finish_job(staging, job_id)
            else:
                shutil.rmtree(staging, ignore_errors=True)
        now = time.monotonic()
        keys = self.spool.incoming_studies()
        for key in keys:
            self.spool.last_activity.setdefault(key, now)
        # The node may have died in the middle of these studies: give the sender time to retry.
        self.spool.hold(keys, self.interrupted_quiet_period_s)
        for job in self.pending_jobs():
            record = read_json(job.record_path)
            if record.get("state") == "running":
                logger.warning("job was interrupted while running; queued again",
                               extra={"event": "job_resumed", "job_id": job.job_id,
                                      "study_uid": job.study_uid,
                                      "attempts": record.get("attempts", 0)})
                record["state"] = "queued"
                write_json(job.record_path, record, self.spool.path("tmp"), fsync=self.spool.fsync)

    def _new_job_id(self, study_key: str) -> str:
        with self._seq_lock:
            ns = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = ns
        return f"{ns:020d}-{study_key}"[:120]

    def poll(self) -> list[Job]:
        """Turn every study quiet for the configured period into a job; return the new jobs."""
        now = time.monotonic()
        new: list[Job] = []
        for key, last in list(self.spool.last_activity.items()):
            if now - last < self.quiet_period_s or now < self.spool.hold_until.get(key, 0.0):
                continue
            with self.spool.study_lock(key):
                last = self.spool.last_activity.get(key)
                t = time.monotonic()
                if last is None or t - last < self.quiet_period_s or t < self.spool.hold_until.get(key, 0.0):
                    continue
                job = self._make_job(key)
                del self.spool.last_activity[key]
                self.spool.hold_until.pop(key, None)
            if job is not None:
                new.append(job)
        return new

    def _make_job(self, study_key: str) -> Job | None:
        src = self.spool.incoming / study_key
        if not src.is_dir():
            return None
        files = instance_files(src)
        if not files:
            shutil.rmtree(src, ignore_errors=True)
            return None
        seen_path = self.spool.path("state") / f"{study_key}.seen"
        rel = [str(p.relative_to(src)) for p in files]
        seen = set(seen_path.read_text().split()) if seen_path.exists() else set()
        if seen and set(rel) <= seen:
            logger.info("study re-sent with no new instance; not processed again",
                        extra={"event": "study_duplicate", "study_key": study_key,
                               "instances": len(rel)})
            shutil.rmtree(src, ignore_errors=True)
            return None
        job_id = self._new_job_id(study_key)
        staging = self.jobs_dir / f".new-{job_id}"
        staging.mkdir()
        os.rename(src, staging / "input")
        if self.spool.fsync:
            fsync_dir(self.spool.incoming)
            fsync_dir(staging)
        job = self._finish_job(staging, job_id)
        with open(seen_path, "a", encoding="ascii") as f:
            f.write("".join(r + "\n" for r in rel if r not in seen))
            f.flush()
            if self.spool.fsync:
                os.fsync(f.fileno())
        logger.info("study stable; queued", extra={"event": "study_queued", "job_id": job_id,
                                                   "study_uid": job.study_uid, "instances": len(rel)})
        return job

    def _finish_job(self, staging: Path, job_id: str) -> Job:
        study_key = job_id.split("-", 1)[1]
        record = read_json(staging / "job.json")
        if not record:
            record = {"job_id": job_id, "study_key": study_key,
                      "study_uid": read_study_uid(staging / "input"),
                      "state": "queued", "attempts": 0, "created": time.time(),
                      "instances": len(instance_files(staging / "input"))}
            write_json(staging / "job.json", record, self.spool.path("tmp"), fsync=self.spool.fsync)
        final = self.jobs_dir / job_id
        os.rename(staging, final)
        if self.spool.fsync:
            fsync_dir(self.jobs_dir)
        return Job(job_id, final, study_key, record.get("study_uid", ""))

    def pending_jobs(self) -> list[Job]:
        """Jobs on disk (queued or running), oldest first."""
        jobs = []
        for p in sorted(self.jobs_dir.iterdir()):
            if p.name.startswith(".") or not p.is_dir():
                continue
            record = read_json(p / "job.json")
            jobs.append(Job(p.name, p, record.get("study_key", p.name.split("-", 1)[-1]),
                            record.get("study_uid", "")))
        return jobs
