"""A study that arrives in two parts: T2, then FLAIR after the first result went out.

Run by tests/integration/test_node_reopen.py inside a private network namespace
(Orthanc cannot bind to one address). Orthanc is the PACS the results go to; the
node runs the real pipeline (``app.pipeline:make_processor``) with the tiny
constant-output model set of the Orthanc scenario. dcmtk ``storescu`` sends the
T2 series to the node, the node finds the study stable after its (short) quiet
period and answers with a not-analysable SR (no FLAIR); then the FLAIR series
arrives, re-opens the study, and the whole study is analysed again. The report
says what Orthanc holds in the end and what the final SR references.

    python -m tests.integration.node_reopen_scenario --work DIR --out report.json [--gap-s 20] [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pydicom import dcmread

from app.node.orthanc_retry import OrthancClient
from tests.integration.node_orthanc_scenario import PIPELINE_STUDY, REAL_PIPELINE, processor_setup, start_orthanc
from tests.node_helpers import REPO, NodeProcess, free_port, storescu, wait_until


def split_study(work: Path) -> tuple[str, Path, Path]:
    """One synthetic study without decoys, its T2 and FLAIR series in two folders."""
    from synthetic import StudyOptions, generate_study

    study = generate_study(work / "study", 21, StudyOptions(decoys=False, **PIPELINE_STUDY))
    t2, flair = work / "send-t2", work / "send-flair"
    for f in sorted(study.input_dir.rglob("*")):
        if not f.is_file() or f.suffix == ".json":
            continue
        ds = dcmread(f, stop_before_pixels=True)
        target = flair if "InversionTime" in ds else t2
        target.mkdir(parents=True, exist_ok=True)
        f.rename(target / f.name)
    return study.study_instance_uid, t2, flair


def orthanc_srs(client: OrthancClient, study_uid: str) -> list[dict[str, Any]]:
    """Every SR Orthanc holds for the study: its UID, whether analysed, its predecessors."""
    found = client.request("POST", "/tools/lookup", study_uid) or []
    ids = [x["ID"] for x in found if x.get("Type") == "Study"]
    out = []
    for sid in ids:
        for inst in client.request("GET", f"/studies/{sid}/instances") or []:
            if inst["MainDicomTags"].get("SOPInstanceUID") is None:
                continue
            tags = client.request("GET", f"/instances/{inst['ID']}/simplified-tags")
            if tags.get("Modality") != "SR":
                continue
            text = json.dumps(tags)
            preds = [ref["ReferencedSOPInstanceUID"]
                     for study in tags.get("PredecessorDocumentsSequence", [])
                     for series in study.get("ReferencedSeriesSequence", [])
                     for ref in series.get("ReferencedSOPSequence", [])]
            out.append({"sop_instance_uid": tags["SOPInstanceUID"],
                        "analysed": "could not be analysed" not in text,
                        "series_description": tags.get("SeriesDescription"),
                        "predecessors": preds, "change_note": _comment(tags)})
    return out


def _comment(tags: dict[str, Any]) -> str | None:
    stack = list(tags.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        name = (item.get("ConceptNameCodeSequence") or [{}])[0]
        if name.get("CodeValue") == "121106":
            return item.get("TextValue")
        stack.extend(item.get("ContentSequence", []))
    return None


def run(work: Path, gap_s: float, quiet_s: float, code: Path | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"quiet_period_s": quiet_s}
    options, _ = processor_setup(REAL_PIPELINE, work)
    options["outputs"] = {"flair3_series": False, "pdf": False}
    study_uid, t2, flair = split_study(work)
    http_port, dicom_port, node_port = free_port(), free_port(), free_port()
    orthanc = start_orthanc(work, http_port, dicom_port, node_port)
    client = OrthancClient(f"http://127.0.0.1:{http_port}")
    node = NodeProcess(work / "node", port=node_port, destinations=[f"ORTHANC@127.0.0.1:{dicom_port}"],
                       processor=REAL_PIPELINE, options=options, quiet_period_s=quiet_s, code_dir=code)
    try:
        node.start()
        t0 = time.monotonic()
        report["storescu_t2_rc"] = storescu(node_port, t2).returncode
        wait_until(lambda: orthanc_srs(client, study_uid), 300, 1)
        report["first_sr_after_s"] = round(time.monotonic() - t0, 1)
        report["first"] = orthanc_srs(client, study_uid)
        # The FLAIR series follows, later than the quiet period: the study re-opens.
        time.sleep(max(0.0, gap_s - (time.monotonic() - t0)))
        report["gap_s"] = round(time.monotonic() - t0, 1)
        report["storescu_flair_rc"] = storescu(node_port, flair).returncode
        wait_until(lambda: len(orthanc_srs(client, study_uid)) >= 2, 300, 1)
        report["second_sr_after_flair_s"] = round(time.monotonic() - t0 - report["gap_s"], 1)
        time.sleep(2 * quiet_s + 2)  # nothing more may arrive
        report["final"] = orthanc_srs(client, study_uid)
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gap-s", type=float, default=20.0, help="seconds between the T2 and the FLAIR sends")
    p.add_argument("--quiet-s", type=float, default=3.0, help="the node's quiet period")
    p.add_argument("--code", type=Path, help="run the node from this checkout (to measure older code)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.work, args.gap_s, args.quiet_s, args.code)
    except Exception:  # noqa: BLE001 - the test prints it
        report = {"ok": False, "error": traceback.format_exc()}
        for name in ("orthanc.log", "node/node.log"):
            log = args.work / name
            if log.exists():
                report[name] = log.read_text(errors="replace")[-4000:]
    args.out.write_text(json.dumps(report, indent=1))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
