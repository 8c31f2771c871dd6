"""Study completion by a quiet period, and the queue of stable studies.

A study is complete when no instance of it has arrived for ``quiet_period_s``
(what PACS routers call a stable study). A study is analysed on everything
received for it: ``studies/<study>/`` keeps every instance received (for
``reopen_window_s`` after the study's last job), and each job's input
``jobs/<job_id>/input`` is a snapshot (hard links) of that archive plus the new
batch. Instances that arrive after the study was queued re-open it: after
another quiet period the whole study is analysed again and the new SR supersedes
the earlier one (see :mod:`app.node.worker`). A batch for a study whose window
has passed is quarantined with its reason instead of being analysed alone. The
job record ``job.json`` holds its state (``queued`` / ``running``), attempt
count, study UID and what the batch added.

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

from .jobstore import STAGING_GRACE_S, read_json, write_json
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
        interrupted_quiet_period_s: Quiet period after a restart or an aborted association.
        reopen_window_s: How long after its last job a study re-opens for late instances.
    """

    def __init__(self, spool: Spool, quiet_period_s: float,
                 interrupted_quiet_period_s: float | None = None,
                 reopen_window_s: float = 86400.0) -> None:
        self.spool = spool
        self.reopen_window_s = reopen_window_s
        self.quiet_period_s = quiet_period_s
        self.interrupted_quiet_period_s = (quiet_period_s if interrupted_quiet_period_s is None
                                           else interrupted_quiet_period_s)
        self.jobs_dir = spool.path("jobs")
        self._seq_lock = threading.Lock()
        self._last_ns = 0

    def recover(self) -> None:
        """Finish half-done moves and restart the quiet period of incoming studies."""
        self.recover_staging(min_age_s=0.0)
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

    def recover_staging(self, min_age_s: float = STAGING_GRACE_S) -> int:
        """Finish or drop ``jobs/.new-*`` folders left by an error; return how many.

        A staging folder holds hard links only (the instances stay in ``incoming/``
        and ``studies/`` until the job exists), so one without its ``job.json`` is
        dropped and the study is queued again from its sources at the next pass.
        Called at start-up and on every pass, so an exception half-way through
        making a job never hides a study until a restart.
        """
        n = 0
        now = time.time()
        for staging in self.jobs_dir.glob(".new-*"):
            try:
                if now - staging.stat().st_mtime < min_age_s:
                    continue
                job_id = staging.name[len(".new-"):]
                if (staging / "job.json").is_file() and (staging / "input").is_dir():
                    self._finish_job(staging, job_id)
                    logger.warning("half-made job finished", extra={"event": "job_staging_recovered",
                                                                    "job_id": job_id})
                else:
                    shutil.rmtree(staging, ignore_errors=True)
                    key = job_id.split("-", 1)[1] if "-" in job_id else ""
                    if key and (self.spool.incoming / key).is_dir():
                        self.spool.last_activity.setdefault(key, time.monotonic())
                    logger.warning("half-made job dropped; its study is queued again",
                                   extra={"event": "job_staging_dropped", "job_id": job_id})
                n += 1
            except OSError as exc:
                logger.error("half-made job could not be recovered: %s", exc.strerror or type(exc).__name__,
                             extra={"event": "job_staging_error", "job_id": staging.name})
        return n

    def _new_job_id(self, study_key: str) -> str:
        with self._seq_lock:
            ns = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = ns
        return f"{ns:020d}-{study_key}"[:120]

    def poll(self) -> list[Job]:
        """Turn every study quiet for the configured period into a job; return the new jobs."""
        self.recover_staging()
        self.purge_archive()
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
                self.spool.last_activity.pop(key, None)
                self.spool.hold_until.pop(key, None)
            if job is not None:
                new.append(job)
        return new

    def archive_dir(self, study_key: str) -> Path:
        """Where every instance received for a study is kept while it may re-open."""
        return self.spool.path("studies") / study_key

    def purge_archive(self, now: float | None = None) -> int:
        """Drop archived studies whose re-open window has passed; return how many."""
        now = time.time() if now is None else now
        n = 0
        for folder in self.spool.path("studies").iterdir():
            record = read_json(folder / "study.json")
            if now - float(record.get("last_job", folder.stat().st_mtime)) > self.reopen_window_s:
                shutil.rmtree(folder, ignore_errors=True)
                n += 1
        return n

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
        archive = self.archive_dir(study_key)
        if seen and not archive.is_dir():
            return self._quarantine_late_batch(study_key, src, len(rel))
        archived = {str(p.relative_to(archive)): p for p in instance_files(archive)} if archive.is_dir() else {}
        new_rel = [r for r in rel if r not in seen]
        series_before = {r.split("/", 1)[0] for r in archived}
        series_after = series_before | {r.split("/", 1)[0] for r in rel}
        job_id = self._new_job_id(study_key)
        staging = self.jobs_dir / f".new-{job_id}"
        staging.mkdir()
        # The job's input is a snapshot of everything received: hard links, no copy.
        sources = {**archived, **{r: src / r for r in rel}}
        for r, path in sources.items():
            target = staging / "input" / r
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        record = {"job_id": job_id, "study_key": study_key,
                  "study_uid": read_study_uid(staging / "input"), "state": "queued", "attempts": 0,
                  "created": time.time(), "instances": len(sources), "series": len(series_after),
                  "new_instances": len(new_rel), "new_series": len(series_after - series_before),
                  "reopened": bool(seen)}
        write_json(staging / "job.json", record, self.spool.path("tmp"), fsync=self.spool.fsync)
        if self.spool.fsync:
            fsync_dir(staging)
        job = self._finish_job(staging, job_id)
        # Only now that the job exists: move the batch into the study's archive.
        for r in rel:
            target = archive / r
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src / r, target)
        shutil.rmtree(src, ignore_errors=True)
        write_json(archive / "study.json", {"study_key": study_key, "last_job": time.time(),
                                            "job_id": job_id}, self.spool.path("tmp"), fsync=self.spool.fsync)
        if self.spool.fsync:
            fsync_dir(self.spool.incoming)
        with open(seen_path, "a", encoding="ascii") as f:
            f.write("".join(r + "\n" for r in new_rel))
            f.flush()
            if self.spool.fsync:
                os.fsync(f.fileno())
        logger.info("study re-opened by late instances; queued for re-analysis" if seen else
                    "study stable; queued",
                    extra={"event": "study_queued", "job_id": job_id, "study_uid": job.study_uid,
                           "instances": len(sources), "new_instances": len(new_rel),
                           "reopened": bool(seen)})
        return job

    def _quarantine_late_batch(self, study_key: str, src: Path, n: int) -> None:
        """Instances of a study whose re-open window has passed: kept, not analysed alone."""
        job_id = self._new_job_id(study_key)
        target = self.spool.path("quarantine") / job_id
        target.mkdir()
        os.rename(src, target / "input")
        reason = (f"{n} instance(s) arrived after the study's re-open window "
                  f"({self.reopen_window_s:.0f} s); not analysed without the rest of the study")
        write_json(target / "reason.json", {"job_id": job_id, "study_uid": read_study_uid(target / "input"),
                                            "reason": reason}, self.spool.path("tmp"), fsync=self.spool.fsync)
        logger.warning("late batch of a closed study quarantined",
                       extra={"event": "study_late_batch", "job_id": job_id, "instances": n})
        return None

    def _finish_job(self, staging: Path, job_id: str) -> Job:
        study_key = job_id.split("-", 1)[1]
        record = read_json(staging / "job.json")
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
