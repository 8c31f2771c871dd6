"""The DICOM node service: SCP + spool + study tracker + workers + outbox.

Start-up order makes a restart safe: partial writes are dropped, half-done moves
finished, interrupted jobs queued again and unsent results picked up, before the
SCP accepts new associations. SIGTERM/SIGINT only set an event; the main thread
then stops the SCP first (no instance is acknowledged after that), interrupts
running jobs (they run again at the next start) and stops the outbox.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from typing import Any

from .config import NodeConfig
from .health import Heartbeat, models_problem
from .outbox import Outbox
from .scp import StoreScp
from .spool import Spool
from .study_tracker import StudyTracker
from .worker import WorkerPool

logger = logging.getLogger(__name__)


def _client_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    tls = config.scp.tls
    if not any(d.tls for d in config.outbox.destinations):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file or None)
    ctx.check_hostname = False  # PACS certificates rarely name the address used to reach them
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


class NodeService:
    """Everything the ``serve`` command runs.

    Args:
        config: Validated node configuration.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, min_free_bytes=int(config.spool.min_free_mb * 1024 * 1024),
                           fsync=config.spool.fsync)
        self.tracker = StudyTracker(self.spool, config.study.quiet_period_s,
                                    config.study.interrupted_quiet_period_s, config.study.reopen_window_s)
        self.outbox = Outbox(self.spool, config.outbox, config.scp.ae_title, _client_ssl_context(config))
        self.pool = WorkerPool(
            self.spool, self.outbox.enqueue, self.outbox.delivered_record,
            processor=config.worker.processor, options=config.worker.options,
            concurrency=config.worker.concurrency, study_timeout_s=config.worker.study_timeout_s,
            max_attempts=config.worker.max_attempts, startup_timeout_s=config.worker.startup_timeout_s,
            keep_done_inputs=config.spool.keep_done_inputs, log_level=config.logging.level,
            log_format=config.logging.format)
        self.scp = StoreScp(config.scp, self.spool,
                            interrupted_hold_s=config.study.interrupted_quiet_period_s)
        self.heartbeat = Heartbeat(self.spool.root, {
            "ae_title": config.scp.ae_title, "port": config.scp.port,
            "models": str(config.models_dir) if config.models_dir else None}, self.pool.states)
        self.pool.on_state_change = self.heartbeat.write
        self._stop = threading.Event()
        self._tracker_thread: threading.Thread | None = None

    def start(self) -> None:
        """Recover the spool, then start workers, outbox, tracker and SCP."""
        dropped = self.spool.clean_tmp()
        self.tracker.recover()
        self.outbox.recover()
        pending = self.tracker.pending_jobs()
        logger.info("node starting", extra={
            "event": "node_starting", "spool": str(self.spool.root), "partial_writes_dropped": dropped,
            "incoming_studies": len(self.spool.incoming_studies()), "jobs_resumed": len(pending),
            "results_unsent": len(self.outbox.pending_entries())})
        problem = models_problem(self.config.models_dir)
        if problem:
            logger.error("%s; the SCP accepts studies, which wait until the models load",
                         problem, extra={"event": "models_missing"})
        self.heartbeat.start()
        self.pool.start()
        for job in pending:
            self.pool.submit(job)
        self.outbox.start()
        self._tracker_thread = threading.Thread(target=self._track, name="study-tracker", daemon=True)
        self._tracker_thread.start()
        self.scp.start()

    def _track(self) -> None:
        while not self._stop.wait(self.config.study.poll_interval_s):
            try:
                for job in self.tracker.poll():
                    self.pool.submit(job)
                    error = self.pool.startup_error()
                    if error:
                        logger.warning("study received but cannot be analysed until the worker starts: %s",
                                       error, extra={"event": "study_waiting_for_worker",
                                                     "job_id": job.job_id})
                # Jobs left on disk by an error (a failed hand-off, a full disk) are queued
                # again on every pass: nothing waits for a restart.
                for job in self.tracker.pending_jobs():
                    self.pool.submit(job)
            except Exception:
                logger.exception("study tracker pass failed", extra={"event": "tracker_error"})

    def stop(self) -> None:
        """Stop in the safe order (SCP first)."""
        self._stop.set()
        self.scp.stop()
        if self._tracker_thread is not None:
            self._tracker_thread.join(10)
        self.pool.stop()
        self.outbox.stop()
        self.heartbeat.stop()
        logger.info("node stopped", extra={"event": "node_stopped"})

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT; the signal handler only sets an event."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        while not self._stop.wait(0.5):
            pass
        logger.info("stop requested", extra={"event": "node_stopping"})
        self.stop()
