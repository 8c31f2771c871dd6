"""The Orthanc retry tool against a real Orthanc whose routing jobs to the node fail.

Run by tests/integration/test_orthanc_retry.py in a private network namespace. Orthanc
runs with the shipped orthanc.json (paths moved under the work folder); the node is
not running, so every store job to it fails. Writes a JSON report.

    python -m tests.integration.orthanc_retry_scenario --work DIR --out report.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.node_helpers import REPO, storescu, wait_until, write_study

SHIPPED = REPO / "app" / "node" / "orthanc" / "orthanc.json"


def start_orthanc(work: Path) -> subprocess.Popen:
    text = SHIPPED.read_text()
    for path in ("/var/lib/orthanc/db", "/etc/orthanc/route_tsc.lua"):
        text = text.replace(path, str(work / path.lstrip("/")))
    (work / "etc/orthanc").mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED.parent / "route_tsc.lua", work / "etc/orthanc/route_tsc.lua")
    (work / "orthanc.json").write_text(text)
    log = open(work / "orthanc.log", "wb")
    proc = subprocess.Popen(["/usr/sbin/Orthanc", str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            urllib.request.urlopen("http://127.0.0.1:8042/system", timeout=1).read()
            return True
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((work / "orthanc.log").read_text()[-2000:])
            return False
    wait_until(up, 60, 0.3)
    return proc


def retry_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.node.orthanc_retry", "--url", "http://127.0.0.1:8042",
                           "--aet", "TSCNODE", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def run(work: Path) -> dict[str, Any]:
    from app.node.orthanc_retry import OrthancClient

    report: dict[str, Any] = {}
    orthanc = start_orthanc(work)
    client = OrthancClient("http://127.0.0.1:8042")
    try:
        write_study(work / "study", 2, description="MRI BRAIN")
        report["storescu_rc"] = storescu(4242, work / "study", called="ORTHANC").returncode
        study_id = client.request("GET", "/studies")[0]

        def job_state(job_id: str) -> str:
            return str(client.request("GET", f"/jobs/{job_id}")["State"])

        job_id = client.request("POST", "/modalities/tsc-node/store",
                                {"Resources": [study_id], "Asynchronous": True})["ID"]
        wait_until(lambda: job_state(job_id) == "Failure", 60, 0.5)
        job = client.request("GET", f"/jobs/{job_id}")
        report["refused_error"] = {"code": job.get("ErrorCode"), "description": job.get("ErrorDescription")}

        secret = work / "password"
        secret.write_text("not-used-by-a-local-orthanc\n")
        state = work / "retry-state.json"
        first = retry_cli("--password-file", str(secret), "--state", str(state))
        report["first"] = {"rc": first.returncode, "stdout": first.stdout.strip(), "stderr": first.stderr[-1500:]}
        wait_until(lambda: job_state(job_id) == "Failure", 60, 0.5)
        # still failing after the give-up time: not resubmitted again, and said so
        gave_up = retry_cli("--state", str(state), "--give-up-after", "0")
        report["give_up"] = {"rc": gave_up.returncode, "stdout": gave_up.stdout.strip(),
                             "stderr": gave_up.stderr[-1500:]}
        time.sleep(2)
        report["state_after_give_up"] = job_state(job_id)
        report["state_file"] = json.loads(state.read_text())
        # a password on the command line is refused
        report["password_option_rc"] = retry_cli("--password", "x").returncode

        # permanent: the study was deleted before its job was retried
        job2 = client.request("POST", "/modalities/tsc-node/store",
                              {"Resources": [study_id], "Asynchronous": True})["ID"]
        wait_until(lambda: job_state(job2) == "Failure", 60, 0.5)
        client.request("DELETE", f"/studies/{study_id}")
        client.request("POST", f"/jobs/{job2}/resubmit", {})
        wait_until(lambda: job_state(job2) == "Failure", 60, 0.5)
        j2 = client.request("GET", f"/jobs/{job2}")
        report["deleted_error"] = {"code": j2.get("ErrorCode"), "description": j2.get("ErrorDescription"),
                                   "job": j2}
        permanent = retry_cli("--state", str(state))
        report["permanent"] = {"rc": permanent.returncode, "stdout": permanent.stdout.strip(),
                               "stderr": permanent.stderr[-1500:]}
        report["job_ids"] = [job_id, job2]
        report["ok"] = True
    finally:
        orthanc.terminate()
        orthanc.wait(20)
    return report


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.work)
    except Exception as exc:
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        log = args.work / "orthanc.log"
        if log.exists():
            report["orthanc.log"] = re.sub(r"\s+", " ", log.read_text(errors="replace")[-3000:])
    args.out.write_text(json.dumps(report, indent=1))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
