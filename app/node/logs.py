"""Structured logging for the node: one JSON object per line (or plain text).

Records carry UIDs, job ids, AE titles and hosts, never patient names, IDs or
birth dates; the node never reads those attributes into a log call.
"""

from __future__ import annotations

import json
import logging
import sys
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


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Configure the root logger for the node (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
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
