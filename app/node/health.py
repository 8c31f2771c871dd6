"""The running node's heartbeat file, and the static checks ``status`` makes without it.

While the node runs it rewrites ``state/node.json`` every few seconds: its pid,
when it started, and the state of each worker slot (``loading`` its models,
``ready``, ``busy`` with a job, or ``failed`` with the error and the next
retry). ``python -m app status`` reads that file, so it can tell a stopped node
(no fresh heartbeat) from one whose worker cannot load its models, without
talking to the node.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .jobstore import read_json, write_json

logger = logging.getLogger(__name__)

HEARTBEAT_FILE = "node.json"
HEARTBEAT_INTERVAL_S = 5.0
# A heartbeat older than this means the node is not running (killed, hung or stopped).
HEARTBEAT_STALE_S = 30.0


def heartbeat_path(spool_dir: Path) -> Path:
    """``state/node.json`` under the spool folder."""
    return Path(spool_dir) / "state" / HEARTBEAT_FILE


class Heartbeat:
    """Rewrites the heartbeat file on a timer and whenever a worker changes state.

    Args:
        spool_dir: The spool folder (``state/`` and ``tmp/`` live there).
        info: Fixed facts written every time (AE title, port, models path).
        workers: Returns the worker slots' current states.
        interval_s: Seconds between rewrites.
    """

    def __init__(self, spool_dir: Path, info: dict[str, Any], workers: Callable[[], list[dict[str, Any]]],
                 interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.path = heartbeat_path(spool_dir)
        self.tmp = Path(spool_dir) / "tmp"
        self.info = dict(info)
        self.workers = workers
        self.interval_s = interval_s
        self.started = time.time()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def write(self, *, stopped: bool = False) -> None:
        """Write the file now (errors are logged, never raised: the node keeps running)."""
        record = {**self.info, "pid": os.getpid(), "host": socket.gethostname(), "started": self.started,
                  "updated": time.time(), "interval_s": self.interval_s, "stopped": stopped,
                  "workers": self.workers()}
        with self._lock:
            try:
                write_json(self.path, record, self.tmp, fsync=False)
            except OSError as exc:
                logger.warning("heartbeat not written: %s", exc.strerror, extra={"event": "heartbeat_error"})

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def stop(self) -> None:
        """Stop the timer and record a clean stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.write(stopped=True)


def read_heartbeat(spool_dir: Path, now: float | None = None) -> dict[str, Any]:
    """The heartbeat record plus ``running`` (a fresh heartbeat of a node not stopped) and ``age_s``."""
    record = read_json(heartbeat_path(spool_dir))
    if not record:
        return {"running": False, "age_s": None}
    age = (time.time() if now is None else now) - float(record.get("updated", 0))
    record["age_s"] = round(age, 1)
    record["running"] = not record.get("stopped") and age < HEARTBEAT_STALE_S
    return record


def models_problem(models_dir: Path | None) -> str | None:
    """Why the worker cannot find a model set at ``models_dir`` (None when it looks installed).

    A cheap check of the layout only (no weights are read): ``manifest.yaml`` in the
    folder, or in exactly one sub-folder (a MONAI Application Package's layout).
    """
    if models_dir is None:
        return None
    fix = "set worker.options.models in the node's YAML (or HOLOSCAN_MODEL_PATH) to the model-set folder"
    if not models_dir.is_dir():
        return f"models path {models_dir} does not exist; {fix}"
    if (models_dir / "manifest.yaml").is_file():
        return None
    nested = list(models_dir.glob("*/manifest.yaml"))
    if len(nested) == 1:
        return None
    if nested:
        return f"models path {models_dir} holds {len(nested)} model sets; {fix} (one of them)"
    return f"models path {models_dir} has no manifest.yaml; {fix}"
