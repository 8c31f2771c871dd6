"""Structured logging for the node: one JSON object per line (or plain text).

Records carry UIDs, job ids, AE titles and hosts, never patient names, IDs or
birth dates; the node never reads those attributes into a log call. Two filters
sit on the handler, so they apply to every logger (pynetdicom's included):

* :class:`RedactingFilter` rewrites records of third-party loggers (pynetdicom,
  pydicom, highdicom): quoted values, which may be peer-controlled UIDs or element
  values, become ``<value>``, non-printable characters are dropped and
  tracebacks are reduced to their exception type.
* :class:`RateLimitFilter` lets through at most ``burst`` records per
  (logger, message template) in each ``window_s`` and then one summary line with
  the number suppressed, so a peer sending garbage cannot flood the log.

:func:`redact_free_text` does the same for reasons the node stores and shows
(``job_finished``, ``reason.json``, ``status``): a pipeline reason may quote a
Series Description, which is free text and can hold a name.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import warnings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as JSON with its ``extra`` fields at top level."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def redact_free_text(text: str | None, limit: int = 300) -> str | None:
    """``text`` with quoted values replaced by ``<text>`` and non-printables removed.

    Pipeline reasons quote series descriptions (``#3 'T2 AX'``); those are free
    text typed at the scanner and may hold a name, so they never reach the node's
    logs, job records or status.
    """
    if text is None:
        return None
    return _UNPRINTABLE.sub("", _QUOTED.sub("<text>", str(text)))[:limit]


_THIRD_PARTY = ("pynetdicom", "pydicom", "highdicom")


class RedactingFilter(logging.Filter):
    """Rewrites records of pynetdicom, pydicom and highdicom (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in _THIRD_PARTY:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is still logged, redacted
                message = str(record.msg)
            record.msg = _UNPRINTABLE.sub("", _QUOTED.sub("<value>", message))[:300]
            record.args = None
            if record.exc_info and record.exc_info[0] is not None:
                record.msg += f" ({record.exc_info[0].__name__})"
            record.exc_info = None
            record.exc_text = None
        return True


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per (logger, template) per ``window_s``, then a summary.

    Args:
        burst: Records let through per key and window.
        window_s: Window length in seconds.
    """

    def __init__(self, burst: int = 20, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [start, count, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(getattr(record, "event", "") or record.msg)[:120])
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.window_s:
                suppressed = int(window[2]) if window else 0
                self._windows[key] = [now, 1, 0]
                if len(self._windows) > 10000:  # bound the table itself
                    self._windows = {k: w for k, w in self._windows.items() if now - w[0] < self.window_s}
                if suppressed:
                    record.msg = f"{record.msg} [{suppressed} similar line(s) suppressed in the last window]"
                    record.suppressed = suppressed
                return True
            window[1] += 1
            if window[1] <= self.burst:
                return True
            window[2] += 1
            return False


def setup_logging(fmt: str = "json", level: str = "INFO", *, burst: int = 20, window_s: float = 60.0) -> None:
    """Configure the root logger for the node (stderr), with redaction and rate limiting."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.addFilter(RateLimitFilter(burst, window_s))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every association and request at INFO; keep it quieter.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    # pydicom/pynetdicom validation warnings quote element values (a crafted UID or a
    # name field could carry patient data): keep them out of the node's logs.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("pynetdicom.utils").setLevel(logging.ERROR)
    logging.getLogger("highdicom").setLevel(max(logging.WARNING, root.level))
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*|highdicom\..*")
