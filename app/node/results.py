"""What the node has reported for each study, and how a new report supersedes the earlier ones.

``state/<study>.results.json`` lists, per finished job of the study, whether it was
analysed and the SR documents sent (UIDs only). When a study re-opens and is analysed
again, every SR of the new result gets a Predecessor Documents Sequence naming all
SRs sent before for the study, and a comment saying what changed (counts and
states only, never a free-text DICOM value), through
:func:`operators.sr_writer.supersede_sr`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydicom import dcmread

from .jobstore import read_json, write_json
from .spool import Spool
from .study_tracker import Job

logger = logging.getLogger(__name__)

_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def results_path(spool: Spool, study_key: str) -> Path:
    return spool.path("state") / f"{study_key}.results.json"


def sr_references(files: list[Path]) -> list[dict[str, str]]:
    """SOP class/instance, series and study UIDs of the SR documents among ``files``."""
    refs = []
    for f in files:
        try:
            ds = dcmread(f, stop_before_pixels=True,
                         specific_tags=["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"])
        except Exception:  # noqa: BLE001 - not DICOM: not an SR either
            continue
        if str(ds.get("SOPClassUID", "")).startswith(_SR_CLASS_PREFIX):
            refs.append({"sop_class_uid": str(ds.SOPClassUID), "sop_instance_uid": str(ds.SOPInstanceUID),
                         "series_instance_uid": str(ds.SeriesInstanceUID),
                         "study_instance_uid": str(ds.StudyInstanceUID)})
    return refs


def change_note(previous: list[dict[str, Any]], job_record: dict[str, Any]) -> str:
    """The text stating what changed since the last report of the study."""
    last = previous[-1]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(last.get("finished", 0))))
    earlier = "analysed" if last.get("analysed") else "not analysable"
    new_series = int(job_record.get("new_series", 0))
    return (f"Supersedes {sum(len(r.get('srs', [])) for r in previous)} earlier report(s) of this study "
            f"(last one {when}: {earlier}). More images arrived after that report: "
            f"{job_record.get('new_instances', '?')} instance(s)"
            + (f" in {new_series} new series" if new_series else "")
            + f". This report analyses everything received: {job_record.get('instances', '?')} instance(s) "
              f"in {job_record.get('series', '?')} series.")


def supersede_earlier_results(spool: Spool, job: Job, files: list[Path], analysed: bool) -> int:
    """Make the SRs in ``files`` supersede every SR sent before for the study; return how many."""
    from operators.sr_writer import PredecessorDocument, supersede_sr

    previous = read_json(results_path(spool, job.study_key)).get("results", [])
    predecessors = [PredecessorDocument(**ref) for r in previous for ref in r.get("srs", [])]
    if not predecessors:
        return 0
    note = change_note(previous, read_json(job.record_path))
    for ref, path in zip(sr_references(files), [f for f in files if _is_sr(f)]):
        same_study = [p for p in predecessors if p.study_instance_uid == ref["study_instance_uid"]]
        if same_study:
            supersede_sr(path, same_study, note)
    return len(predecessors)


def _is_sr(path: Path) -> bool:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001
        return False
    return str(ds.get("SOPClassUID", "")).startswith(_SR_CLASS_PREFIX)


def record_results(spool: Spool, job: Job, refs: list[dict[str, str]], analysed: bool) -> None:
    """Append this job's SRs to the study's record (read by the next re-analysis)."""
    path = results_path(spool, job.study_key)
    data = read_json(path)
    data.setdefault("results", []).append({"job_id": job.job_id, "analysed": analysed,
                                           "finished": time.time(), "srs": refs})
    write_json(path, data, spool.path("tmp"), fsync=spool.fsync)
