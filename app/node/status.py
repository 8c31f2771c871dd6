"""Node status read from the spool folder (works whether or not the node runs)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .jobstore import read_json


@dataclass
class NodeStatus:
    """Counts of studies and results by state.

    Attributes:
        receiving: Studies with instances still inside their quiet period.
        waiting: Stable studies queued for processing.
        running: Studies being processed now.
        failed: Studies quarantined (not analysable, crashed or timed out).
        processed: Studies processed successfully.
        results_unsent: Result sets not yet acknowledged by every destination.
        results_sent: Result sets acknowledged by every destination.
        results_undeliverable: Result sets given up after the retry horizon.
        oldest_unsent_age_s: Age of the oldest unsent result set.
        failures: The most recent quarantined jobs with their reasons.
    """

    receiving: int = 0
    waiting: int = 0
    running: int = 0
    failed: int = 0
    processed: int = 0
    results_unsent: int = 0
    results_sent: int = 0
    results_undeliverable: int = 0
    oldest_unsent_age_s: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_text(self) -> str:
        lines = [f"studies receiving:      {self.receiving}",
                 f"studies waiting:        {self.waiting}",
                 f"studies running:        {self.running}",
                 f"studies failed:         {self.failed}",
                 f"studies processed:      {self.processed}",
                 f"results unsent:         {self.results_unsent}"
                 + (f" (oldest {self.oldest_unsent_age_s:.0f} s)" if self.oldest_unsent_age_s else ""),
                 f"results sent:           {self.results_sent}",
                 f"results undeliverable:  {self.results_undeliverable}"]
        for f in self.failures:
            lines.append(f"  failed {f['job_id']}: {f.get('reason')}")
        return "\n".join(lines)


def _dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_status(spool_dir: Path, max_failures: int = 10) -> NodeStatus:
    """Summarise the spool at ``spool_dir``."""
    st = NodeStatus()
    st.receiving = len(_dirs(spool_dir / "incoming"))
    for job in _dirs(spool_dir / "jobs"):
        if read_json(job / "job.json").get("state") == "running":
            st.running += 1
        else:
            st.waiting += 1
    quarantined = _dirs(spool_dir / "quarantine")
    st.failed = len(quarantined)
    for q in quarantined[-max_failures:]:
        r = read_json(q / "reason.json")
        st.failures.append({"job_id": q.name, "study_uid": r.get("study_uid"), "reason": r.get("reason")})
    st.processed = len(_dirs(spool_dir / "done"))
    unsent = _dirs(spool_dir / "outbox")
    st.results_unsent = len(unsent)
    if unsent:
        created = [read_json(u / "manifest.json").get("created") for u in unsent]
        created = [c for c in created if isinstance(c, (int, float))]
        if created:
            st.oldest_unsent_age_s = time.time() - min(created)
    st.results_sent = len(_dirs(spool_dir / "sent"))
    st.results_undeliverable = len(_dirs(spool_dir / "undeliverable"))
    return st
