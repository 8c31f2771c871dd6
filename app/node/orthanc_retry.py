"""Resubmit Orthanc store jobs to the node that failed (node or network down).

Orthanc does not retry a failed C-STORE job by itself. Run this next to Orthanc
(systemd unit packaging/systemd/tsc-orthanc-retry.service, or the ``orthanc-retry``
service of app/node/compose.yaml)::

    python -m app.node.orthanc_retry --url http://127.0.0.1:8042 --aet TSCNODE [--loop 60]
        [--user u  (password from $ORTHANC_PASSWORD or --password-file FILE)]
        [--give-up-after 86400] [--state FILE]

It lists Orthanc's jobs and resubmits every job of type ``DicomModalityStore`` in
state ``Failure`` whose remote AE is the node. A resubmitted job keeps its id, so
the study is never sent as two jobs. A permanent failure (the job's study is no longer
in Orthanc, or an error code no retry can fix) is not resubmitted; a transient one
(network, time-out, a refused association) is resubmitted until
``--give-up-after`` seconds have passed since it was first seen failing, then
logged as given up. ``--state`` keeps that first-seen time across runs (needed
when run once per cron/timer tick, optional with ``--loop``).

The password is never taken from the command line (other users can read it in
the process list): it comes from ``$ORTHANC_PASSWORD`` or the first line of
``--password-file``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PASSWORD_ENV = "ORTHANC_PASSWORD"
# Orthanc error codes (OrthancFramework Enumerations.h) that a resubmission cannot fix.
PERMANENT_ERROR_CODES = {
    7: "InexistentItem",
    15: "BadFileFormat",
    17: "UnknownResource",
}


class OrthancClient:
    """Minimal Orthanc REST client (urllib, no dependency)."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {}
        if user:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        if body is None or isinstance(body, (str, bytes)):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None


class RetryLedger:
    """When each failed job was first seen, and which were given up (optionally kept in a file)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.first_seen: dict[str, float] = {}
        self.given_up: set[str] = set()
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.first_seen = {str(k): float(v) for k, v in data.get("first_seen", {}).items()}
                self.given_up = {str(x) for x in data.get("given_up", [])}
            except (OSError, ValueError, AttributeError) as exc:
                logger.warning("retry state %s unreadable (%s); starting afresh", path, exc)

    def save(self, live_ids: set[str]) -> None:
        # Forget jobs Orthanc no longer lists (JobsHistorySize), so the file stays small.
        self.first_seen = {k: v for k, v in self.first_seen.items() if k in live_ids}
        self.given_up &= live_ids
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"first_seen": self.first_seen, "given_up": sorted(self.given_up)}))
        os.replace(tmp, self.path)


def resubmit_failed(client: OrthancClient, node_aet: str, ledger: RetryLedger | None = None,
                    give_up_after_s: float = 86400.0, now: float | None = None) -> list[str]:
    """Resubmit the failed store jobs to ``node_aet`` that may still succeed; return their ids."""
    ledger = ledger if ledger is not None else RetryLedger()
    now = time.time() if now is None else now
    done: list[str] = []
    jobs = client.request("GET", "/jobs?expand") or []
    for job in jobs:
        content = job.get("Content") or {}
        remote = str(content.get("RemoteAet", "")).strip()
        if job.get("Type") != "DicomModalityStore" or job.get("State") != "Failure" \
                or remote.upper() != node_aet.upper():
            continue
        job_id = str(job["ID"])
        if job_id in ledger.given_up:
            continue
        code = job.get("ErrorCode")
        why = job.get("ErrorDescription") or f"error code {code}"
        first = ledger.first_seen.setdefault(job_id, now)
        permanent = PERMANENT_ERROR_CODES.get(code)
        if permanent is None and _resources_gone(client, content.get("ParentResources") or []):
            permanent = "the study is no longer in Orthanc"
        if permanent is not None:
            ledger.given_up.add(job_id)
            logger.error("Orthanc job %s failed permanently (%s: %s); not resubmitted", job_id, permanent, why)
            continue
        if now - first > give_up_after_s:
            ledger.given_up.add(job_id)
            logger.error("Orthanc job %s still failing after %.0f s (%s); given up: resubmit it by hand "
                         "(POST /jobs/%s/resubmit) once the node is reachable", job_id, now - first, why, job_id)
            continue
        client.request("POST", f"/jobs/{job_id}/resubmit", {})
        done.append(job_id)
        logger.info("resubmitted Orthanc job %s (failed: %s)", job_id, why)
    ledger.save({str(j.get("ID")) for j in jobs})
    return done


def _resources_gone(client: OrthancClient, resources: list[str]) -> bool:
    """True when none of the job's resources exists in Orthanc any more (deleted meanwhile).

    Orthanc 1.10 reports a store job whose study was deleted as "Internal error" (-1), so
    the error code alone cannot tell this permanent failure from a transient one.
    """
    if not resources:
        return False
    for resource in resources:
        for level in ("studies", "series", "instances", "patients"):
            try:
                client.request("GET", f"/{level}/{resource}")
                return False
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    return False  # cannot tell: treat as transient
    return True


def read_password(password_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The Orthanc password from ``--password-file`` (first line) or ``$ORTHANC_PASSWORD``."""
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    return (os.environ if environ is None else environ).get(PASSWORD_ENV)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8042")
    ap.add_argument("--aet", default="TSCNODE", help="AE title of the node")
    ap.add_argument("--user", help=f"Orthanc user (password from ${PASSWORD_ENV} or --password-file)")
    ap.add_argument("--password-file", type=Path, help="file whose first line is the password (mode 0600)")
    ap.add_argument("--loop", type=float, default=0, help="repeat every N seconds (0: once)")
    ap.add_argument("--give-up-after", type=float, default=86400.0, metavar="S",
                    help="stop resubmitting a job failing for this long (default 86400)")
    ap.add_argument("--state", type=Path, help="JSON file keeping first-failure times between runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        password = read_password(args.password_file)
    except OSError as exc:
        print(f"error: cannot read --password-file: {exc.strerror}", file=sys.stderr)
        return 2
    client = OrthancClient(args.url, args.user, password)
    ledger = RetryLedger(args.state)
    while True:
        try:
            ids = resubmit_failed(client, args.aet, ledger, args.give_up_after)
            if not args.loop:
                print(json.dumps({"resubmitted": ids}))
                return 0
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.warning("Orthanc not reachable: %s", exc)
            if not args.loop:
                return 1
        time.sleep(args.loop)


if __name__ == "__main__":
    sys.exit(main())
