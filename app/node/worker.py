"""Runs stable studies through the pipeline in long-lived worker processes.

Design: each of ``concurrency`` slots owns one worker process (``spawn``
context, own process group). The process imports and builds the processor once
(models stay loaded between studies) and then takes jobs over a pipe. The
parent waits for each job's answer with the per-study time limit; on a timeout
or a crash it kills the whole process group and starts a fresh worker for the
next study. A failure is therefore confined to the study that caused it: the
study is quarantined with its reason, and a not-analysable SR is still sent.

The processor is configured by dotted path ``module:attribute``: a class or
factory called with the ``worker.options`` mapping, returning an object with
``process(study_dir, output_dir) -> ProcessOutcome`` (see :class:`StudyProcessor`).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from .jobstore import read_json, write_json
from .logs import redact_free_text
from .results import record_results, sr_references, supersede_earlier_results
from .spool import Spool
from .study_tracker import Job

logger = logging.getLogger(__name__)


@dataclass
class ProcessOutcome:
    """What processing one study produced.

    Attributes:
        analysed: True when a prediction was made.
        reason: Why the study was not analysed (None when analysed).
        result_files: DICOM files to send back (SR, derived series, PDF...).
    """

    analysed: bool
    reason: str | None = None
    result_files: list[Path] = field(default_factory=list)


@runtime_checkable
class StudyProcessor(Protocol):
    """The pipeline as the node sees it."""

    def process(self, study_dir: Path, output_dir: Path) -> ProcessOutcome:
        """Analyse the DICOM files under ``study_dir``; write results under ``output_dir``."""
        ...


def load_processor(dotted: str, options: dict[str, Any]) -> StudyProcessor:
    """Import ``module:attribute`` and call it with ``options`` to get a processor."""
    module_name, _, attr = dotted.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    processor = factory(dict(options))
    if not callable(getattr(processor, "process", None)):
        raise TypeError(f"{dotted} did not return an object with a process() method")
    return processor


def _worker_main(conn: Any, dotted: str, options: dict[str, Any], log_level: str,
                 log_format: str = "json") -> None:
    """Entry point of a worker process: build the processor once, then serve jobs."""
    from .logs import setup_logging

    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(log_format, log_level)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    try:
        processor = load_processor(dotted, options)
    except BaseException as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        study_dir, out_dir = Path(msg[0]), Path(msg[1])
        try:
            outcome = processor.process(study_dir, out_dir)
            conn.send(("ok", {"analysed": bool(outcome.analysed), "reason": outcome.reason,
                              "result_files": [str(p) for p in outcome.result_files]}))
        except BaseException as exc:  # the parent decides what a failure means
            logger.debug("processor raised:\n%s", traceback.format_exc())
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            stage = getattr(exc, "stage", None)
            conn.send(("error", f"{stage + ': ' if stage else ''}{type(exc).__name__}: {reason}"))


# Why a quarantined study has no result: the pipeline judged the data not analysable,
# or processing itself failed (exception, crash, time limit, repeated interruption).
FAILURE_NOT_ANALYSABLE = "not_analysable"
FAILURE_ERROR = "error"


class WorkerFailure(Exception):
    """Processing did not complete: timeout, crash or an exception in the processor."""


class WorkerProcess:
    """One long-lived worker process holding a loaded processor."""

    def __init__(self, dotted: str, options: dict[str, Any], *, startup_timeout_s: float,
                 log_level: str = "WARNING", log_format: str = "json") -> None:
        self.log_format = log_format
        self.dotted = dotted
        self.options = options
        self.startup_timeout_s = startup_timeout_s
        self.log_level = log_level
        self.proc: Any = None
        self.conn: Any = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, name="tsc-node-worker",
                                args=(child, self.dotted, self.options, self.log_level, self.log_format),
                                daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(self.startup_timeout_s):
            self.kill()
            raise WorkerFailure(f"worker did not start within {self.startup_timeout_s:.0f} s")
        try:
            kind, detail = parent.recv()
        except EOFError:
            code = self.proc.exitcode
            self.kill()
            raise WorkerFailure(f"worker exited during start-up (exit code {code})") from None
        if kind != "ready":
            self.kill()
            raise WorkerFailure(f"processor {self.dotted} could not be loaded: {detail}")
        logger.info("worker ready", extra={"event": "worker_ready", "pid": self.proc.pid,
                                           "processor": self.dotted})

    def run(self, study_dir: Path, out_dir: Path, timeout_s: float) -> ProcessOutcome:
        """Process one study; raise :class:`WorkerFailure` on timeout, crash or error."""
        if not self.alive:
            self.start()
        self.conn.send((str(study_dir), str(out_dir)))
        if not self.conn.poll(timeout_s):
            self.kill()
            raise WorkerFailure(f"processing exceeded the time limit of {timeout_s:.0f} s")
        try:
            kind, detail = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.kill()
            raise WorkerFailure(f"worker process crashed (exit code {code})") from None
        if kind == "error":
            raise WorkerFailure(f"processor failed: {detail}")
        files = [Path(p) for p in detail["result_files"]]
        return ProcessOutcome(detail["analysed"], detail["reason"], files)

    def kill(self) -> None:
        """Kill the worker and everything it started."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except Exception:
            pass
        self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.alive:
            try:
                self.conn.send(None)
                self.proc.join(5)
            except (OSError, BrokenPipeError):
                pass
        self.kill()


