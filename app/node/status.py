"""Node status for operators and monitors, read from the spool folder.

Works whether or not the node runs: it reads the node's heartbeat
(``state/node.json``, see :mod:`app.node.health`), the job records and the
outbox manifests. :func:`read_status` returns a :class:`NodeStatus`; its
``problems`` are what ``python -m app status --check`` turns into exit code 1.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .health import models_problem, read_heartbeat
from .jobstore import STAGING_GRACE_S, read_json
from .logs import redact_free_text

# Sub-folders every spool has once the node has started on it.
SPOOL_FOLDERS = ("incoming", "jobs", "outbox")
REASON_CHARS = 160


class SpoolUnreadable(Exception):
    """The spool folder does not exist, is not a node spool, or cannot be read."""


@dataclass
class Thresholds:
    """When a waiting study or an unsent result becomes a problem for ``--check``.

    Attributes:
        max_wait_s: A study queued (not running) longer than this.
        max_unsent_age_s: A result set not acknowledged by every destination after this.
    """

    max_wait_s: float = 3600.0
    max_unsent_age_s: float = 3600.0


@dataclass
class NodeStatus:
    """What the node is doing, and what needs an operator.

    Attributes:
        node: The heartbeat: ``running``, ``pid``, ``age_s`` (seconds since the last
            heartbeat), ``workers`` (each slot's state and start-up error).
        receiving: Studies with instances still inside their quiet period.
        waiting: Stable studies queued for processing.
        running: Studies being processed now.
        failed: Studies quarantined (``not_analysable`` + ``errors``).
        not_analysable: Quarantined because the pipeline judged the data not analysable.
        errors: Quarantined because processing failed (exception, crash, time limit).
        processed: Studies processed successfully.
        results_unsent: Result sets not yet acknowledged by every destination.
        results_sent: Result sets acknowledged by every destination.
        results_undeliverable: Result sets given up after the retry horizon.
        oldest_unsent_age_s: Age of the oldest unsent result set.
        studies: One line per study receiving, waiting or running: why and for how long.
        unsent: One line per unsent result set, with each destination's last error.
        failures: The most recent quarantined studies with their kind and a short reason.
        disk_free_mb: Free space on the spool's filesystem.
        invalid_instances: Instances kept in ``invalid/`` for malformed UIDs (never processed).
        staged_jobs: Half-made jobs (``jobs/.new-*``), finished or dropped on the node's next pass.
        stuck_jobs: Jobs recorded ``running`` that no worker of the running node is processing.
        problems: Short sentences, one per condition that needs an operator.
        liveness_problems: The subset about the node itself (not running, models not loaded).
    """

    node: dict[str, Any] = field(default_factory=dict)
    receiving: int = 0
    waiting: int = 0
    running: int = 0
    failed: int = 0
    not_analysable: int = 0
    errors: int = 0
    processed: int = 0
    results_unsent: int = 0
    results_sent: int = 0
    results_undeliverable: int = 0
    oldest_unsent_age_s: float | None = None
    studies: list[dict[str, Any]] = field(default_factory=list)
    unsent: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    disk_free_mb: float | None = None
    invalid_instances: int = 0
    staged_jobs: int = 0
    stuck_jobs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    liveness_problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_text(self) -> str:
        node = self.node
        if node.get("running"):
            head = f"node: running (pid {node.get('pid')}, heartbeat {node.get('age_s', 0):.0f} s ago)"
        elif node.get("age_s") is None:
            head = "node: not running (no heartbeat in this spool)"
        else:
            head = (f"node: not running ({'stopped' if node.get('stopped') else 'last heartbeat'} "
                    f"{_age(node.get('age_s'))} ago)")
        lines = [head]
        for w in node.get("workers", []) if node.get("running") else []:
            text = f"  worker {w.get('slot')}: {w.get('state')}"
            if w.get("state") == "busy":
                text += f" ({w.get('job_id')})"
            if w.get("error"):
                text += f": {short_reason(w['error'])}"
            lines.append(text)
        lines += [f"studies receiving:      {self.receiving}",
                  f"studies waiting:        {self.waiting}",
                  f"studies running:        {self.running}",
                  f"studies failed:         {self.failed} ({self.not_analysable} not analysable, "
                  f"{self.errors} processing errors)",
                  f"studies processed:      {self.processed}",
                  f"results unsent:         {self.results_unsent}"
                  + (f" (oldest {_age(self.oldest_unsent_age_s)})" if self.oldest_unsent_age_s else ""),
                  f"results sent:           {self.results_sent}",
                  f"results undeliverable:  {self.results_undeliverable}",
                  f"instances invalid:      {self.invalid_instances}",
                  "disk free:              "
                  + (f"{self.disk_free_mb:.0f} MB" if self.disk_free_mb is not None else "?")]
        for s in self.studies:
            lines.append(f"  {s['state']:<9} {s['id']}  {_age(s['for_s'])}: {s['reason']}")
        for u in self.unsent:
            for name, d in u["destinations"].items():
                if d.get("state") == "sent":
                    continue
                lines.append(f"  unsent    {u['job_id']} -> {name}  {_age(u['age_s'])}, {d.get('attempts', 0)} "
                             f"attempts: {d.get('last_error') or 'not tried yet'}")
        for f in self.failures:
            kind = {"not_analysable": "not analysable", "error": "error"}.get(f.get("failure") or "", "failed")
            lines.append(f"  {kind:<15} {f['job_id']}: {f.get('reason')}")
        lines.append("problems: " + ("none" if not self.problems else ""))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def check_line(self) -> str:
        """One line for a monitor (Nagios style)."""
        if not self.problems:
            return (f"OK: node running, {self.waiting + self.running} studies in work, "
                    f"{self.results_unsent} results unsent")
        return "PROBLEM: " + "; ".join(self.problems)


def short_reason(text: Any, limit: int = REASON_CHARS) -> str:
    """The first line of ``text``, whitespace collapsed, quoted free text removed, cut to ``limit``."""
    first = " ".join(str(text or "").strip().splitlines()[:1][0].split()) if str(text or "").strip() else ""
    first = redact_free_text(first, limit=10 * limit) or ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:  # gone since it was listed
        return None


def _newest_mtime(folder: Path) -> float | None:
    newest = None
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                m = os.stat(os.path.join(root, name)).st_mtime
            except OSError:
                continue
            newest = m if newest is None else max(newest, m)
    return newest


def check_spool(spool_dir: Path) -> None:
    """Raise :class:`SpoolUnreadable` unless ``spool_dir`` is a readable node spool."""
    if not spool_dir.is_dir():
        raise SpoolUnreadable(f"spool folder {spool_dir} does not exist (spool.dir or TSC_NODE_SPOOL__DIR; "
                              "is this the node's configuration?)")
    missing = [name for name in SPOOL_FOLDERS if not (spool_dir / name).is_dir()]
    if missing:
        raise SpoolUnreadable(f"{spool_dir} is not a node spool (no {', '.join(missing)}/; the node creates "
                              "them when it starts)")
    for name in SPOOL_FOLDERS:
        if not os.access(spool_dir / name, os.R_OK | os.X_OK):
            raise SpoolUnreadable(f"{spool_dir / name} is not readable by this user (uid {os.getuid()})")


def read_status(spool_dir: Path, max_failures: int = 10, *, models_dir: Path | None = None,
                quiet_period_s: float | None = None, thresholds: Thresholds | None = None,
                now: float | None = None, min_free_mb: float | None = None) -> NodeStatus:
    """Summarise the spool at ``spool_dir``.

    Args:
        spool_dir: The node's spool folder.
        max_failures: How many recent quarantined studies to list.
        models_dir: The configured models path, checked for a model set.
        quiet_period_s: The configured quiet period (to say when a receiving study turns stable).
        thresholds: When waiting studies and unsent results count as problems.
        now: Current time (tests).
        min_free_mb: ``spool.min_free_mb``: less free space than this is a problem (receipt
            refused, processing paused).

    Raises:
        SpoolUnreadable: ``spool_dir`` is not a readable node spool.
    """
    check_spool(spool_dir)
    now = time.time() if now is None else now
    limits = thresholds or Thresholds()
    st = NodeStatus(node=read_heartbeat(spool_dir, now))
    node_running = bool(st.node.get("running"))
    workers = st.node.get("workers", []) if node_running else []
    worker_ready = any(w.get("state") in ("ready", "busy", "paused") for w in workers)
    worker_error = None
    if workers and not worker_ready:
        worker_error = next((w.get("error") for w in workers if w.get("error")), None)

    for study in _dirs(spool_dir / "incoming"):
        st.receiving += 1
        last = _newest_mtime(study)
        quiet = now - last if last else None
        reason = "receiving" + (f"; last instance {_age(quiet)} ago" if quiet is not None else "")
        if quiet_period_s is not None:
            reason += f" (complete after {_age(quiet_period_s)} quiet)"
        if not node_running:
            reason += "; node not running"
        st.studies.append({"state": "receiving", "id": study.name, "for_s": quiet, "reason": reason})

    queued_before = 0
    busy = {w.get("job_id") for w in workers if w.get("state") == "busy"}
    for job in _dirs(spool_dir / "jobs"):
        record = read_json(job / "job.json")
        if record.get("state") == "running":
            st.running += 1
            if node_running and job.name not in busy and \
                    now - float(record.get("started") or now) > 2 * float(st.node.get("interval_s") or 5):
                st.stuck_jobs.append(job.name)
            since = float(record.get("started") or record.get("created") or now)
            reason = f"processing (attempt {record.get('attempts', 1)})"
            if not node_running:
                reason = "was processing when the node stopped; runs again at the next start"
            st.studies.append({"state": "running", "id": job.name, "study_uid": record.get("study_uid"),
                               "for_s": now - since, "reason": reason})
            continue
        st.waiting += 1
        waited = now - float(record.get("created") or now)
        if not node_running:
            reason = "node not running"
        elif worker_error:
            reason = f"worker cannot start: {short_reason(worker_error)}"
        elif queued_before:
            reason = f"queued behind {queued_before} other studies"
        else:
            reason = "next in line"
        queued_before += 1
        st.studies.append({"state": "waiting", "id": job.name, "study_uid": record.get("study_uid"),
                           "for_s": waited, "reason": reason})
        if waited > limits.max_wait_s:
            st.problems.append(f"study {job.name} waiting {_age(waited)}: {reason}")

    quarantined = _dirs(spool_dir / "quarantine")
    st.failed = len(quarantined)
    for q in quarantined:
        r = read_json(q / "reason.json")
        if r.get("failure") == "not_analysable":
            st.not_analysable += 1
        else:
            st.errors += 1
    for q in quarantined[-max_failures:]:
        r = read_json(q / "reason.json")
        st.failures.append({"job_id": q.name, "study_uid": r.get("study_uid"), "failure": r.get("failure"),
                            "reason": short_reason(r.get("reason"))})
    st.processed = len(_dirs(spool_dir / "done"))

    unsent = _dirs(spool_dir / "outbox")
    st.results_unsent = len(unsent)
    for u in unsent:
        manifest = read_json(u / "manifest.json")
        created = manifest.get("created")
        age = now - created if isinstance(created, (int, float)) else None
        if age is not None:
            st.oldest_unsent_age_s = max(st.oldest_unsent_age_s or 0.0, age)
        dests = {name: {"state": d.get("state"), "attempts": d.get("attempts", 0),
                        "last_error": short_reason(d.get("last_error")) or None,
                        "next_attempt_in_s": (round(d["next_attempt"] - now, 1)
                                              if isinstance(d.get("next_attempt"), (int, float)) else None)}
                 for name, d in (manifest.get("destinations") or {}).items()}
        st.unsent.append({"job_id": u.name, "study_uid": manifest.get("study_uid"), "age_s": age,
                          "destinations": dests})
        if age is not None and age > limits.max_unsent_age_s:
            errors = "; ".join(f"{n}: {d['last_error']}" for n, d in dests.items() if d.get("last_error"))
            st.problems.append(f"result {u.name} unsent for {_age(age)}" + (f" ({errors})" if errors else ""))
    st.results_sent = len(_dirs(spool_dir / "sent"))
    st.results_undeliverable = len(_dirs(spool_dir / "undeliverable"))
    if st.stuck_jobs:
        st.problems.append(f"{len(st.stuck_jobs)} job(s) recorded running that no worker runs "
                           f"({', '.join(st.stuck_jobs[:3])}): a failed hand-off, queued again on the "
                           "node's next pass")
    staged = [m for m in map(_mtime, (spool_dir / "jobs").glob(".new-*")) if m is not None]
    st.staged_jobs = len(staged)
    # a young staging folder is a job being made right now; only a left-over one is a problem
    left_over = sum(1 for m in staged if now - m >= STAGING_GRACE_S)
    if left_over:
        st.problems.append(f"{left_over} half-made job(s) in jobs/.new-*: finished or dropped on the "
                           "node's next pass" + ("" if node_running else " (node not running)"))
    invalid = spool_dir / "invalid"
    st.invalid_instances = sum(1 for _ in invalid.glob("*.dcm")) if invalid.is_dir() else 0
    try:
        fs = os.statvfs(spool_dir)
        st.disk_free_mb = round(fs.f_bavail * fs.f_frsize / 2 ** 20, 1)
    except OSError:
        pass
    if min_free_mb is not None and st.disk_free_mb is not None and st.disk_free_mb < min_free_mb:
        st.problems.append(f"disk: {st.disk_free_mb:.0f} MB free, below spool.min_free_mb {min_free_mb:.0f}: "
                           "instances refused (A700) and processing paused until space is freed")
    if st.results_undeliverable:
        st.problems.append(f"{st.results_undeliverable} result sets undeliverable (given up; see undeliverable/)")

    if not node_running:
        age = st.node.get("age_s")
        st.liveness_problems.append("node not running" + ("" if age is None else
                                                          f" (last heartbeat {_age(age)} ago)"))
    elif worker_error:
        st.liveness_problems.append(f"worker cannot start: {short_reason(worker_error, 300)}")
    static = None if worker_ready or worker_error else models_problem(models_dir)
    if static:
        st.liveness_problems.append(static)
    st.problems[:0] = st.liveness_problems
    return st
