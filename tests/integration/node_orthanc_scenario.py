"""End-to-end scenario: storescu -> Orthanc (Lua routing) -> node -> results back in Orthanc.

Run by tests/integration/test_node_orthanc.py inside a private network namespace
(``unshare -n``), where only loopback exists, because Orthanc 1.10 cannot bind
to one address. Writes a JSON report of what it observed; the test asserts on it.

    python -m tests.integration.node_orthanc_scenario --work DIR --out report.json [--processor mod:attr]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import dcmread

from app.node.orthanc_retry import OrthancClient, resubmit_failed
from tests.node_helpers import REPO, NodeProcess, free_port, storescu, wait_until

LUA = REPO / "app" / "node" / "orthanc" / "route_tsc.lua"


REAL_PIPELINE = "app.pipeline:make_processor"
# Coarser pixels than a scanner's (same field of view and slices) keep the real pipeline quick.
PIPELINE_STUDY = dict(t2_matrix=(192, 192), t2_pixel_mm=1.2, flair_matrix=(160, 160), flair_pixel_mm=1.4)
DOUBLE_STUDY = dict(t2_matrix=(128, 128), flair_matrix=(112, 112), slices=10)


def processor_setup(processor: str, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(worker options, study size) for the real pipeline or the test double.

    The real pipeline gets a tiny model set with constant outputs (built here: no
    trained weights exist in a test), fallback brain extraction, and the FLAIR3 series on.
    """
    if processor == REAL_PIPELINE:
        from tests.unit._model_sets import make_model_set

        probabilities = {m: [0.7, 0.7] for m in ("t2_wae", "flair_wae", "flair3_wae", "clinical",
                                                 "t2_etsc", "flair_etsc")}
        make_model_set(work / "models", probabilities)
        options = {"models": str(work / "models"), "brain_extraction": "fallback",
                   "outputs": {"flair3_series": True, "pdf": False}}
        return options, PIPELINE_STUDY
    return {"ledger": str(work / "ledger.txt"), "derived_series": True}, DOUBLE_STUDY