class WorkerPool:
    """Bounded-concurrency runner of jobs with quarantine and exactly-once hand-off.

    Args:
        spool: The spool (jobs, quarantine and done folders live there).
        deliver: ``(job, files, analysed, reason) -> None``; durably hands results to
            the outbox (files are moved). Called exactly once per finished job.
        is_delivered: ``(job_id) -> dict | None``; the outbox record of a job whose
            results were already handed over (a crash came between hand-off and clean-up).
        processor: Dotted path of the processor factory.
        options: Keyword mapping given to the processor factory.
        concurrency: Number of worker processes.
        study_timeout_s: Per-study time limit.
        max_attempts: Runs of one study (interrupted by a crash of the node) before giving up.
        startup_timeout_s: Time allowed for a worker to load the processor.
        keep_done_inputs: Keep the instances of processed studies in ``done/``.
    """

    def __init__(self, spool: Spool, deliver: Callable[[Job, list[Path], bool, str | None], None],
                 is_delivered: Callable[[str], dict[str, Any] | None], *, processor: str,
                 options: dict[str, Any], concurrency: int, study_timeout_s: float,
                 max_attempts: int, startup_timeout_s: float, keep_done_inputs: bool = False,
                 log_level: str = "WARNING", log_format: str = "json") -> None:
        self.log_format = log_format
        self.spool = spool
        self.deliver = deliver
        self.is_delivered = is_delivered
        self.processor = processor
        self.options = options
        self.concurrency = concurrency
        self.study_timeout_s = study_timeout_s
        self.max_attempts = max_attempts
        self.startup_timeout_s = startup_timeout_s
        self.keep_done_inputs = keep_done_inputs
        self.log_level = log_level
        self._queue: list[Job] = []
        self._queued_ids: set[str] = set()
        self._cv = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._workers: list[WorkerProcess] = []
        self._stop_event = threading.Event()
        self.running: dict[str, float] = {}
        self._states: list[dict[str, Any]] = []
        self.on_state_change: Callable[[], None] | None = None
        self.running_studies: dict[str, str] = {}
        self.last_error: str | None = None
        self.disk_poll_s = 1.0

    def states(self) -> list[dict[str, Any]]:
        """Each worker slot's state (``loading``, ``ready``, ``busy``, ``failed``), for the heartbeat."""
        with self._cv:
            return [dict(s) for s in self._states]

    @property
    def ready(self) -> bool:
        """True when at least one worker has loaded the processor (models)."""
        with self._cv:
            return any(s["state"] in ("ready", "busy", "paused") for s in self._states)

    def startup_error(self) -> str | None:
        """The last start-up error while no worker is ready, else None."""
        with self._cv:
            if any(s["state"] in ("ready", "busy", "paused") for s in self._states):
                return None
            return next((s["error"] for s in self._states if s.get("error")), None)

    def _set_state(self, slot: int, state: str, **extra: Any) -> None:
        with self._cv:
            self._states[slot] = {"slot": slot, "state": state, "since": time.time(), **extra}
        if self.on_state_change is not None:
            try:
                self.on_state_change()
            except Exception:  # noqa: BLE001 - a heartbeat write must not stop a worker slot
                logger.exception("state-change callback failed")

    def submit(self, job: Job) -> None:
        """Queue a job (again); a job already queued or running is left alone."""
        with self._cv:
            if job.job_id in self._queued_ids or job.job_id in self.running:
                return
            self._queued_ids.add(job.job_id)
            self._queue.append(job)
            self._cv.notify()

    def start(self) -> None:
        for i in range(self.concurrency):
            w = WorkerProcess(self.processor, self.options, startup_timeout_s=self.startup_timeout_s,
                              log_level=self.log_level, log_format=self.log_format)
            self._workers.append(w)
            self._states.append({"slot": i, "state": "loading", "since": time.time()})
            t = threading.Thread(target=self._slot, args=(i, w), name=f"worker-slot-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking jobs; interrupt running ones (they are resumed at the next start)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._stop_event.set()
        for w in self._workers:
            w.kill()
        for t in self._threads:
            t.join(timeout_s)

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self.running

    def _ensure_worker(self, slot: int, worker: WorkerProcess, backoff: float) -> float:
        """Start the worker if needed; return the next backoff (1 s after a success).

        A failed start is retried on a doubling back-off (up to 5 min) whether or not
        studies are waiting, so a models folder that appears later (a late mount, a
        fixed installation) is picked up without a restart, and every retry is logged.
        """
        if worker.alive:
            return 1.0
        with self._cv:  # a retry keeps the last error visible until it succeeds
            last_error = self._states[slot].get("error")
        self._set_state(slot, "loading", **({"error": last_error} if last_error else {}))
        try:
            worker.start()
        except WorkerFailure as exc:
            with self._cv:
                waiting = len(self._queue)
            self._set_state(slot, "failed", error=str(exc), next_retry=time.time() + backoff)
            logger.error("worker could not start: %s; the SCP keeps accepting studies, which wait "
                         "until the worker starts; retrying in %.0f s", exc, backoff,
                         extra={"event": "worker_start_failed", "studies_waiting": waiting})
            self._stop_event.wait(backoff)
            return min(backoff * 2, 300.0)
        self._set_state(slot, "ready", pid=worker.proc.pid)
        return 1.0

    def _next_job(self) -> Job | None:
        """The oldest queued job whose study is not being processed (caller holds the lock)."""
        busy = set(self.running_studies.values())
        for i, job in enumerate(self._queue):
            if job.study_key not in busy:
                return self._queue.pop(i)
        return None

    def _wait_for_disk(self, slot: int) -> None:
        """Hold new jobs while free space is below ``min_free_mb`` (results need room too)."""
        paused = False
        while not self._stopping and not self.spool.has_room_for(0):
            if not paused:
                logger.error("processing paused: free disk below threshold", extra={
                    "event": "disk_stall", "free_bytes": self.spool.free_bytes(),
                    "min_free_bytes": self.spool.min_free_bytes})
                self._set_state(slot, "paused", error="free disk below spool.min_free_mb")
                paused = True
            self._stop_event.wait(self.disk_poll_s)
        if paused:
            logger.info("processing resumed: free disk above threshold", extra={"event": "disk_ok"})
            self._set_state(slot, "ready")

    def _slot(self, slot: int, worker: WorkerProcess) -> None:
        # Load the processor (models) before the first study arrives.
        backoff = self._ensure_worker(slot, worker, 1.0)
        while True:
            self._wait_for_disk(slot)
            with self._cv:
                job = None
                while not self._stopping and worker.alive and (job := self._next_job()) is None:
                    self._cv.wait(self.disk_poll_s)
                if self._stopping:
                    return
                if job is not None:
                    self.running_studies[job.job_id] = job.study_key
            if job is None:  # the worker is down (failed start, crash, timeout): start it again
                backoff = self._ensure_worker(slot, worker, backoff)
                continue
            with self._cv:
                self.running[job.job_id] = time.time()
            self._set_state(slot, "busy", job_id=job.job_id, pid=worker.proc.pid if worker.proc else None)
            try:
                self.run_job(job, worker)
            except Exception as exc:
                # The job stays in jobs/ as it was; the service submits it again on its next
                # pass, and status shows it meanwhile (never a silent "running").
                self.last_error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"[:200]
                logger.exception("job handling failed; it will be retried", extra={
                    "event": "job_error", "job_id": job.job_id})
                self._mark_queued(job)
            finally:
                with self._cv:
                    self.running.pop(job.job_id, None)
                    self.running_studies.pop(job.job_id, None)
                    self._queued_ids.discard(job.job_id)
                    self._cv.notify_all()
                if worker.alive:
                    self._set_state(slot, "ready", pid=worker.proc.pid)

    def _mark_queued(self, job: Job) -> None:
        try:
            record = read_json(job.record_path)
            if record.get("state") == "running":
                record["state"] = "queued"
                record["last_error"] = self.last_error
                write_json(job.record_path, record, self.spool.path("tmp"), fsync=self.spool.fsync)
        except OSError:
            pass  # shown by status as a stuck job until the next pass succeeds

    def run_job(self, job: Job, worker: WorkerProcess) -> None:
        """Run one job to a delivered result (or to quarantine)."""
        tmp = self.spool.path("tmp")
        delivered = self.is_delivered(job.job_id)
        if delivered is not None:
            self._finish(job, bool(delivered.get("analysed")), delivered.get("reason"),
                         delivered.get("failure") or FAILURE_NOT_ANALYSABLE)
            return
        newer = [j for j in sorted(p.name for p in self.spool.path("jobs").iterdir()
                                   if not p.name.startswith("."))
                 if j > job.job_id and j.split("-", 1)[-1] == job.study_key]
        if newer:
            # A later batch re-opened the study; its job holds everything received.
            self._finish(job, True, f"superseded before processing by {newer[-1]}", state="superseded")
            logger.info("job skipped: a newer job holds everything received for the study",
                        extra={"event": "job_superseded", "job_id": job.job_id, "newer_job": newer[-1]})
            return
        record = read_json(job.record_path)
        attempts = int(record.get("attempts", 0))
        out_dir = job.path / "output"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        started = time.monotonic()
        failure = FAILURE_ERROR  # unless the processor itself answers "not analysable"
        if attempts >= self.max_attempts:
            analysed, reason, files = False, (f"processing was interrupted {attempts} times "
                                              "(node crash or kill); not tried again"), []
        else:
            record.update(state="running", attempts=attempts + 1, started=time.time())
            write_json(job.record_path, record, tmp, fsync=self.spool.fsync)
            logger.info("processing study", extra={"event": "job_started", "job_id": job.job_id,
                                                   "study_uid": job.study_uid,
                                                   "attempt": attempts + 1})
            try:
                if self._stopping:
                    raise WorkerFailure("node stopping")
                outcome = worker.run(job.input_dir, out_dir, self.study_timeout_s)
                analysed, reason, files = outcome.analysed, outcome.reason, outcome.result_files
                files = [f for f in files if _inside(f, out_dir)]
                failure = FAILURE_NOT_ANALYSABLE
            except WorkerFailure as exc:
                if self._stopping:
                    # Interrupted by a graceful stop: not the study's fault, resumed at next start.
                    record.update(state="queued", attempts=attempts)
                    write_json(job.record_path, record, tmp, fsync=self.spool.fsync)
                    return
                analysed, reason, files = False, str(exc), []
        if not analysed and not files:
            files = self._fallback_sr(job, reason, out_dir / "fallback")
        reason = redact_free_text(reason)
        superseded = supersede_earlier_results(self.spool, job, files, analysed)
        refs = sr_references(files)
        self.deliver(job, files, analysed, reason)
        record_results(self.spool, job, refs, analysed)
        self._finish(job, analysed, reason, failure)
        logger.info("study processed" if analysed else f"study {failure.replace('_', ' ')}; quarantined",
                    extra={"event": "job_finished", "job_id": job.job_id, "study_uid": job.study_uid,
                           "analysed": analysed, "reason": reason, "results": len(files),
                           "supersedes": superseded,
                           **({} if analysed else {"failure": failure}),
                           "seconds": round(time.monotonic() - started, 3)})

    def _fallback_sr(self, job: Job, reason: str | None, out_dir: Path) -> list[Path]:
        """The pipeline's own not-analysable SR, written here when the pipeline could not (crash, hang)."""
        from app.config import AppConfig, app_config_from_options
        from app.pipeline import write_not_analysable
        from operators.errors import PipelineError

        try:
            config = app_config_from_options(self.options)
        except PipelineError:  # options of another processor than the app's pipeline: default outputs
            config = AppConfig()
        try:
            error = PipelineError(reason or "unknown error", stage="processing")
            return write_not_analysable(job.input_dir, out_dir, error, config)
        except Exception as exc:  # noqa: BLE001 - logged; the job is still finished and quarantined
            logger.error("could not build the not-analysable SR: %s", type(exc).__name__,
                         extra={"event": "fallback_sr_failed", "job_id": job.job_id})
            return []

    def _finish(self, job: Job, analysed: bool, reason: str | None, failure: str = FAILURE_ERROR,
                state: str | None = None) -> None:
        reason = redact_free_text(reason)
        record = read_json(job.record_path)
        record.update(state=state or ("done" if analysed else "failed"), reason=reason, finished=time.time())
        if not analysed:
            record["failure"] = failure
        write_json(job.record_path, record, self.spool.path("tmp"), fsync=self.spool.fsync)
        shutil.rmtree(job.path / "output", ignore_errors=True)
        if analysed:
            if not self.keep_done_inputs:
                shutil.rmtree(job.input_dir, ignore_errors=True)
            os.replace(job.path, self.spool.path("done") / job.job_id)
        else:
            write_json(job.path / "reason.json", {"job_id": job.job_id, "study_uid": job.study_uid,
                                                  "reason": reason, "failure": failure,
                                                  "finished": time.time()}, self.spool.path("tmp"),
                       fsync=self.spool.fsync)
            os.replace(job.path, self.spool.path("quarantine") / job.job_id)


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return Path(path).is_file()
    except ValueError:
        return False
