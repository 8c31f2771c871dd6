"""Resubmit Orthanc store jobs to the node that failed (node or network down).

Orthanc does not retry a failed C-STORE job by itself. Run this periodically
(cron, systemd timer, or the ``orthanc-retry`` service of app/node/compose.yaml)::

    python -m app.node.orthanc_retry --url http://127.0.0.1:8042 --aet TSCNODE [--user u --password p]
        [--loop 60]

It lists Orthanc's jobs, and resubmits every job of type ``DicomModalityStore``
in state ``Failure`` whose remote AE is the node. A resubmitted job keeps its id,
so the study is never sent as two jobs.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from typing import Any

logger = logging.getLogger(__name__)


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


def resubmit_failed(client: OrthancClient, node_aet: str) -> list[str]:
    """Resubmit the failed store jobs to ``node_aet``; return their ids."""
    done = []
    for job in client.request("GET", "/jobs?expand") or []:
        content = job.get("Content") or {}
        remote = str(content.get("RemoteAet", "")).strip()
        if job.get("Type") == "DicomModalityStore" and job.get("State") == "Failure" \
                and remote.upper() == node_aet.upper():
            client.request("POST", f"/jobs/{job['ID']}/resubmit", {})
            done.append(job["ID"])
            logger.info("resubmitted Orthanc job %s", job["ID"])
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8042")
    ap.add_argument("--aet", default="TSCNODE", help="AE title of the node")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--loop", type=float, default=0, help="repeat every N seconds (0: once)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    client = OrthancClient(args.url, args.user, args.password)
    while True:
        try:
            ids = resubmit_failed(client, args.aet)
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
