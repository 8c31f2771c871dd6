"""Spool retention: delete finished entries older than ``spool.retention_days``.

``python -m app cleanup --config node.yaml [--older-than-days N] [--dry-run]``
removes, from ``done/``, ``sent/``, ``undeliverable/`` and ``quarantine/``, every
entry whose last change is older than the retention period, and from ``invalid/``
the instances kept for malformed UIDs. ``quarantine/`` keeps
whole studies (patient data) for review, so it is the folder this matters for.
Studies receiving, queued or running and results not yet delivered are never
touched; nor is ``state/`` (the per-study record that stops a re-sent study from
being processed twice; a few bytes per study, no patient data beyond UIDs).
Run it daily (packaging/systemd/tsc-node-cleanup.timer) while the node runs or not.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

RETENTION_FOLDERS = ("done", "sent", "undeliverable", "quarantine", "invalid")
# Folders whose entries are single files (instances), not job folders.
_FILE_FOLDERS = ("invalid",)


@dataclass
class CleanupReport:
    """What a cleanup pass removed (or would remove, in a dry run)."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.removed.values())


def _last_change(entry: Path) -> float:
    newest = entry.stat().st_mtime
    for p in entry.iterdir():
        if p.is_file():
            newest = max(newest, p.stat().st_mtime)
    return newest


def clean_spool(spool_dir: Path, older_than_days: float, *, dry_run: bool = False,
                now: float | None = None) -> CleanupReport:
    """Remove finished spool entries last changed more than ``older_than_days`` ago.

    Raises:
        ValueError: ``older_than_days`` is negative.
    """
    if older_than_days < 0:
        raise ValueError(f"retention of {older_than_days} days is negative")
    cutoff = (time.time() if now is None else now) - older_than_days * 86400.0
    report = CleanupReport()
    for name in RETENTION_FOLDERS:
        folder = Path(spool_dir) / name
        removed: list[str] = []
        kept = 0
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            as_file = name in _FILE_FOLDERS and entry.is_file()
            if not (entry.is_dir() or as_file) or entry.name.startswith("."):
                continue
            if (entry.stat().st_mtime if as_file else _last_change(entry)) >= cutoff:
                kept += 1
                continue
            removed.append(entry.name)
            if not dry_run:
                entry.unlink() if as_file else shutil.rmtree(entry)
        report.removed[name], report.kept[name] = removed, kept
        if removed:
            logger.info("%s %d entries from %s/", "would remove" if dry_run else "removed", len(removed), name,
                        extra={"event": "spool_cleanup", "folder": name, "entries": len(removed),
                               "dry_run": dry_run})
    return report
