"""Small helpers for the JSON records the node keeps next to jobs and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spool import atomic_write

#: A ``jobs/.new-*`` staging folder younger than this is a job being made right now,
#: not one left behind by an error.
STAGING_GRACE_S = 30.0


def write_json(path: Path, data: dict[str, Any], tmp_dir: Path, *, fsync: bool = True) -> None:
    """Atomically replace ``path`` with ``data`` as JSON."""
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode(), tmp_dir, fsync=fsync)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON record; a missing or unreadable record reads as ``{}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
