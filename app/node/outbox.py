"""Durable outbox: results are C-STOREd to every destination until acknowledged.

``outbox/<job>/files/`` holds the result files exactly as the pipeline wrote
them, so every retry sends the same SOP Instance UIDs; ``manifest.json`` holds,
per destination, the state (``pending`` / ``sent``), the attempt count, the
time of the next attempt (exponential backoff with jitter, capped) and the SOP
Instance UIDs already acknowledged. When every destination has acknowledged,
the entry moves to ``sent/<job>/`` (manifest only). An entry not acknowledged
within the retry horizon moves to ``undeliverable/<job>/`` with an error log.
A restart simply finds the entries again.

Each destination has its own sender thread, so a PACS that does not answer (and
its network timeouts) delays only the results waiting for that PACS; a lock per
entry serialises the manifest updates of the threads.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.presentation import build_context

from .config import Destination, OutboxConfig
from .jobstore import read_json, write_json
from .spool import Spool, fsync_dir
from .study_tracker import Job

logger = logging.getLogger(__name__)

_STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"


class DeliveryError(Exception):
    """A destination did not acknowledge every file."""


def send_files(files: list[Path], dest: Destination, calling_ae: str, *,
               timeout_s: float = 30.0, ssl_context: ssl.SSLContext | None = None,
               skip_sop_uids: set[str] | None = None) -> list[str]:
    """C-STORE ``files`` to ``dest`` in one association.

    Args:
        files: DICOM files (Part 10) to send as they are.
        dest: Destination AE.
        calling_ae: Our AE title as calling AE.
        timeout_s: ACSE/DIMSE/network timeout.
        ssl_context: Client TLS context when the destination uses TLS.
        skip_sop_uids: SOP Instance UIDs already acknowledged by this destination.

    Returns:
        SOP Instance UIDs acknowledged in this association.

    Raises:
        DeliveryError: Association refused or any file not acknowledged (the UIDs
            acknowledged before the failure are in ``args[1]``).
    """
    skip = skip_sop_uids or set()
    metas = []
    for f in files:
        meta = read_file_meta_info(f)
        metas.append((f, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                      str(meta.TransferSyntaxUID)))
    todo = [m for m in metas if m[2] not in skip]
    if not todo:
        return []
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    pairs: dict[str, list[str]] = {}
    for _, sop_class, _, ts in todo:
        tss = pairs.setdefault(sop_class, [])
        for t in (ts, _EXPLICIT_LE, _IMPLICIT_LE):
            if t not in tss:
                tss.append(t)
    ae.requested_contexts = [build_context(c, tss) for c, tss in pairs.items()][:128]
    tls_args = (ssl_context, dest.host) if ssl_context is not None else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        raise DeliveryError(f"{dest.ae_title}@{dest.host}:{dest.port}: {_association_failure(assoc)}", [])
    acked: list[str] = []
    try:
        for path, _, sop_uid, _ in todo:
            status = assoc.send_c_store(path)
            code = getattr(status, "Status", None)
            if code not in _STORED_STATUSES:
                raise DeliveryError(
                    f"{dest.ae_title} answered status "
                    f"{'none (connection lost)' if code is None else hex(code)} for {path.name}", acked)
            acked.append(sop_uid)
    finally:
        if assoc.is_established:
            assoc.release()
    return acked


def _association_failure(assoc: Any) -> str:
    """Why an association was not established, in the words an operator acts on."""
    if assoc.is_rejected:
        return ("association rejected by the destination (A-ASSOCIATE-RJ): check its AE title and that "
                "it knows this node's AE title and host")
    if assoc.rejected_contexts:  # accepted the association but none of what we offered
        return "the destination accepted none of the offered SOP classes or transfer syntaxes"
    return "no association: connection refused, unreachable or timed out (is the destination up?)"


class Outbox:
    """The outbox folders and the sender thread.

    Args:
        spool: The spool (``outbox/``, ``sent/``, ``undeliverable/`` live there).
        config: Destinations and retry policy.
        calling_ae: AE title used when sending.
        ssl_context: Client TLS context for destinations marked ``tls``.
    """

    def __init__(self, spool: Spool, config: OutboxConfig, calling_ae: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.spool = spool
        self.config = config
        self.calling_ae = config.calling_ae_title or calling_ae
        self.ssl_context = ssl_context
        self.dir = spool.path("outbox")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._dest_threads: dict[str, threading.Thread] = {}
        self._dest_wake: dict[str, threading.Event] = {}
        self._entry_guard = threading.Lock()
        self._entry_locks: dict[str, threading.Lock] = {}
        self._health: dict[str, dict[str, Any]] = {}

    # Hand-off from the worker --------------------------------------------------

    def enqueue(self, job: Job, files: list[Path], analysed: bool, reason: str | None) -> None:
        """Durably take over ``files`` (moved) for delivery; called once per job."""
        staging = self.dir / f".new-{job.job_id}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "files").mkdir(parents=True)
        names = []
        for i, f in enumerate(files):
            name = f"{i:03d}_{f.name}"[:200]
            os.replace(f, staging / "files" / name)
            names.append(name)
        now = time.time()
        manifest = {
            "job_id": job.job_id, "study_uid": job.study_uid, "analysed": analysed,
            "reason": reason, "created": now, "files": names,
            "destinations": {d.name: {"ae_title": d.ae_title, "host": d.host, "port": d.port,
                                      "tls": d.tls, "state": "pending", "attempts": 0,
                                      "next_attempt": now, "last_error": None, "sent_sops": []}
                             for d in self.config.destinations},
        }
        tmp = self.spool.path("tmp")
        if self.spool.fsync:
            fsync_dir(staging / "files")
        write_json(staging / "manifest.json", manifest, tmp, fsync=self.spool.fsync)
        os.rename(staging, self.dir / job.job_id)
        if self.spool.fsync:
            fsync_dir(self.dir)
        logger.info("results queued for delivery", extra={
            "event": "results_queued", "job_id": job.job_id, "study_uid": job.study_uid,
            "files": len(names), "destinations": len(self.config.destinations)})
        self._wake.set()

    def delivered_record(self, job_id: str) -> dict[str, Any] | None:
        """The manifest of a job already handed to the outbox (pending or sent), else None."""
        for sub in ("outbox", "sent", "undeliverable"):
            m = self.spool.path(sub) / job_id / "manifest.json"
            if m.exists():
                return read_json(m)
        return None

    def recover(self) -> None:
        """Drop half-built entries (their job is still pending and will be re-run)."""
        for staging in self.dir.glob(".new-*"):
            shutil.rmtree(staging, ignore_errors=True)

    # Sending -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for wake in list(self._dest_wake.values()):
            wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for t in list(self._dest_threads.values()):
            t.join(timeout_s)

    def pending_entries(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def health(self) -> dict[str, dict[str, Any]]:
        """Per destination: results waiting and the last error (for the node's heartbeat)."""
        with self._entry_guard:
            return {name: dict(h) for name, h in self._health.items()}

    def _run(self) -> None:
        """Start one sender thread per destination seen; a silent PACS delays only its own results."""
        while not self._stop.is_set():
            try:
                names = {d.name for d in self.config.destinations}
                for entry in self.pending_entries():
                    names.update(read_json(entry / "manifest.json").get("destinations", {}))
                for name in names:
                    if name not in self._dest_threads or not self._dest_threads[name].is_alive():
                        self._dest_wake[name] = threading.Event()
                        t = threading.Thread(target=self._run_destination, args=(name,),
                                             name=f"outbox-{name}"[:40], daemon=True)
                        self._dest_threads[name] = t
                        t.start()
                if self._wake.is_set():
                    for wake in list(self._dest_wake.values()):
                        wake.set()
            except Exception:
                logger.exception("outbox pass failed", extra={"event": "outbox_error"})
            self._wake.clear()
            self._wake.wait(self.config.poll_interval_s)

    def _run_destination(self, name: str) -> None:
        wake = self._dest_wake[name]
        while not self._stop.is_set():
            try:
                pending = 0
                for entry in self.pending_entries():
                    if self._stop.is_set():
                        return
                    pending += self._process_entry(entry, None, only=name)
                with self._entry_guard:
                    self._health.setdefault(name, {"last_error": None})["pending"] = pending
            except Exception:
                logger.exception("outbox pass failed", extra={"event": "outbox_error", "destination": name})
            wake.wait(self.config.poll_interval_s)
            wake.clear()

    def flush_once(self, now: float | None = None) -> None:
        """One pass in the calling thread: try every destination whose next attempt is due."""
        for entry in self.pending_entries():
            if self._stop.is_set():
                return
            self._process_entry(entry, now)

    def _backoff(self, attempts: int) -> float:
        base = min(self.config.retry_max_s, self.config.retry_initial_s * 2 ** max(attempts - 1, 0))
        return base * random.uniform(0.8, 1.2)

    def _entry_lock(self, entry: Path) -> threading.Lock:
        with self._entry_guard:
            return self._entry_locks.setdefault(entry.name, threading.Lock())

    def _process_entry(self, entry: Path, now: float | None, only: str | None = None) -> int:
        """Send ``entry`` to its due destinations (or to ``only``); return 1 if it still waits for it."""
        tmp = self.spool.path("tmp")
        lock = self._entry_lock(entry)
        with lock:
            manifest = read_json(entry / "manifest.json")
        if not manifest:
            return 0
        files = [entry / "files" / n for n in manifest.get("files", [])]
        waiting = 0
        for name, d in manifest["destinations"].items():
            if only is not None and name != only:
                continue
            t = time.time() if now is None else now
            if d["state"] != "pending":
                continue
            waiting = 1
            if d["next_attempt"] > t:
                continue
            dest = Destination(d["ae_title"], d["host"], int(d["port"]), bool(d.get("tls")))
            sent = set(d.get("sent_sops", []))
            update: dict[str, Any] = {}
            try:
                acked = send_files(files, dest, self.calling_ae, skip_sop_uids=sent,
                                   ssl_context=self.ssl_context if dest.tls else None)
                update = {"sent_sops": sorted(sent | set(acked)), "state": "sent",
                          "attempts": d["attempts"] + 1, "last_error": None}
                waiting = 0
                logger.info("results delivered", extra={
                    "event": "results_sent", "job_id": manifest["job_id"], "destination": name,
                    "study_uid": manifest.get("study_uid"), "attempt": update["attempts"]})
            except Exception as exc:
                acked = exc.args[1] if isinstance(exc, DeliveryError) and len(exc.args) > 1 else []
                attempts = d["attempts"] + 1
                error = str(exc.args[0] if exc.args else exc)[:300]
                delay = self._backoff(attempts)
                update = {"sent_sops": sorted(sent | set(acked)), "attempts": attempts,
                          "last_error": error, "next_attempt": time.time() + delay}
                if time.time() - manifest["created"] > self.config.retry_horizon_s:
                    update["state"] = "expired"
                    waiting = 0
                    logger.error("results could not be delivered within the retry horizon", extra={
                        "event": "results_expired", "job_id": manifest["job_id"], "destination": name,
                        "attempts": attempts, "error": error})
                else:
                    logger.warning("delivery failed; will retry", extra={
                        "event": "results_retry", "job_id": manifest["job_id"], "destination": name,
                        "attempt": attempts, "retry_in_s": round(delay, 1), "error": error})
            with self._entry_guard:
                self._health.setdefault(name, {"pending": 0})["last_error"] = update.get("last_error")
            with lock:
                if not entry.is_dir():
                    return 0
                manifest = read_json(entry / "manifest.json")
                manifest["destinations"][name].update(update)
                write_json(entry / "manifest.json", manifest, tmp, fsync=self.spool.fsync)
        with lock:
            if not entry.is_dir():
                return 0
            manifest = read_json(entry / "manifest.json")
            states = {d["state"] for d in manifest.get("destinations", {}).values()}
            if "pending" in states:
                return waiting
            target = "undeliverable" if "expired" in states else "sent"
            if target == "sent" and states:
                # Keep the files only when there is no destination at all (results are then
                # collected from sent/ by hand).
                shutil.rmtree(entry / "files", ignore_errors=True)
            os.replace(entry, self.spool.path(target) / entry.name)
        return 0