def make_studies(root: Path, size: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Three synthetic studies: routed (child, TSC protocol), adult, and child non-TSC description."""
    from synthetic import StudyOptions, generate_study

    plan = {"tsc_child": (11, "MR BRAIN TSC PROTOCOL", None, True),
            "tsc_adult": (12, "MR BRAIN TSC PROTOCOL", "045Y", False),
            "other_child": (13, None, None, False)}
    out = {}
    for name, (seed, description, age, decoys) in plan.items():
        study = generate_study(root / name, seed, StudyOptions(decoys=decoys, **size))
        for f in study.input_dir.rglob("*"):
            if not f.is_file() or f.suffix == ".json":
                continue
            ds = dcmread(f)
            if description:
                ds.StudyDescription = description
            if age:
                ds.PatientAge = age
                ds.PatientBirthDate = f"{int(str(ds.StudyDate)[:4]) - 45}0101"
            ds.save_as(f)
        out[name] = {"study_uid": study.study_instance_uid, "dir": str(study.input_dir)}
    return out


def start_orthanc(work: Path, http_port: int, dicom_port: int, node_port: int) -> subprocess.Popen:
    cfg = {
        "Name": "TSC-TEST", "StorageDirectory": str(work / "orthanc-db"),
        "IndexDirectory": str(work / "orthanc-db"), "HttpPort": http_port, "DicomPort": dicom_port,
        "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "StableAge": 2, "LuaScripts": [str(LUA)], "UserMetadata": {"TscRouted": 1024},
        "DicomModalities": {"tsc-node": {"AET": "TSCNODE", "Host": "127.0.0.1", "Port": node_port}},
        "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "JobsHistorySize": 100,
        "DicomScuTimeout": 5, "Plugins": [],
        "TscRouting": {"NodeModality": "tsc-node", "NodeAet": "TSCNODE",
                       "DescriptionPatterns": ["TSC", "TUBEROUS"], "ProcedureCodes": [],
                       "MaxAgeYears": 18, "Asynchronous": True},
    }
    (work / "orthanc.json").write_text(json.dumps(cfg, indent=1))
    log = open(work / "orthanc.log", "wb")
    proc = subprocess.Popen([shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(work / "orthanc.json")],
                            stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=1).read()
            return True
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((work / "orthanc.log").read_text()[-2000:])
            return False
    wait_until(up, 60, 0.3)
    return proc


def run(work: Path, processor: str) -> dict[str, Any]:
    report: dict[str, Any] = {"processor": processor}
    options, size = processor_setup(processor, work)
    studies = make_studies(work / "studies", size)
    report["studies"] = {k: v["study_uid"] for k, v in studies.items()}
    http_port, dicom_port, node_port = free_port(), free_port(), free_port()
    orthanc = start_orthanc(work, http_port, dicom_port, node_port)
    client = OrthancClient(f"http://127.0.0.1:{http_port}")
    ledger = work / "ledger.txt"
    node = NodeProcess(work / "node", port=node_port, destinations=[f"ORTHANC@127.0.0.1:{dicom_port}"],
                       processor=processor, options=options,
                       quiet_period_s=2)
    try:
        for name, s in studies.items():
            r = storescu(dicom_port, Path(s["dir"]), called="ORTHANC")
            report[f"storescu_{name}_rc"] = r.returncode

        # The node is still down: Orthanc's routing job must fail ...
        def failed_jobs() -> list[dict]:
            return [j for j in client.request("GET", "/jobs?expand") or []
                    if j.get("Type") == "DicomModalityStore" and j.get("State") == "Failure"]
        wait_until(failed_jobs, 90, 0.5)
        report["failed_jobs_while_node_down"] = len(failed_jobs())
        # ... and succeed once the node is up and the failed job is resubmitted.
        node.start()
        report["resubmitted"] = resubmit_failed(client, "TSCNODE")
        routed_uid = studies["tsc_child"]["study_uid"]
        orthanc_id = _lookup(client, routed_uid)

        def result_series() -> dict[str, int]:
            out: dict[str, int] = {}
            for series in client.request("GET", f"/studies/{orthanc_id}/series"):
                desc = series["MainDicomTags"].get("SeriesDescription", "")
                out[f'{series["MainDicomTags"].get("Modality")}:{desc}'] = len(series["Instances"])
            return out

        wait_until(lambda: any(k.startswith("SR:") for k in result_series())
                   and any("FLAIR3" in k for k in result_series()), 240, 1)
        time.sleep(12)  # the study turns stable again with the results: routing must not re-trigger
        report["routed_study_series"] = result_series()
        report["ledger"] = [line.split()[0] for line in ledger.read_text().splitlines()] \
            if ledger.exists() else []
        jobs = [j for j in client.request("GET", "/jobs?expand") or [] if j.get("Type") == "DicomModalityStore"]
        report["store_jobs"] = [{"id": j["ID"], "state": j["State"]} for j in jobs]
        for name in ("tsc_adult", "other_child"):
            sid = _lookup(client, studies[name]["study_uid"])
            report[f"{name}_series"] = len(client.request("GET", f"/studies/{sid}/series"))
        report["orthanc_lua_log"] = [line for line in (work / "orthanc.log").read_text(errors="replace")
                                     .splitlines() if "route_tsc" in line][-20:]
        report["node_status"] = json.loads(subprocess.run(
            [sys.executable, "-m", "app.node", "status", "--config", str(node.config_path), "--json"],
            cwd=REPO, env=node.env, capture_output=True, text=True, timeout=60).stdout)
        report["ok"] = True
    finally:
        node.stop()
        node.kill()
        orthanc.terminate()
        try:
            orthanc.wait(20)
        except subprocess.TimeoutExpired:
            orthanc.kill()
    return report


def _lookup(client: OrthancClient, study_uid: str) -> str:
    for x in client.request("POST", "/tools/lookup", study_uid) or []:
        if x.get("Type") == "Study":
            return str(x["ID"])
    raise LookupError(f"study {study_uid} not in Orthanc")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--processor", default=REAL_PIPELINE)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.work, args.processor)
    except Exception as exc:
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        for name in ("orthanc.log", "node/node.log"):
            p = args.work / name
            if p.exists():
                report[name] = p.read_text(errors="replace")[-4000:]
    args.out.write_text(json.dumps(report, indent=1))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
