"""The node as a process, fed by dcmtk's storescu, delivering to a Storage SCP on 127.0.0.1.

Covers receipt -> quiet period -> processing -> delivery, the fault cases of the
issue (SIGKILL during receipt and during processing, destination PACS down for a
while) and bad peers. Every study must yield exactly one set of results.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.node_helpers import (REPO, NodeProcess, PacsPeer, dataset_body, dcmtk_tool, free_port,
                                storescu, wait_until, write_study)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk storescu not installed")]


def _results_by_study(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in sorted(folder.glob("*.dcm")):
        ds = dcmread(f, stop_before_pixels=True)
        out.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.SOPInstanceUID))
    return out


def _status(node: NodeProcess) -> dict:
    r = subprocess.run([sys.executable, "-m", "app.node", "status", "--config", str(node.config_path),
                        "--json"], cwd=REPO, env=node.env, capture_output=True, text=True, timeout=60)
    # exit 1 means "a problem needs an operator" (e.g. results unsent while the PACS is down);
    # the JSON is printed either way and the tests poll its counts
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    return json.loads(r.stdout)


def _events(node: NodeProcess) -> list[dict]:
    out = []
    for line in node.log_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _send_bad_input(port: int, tmp_path: Path) -> list[int]:
    """Non-DICOM bytes, a truncated dataset and a path-like UID, sent as raw C-STORE datasets."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import generate_uid
    from pynetdicom import AE, _config
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import MRImageStorage

    from tests.node_helpers import make_instance

    def raw_file(name: str, body: bytes, sop_uid: str) -> Path:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop_uid
        meta.TransferSyntaxUID, meta.ImplementationClassUID = "1.2.840.10008.1.2.1", generate_uid()
        path = tmp_path / name
        with open(path, "wb") as f:
            f.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(f, meta)
            f.write(body)
        return path

    good = make_instance(generate_uid(), generate_uid(), payload_bytes=4096)
    good.save_as(tmp_path / "g.dcm", enforce_file_format=True)
    body = dataset_body(tmp_path / "g.dcm")
    evil = make_instance("../../../../tmp/tsc_node_evil", "../evil", payload_bytes=256,
                         sop_uid="../../tsc_node_evil.dcm")
    evil.save_as(tmp_path / "e.dcm", enforce_file_format=True)
    files = [raw_file("garbage.dcm", b"\x89PNG\r\n not dicom " * 300, generate_uid()),
             raw_file("truncated.dcm", body[:-700], good.SOPInstanceUID), tmp_path / "e.dcm"]
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title="STORESCU")
        ae.requested_contexts = [build_context(MRImageStorage, "1.2.840.10008.1.2.1")]
        assoc = ae.associate("127.0.0.1", port, ae_title="TSCNODE")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(f).Status) for f in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    return statuses


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_study_in_sr_out_and_bad_peers(tmp_path: Path) -> None:
    pacs = PacsPeer(tmp_path / "pacs").start()
    study, files = write_study(tmp_path / "study", 12)
    node = NodeProcess(tmp_path / "node", destinations=[f"PACS@127.0.0.1:{pacs.port}"],
                       options={"ledger": str(tmp_path / "ledger.txt")}).start()
    try:
        bad = storescu(node.port, tmp_path / "study", calling="INTRUDER")
        assert bad.returncode != 0 and not (node.spool / "incoming").exists() or \
            not any((node.spool / "incoming").iterdir())
        wrong_called = storescu(node.port, tmp_path / "study", called="NOTUS")
        assert wrong_called.returncode != 0
        statuses = _send_bad_input(node.port, tmp_path)
        # non-DICOM bytes, truncated dataset: refused; path-like UIDs: refused and quarantined
        assert statuses == [0xC210, 0xC210, 0xC210]
        ok = storescu(node.port, tmp_path / "study")
        assert ok.returncode == 0, ok.stderr
        # the good study ends with a result; the path-like-UID instance never joins a study
        wait_until(lambda: _status(node)["results_sent"] >= 1, 120)
        time.sleep(1)
        st = _status(node)
        assert st["processed"] == 1 and st["waiting"] == 0 and st["running"] == 0
        assert st["invalid_instances"] == 1 and st["failed"] == 0 and not st["problems"], st["problems"]
    finally:
        node.stop()
        pacs.stop()
    assert study in _results_by_study(tmp_path / "pacs")
    assert len(_results_by_study(tmp_path / "pacs")[study]) == 1
    assert not list(tmp_path.glob("evil*")) and not list(Path("/tmp").glob("tsc_node_evil*"))
    for f in node.spool.rglob("*"):
        assert f.resolve().is_relative_to(node.spool.resolve())
    events = _events(node)
    rejected = [e for e in events if e.get("event") == "assoc_rejected"]
    assert {e["calling_ae"] for e in rejected} >= {"INTRUDER"}
    refused = [e for e in events if e.get("event") == "instance_rejected"]
    assert len(refused) == 2 and all("rejected" in e["msg"] for e in refused)
    # no patient identifiers in the logs
    text = node.log_text()
    assert "Test^Node" not in text and "NODE0001" not in text and "20220101" not in text
    assert "tsc_node_evil" not in text  # crafted values are logged as hashes, never echoed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_during_receipt_and_processing_and_pacs_outage(tmp_path: Path) -> None:
    port = free_port()
    pacs_port = free_port()
    ledger = tmp_path / "ledger.txt"
    # study A: node killed while receiving it; study B: node killed while processing it;
    # all the while the destination PACS is down.
    study_a, _ = write_study(tmp_path / "a", 400, payload_bytes=32 * 1024)
    study_b, _ = write_study(tmp_path / "b", 5, description="MRI BRAIN SLOW")
    node = NodeProcess(tmp_path / "node", port=port, destinations=[f"PACS@127.0.0.1:{pacs_port}"],
                       options={"ledger": str(ledger), "sleep_s": 4}, quiet_period_s=2,
                       extra={"study": {"interrupted_quiet_period_s": 15}})
    node.start()
    sender = subprocess.Popen([dcmtk_tool("storescu"), "-aet", "STORESCU", "-aec", "TSCNODE", "+sd", "+r",
                               "127.0.0.1", str(port), str(tmp_path / "a")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(list((node.spool / "incoming").rglob("*.dcm"))) >= 50, 120, 0.05)
    node.kill()  # SIGKILL mid-association
    sender.wait(60)
    assert sender.returncode != 0
    partial = len(list((node.spool / "incoming").rglob("*.dcm")))
    assert 50 <= partial < 400
    node.start()
    assert storescu(port, tmp_path / "a").returncode == 0  # the PACS re-sends the failed study
    assert storescu(port, tmp_path / "b").returncode == 0
    wait_until(lambda: any(e.get("event") == "job_started" and e.get("study_uid") == study_b
                           for e in _events(node)), 120)
    time.sleep(1)
    node.kill()  # SIGKILL while study B is being processed
    node.start()
    wait_until(lambda: (lambda s: s["processed"] == 2 and s["results_unsent"] == 2)(_status(node)), 180)
    unsent = sorted((node.spool / "outbox").iterdir())
    first_uids = {p.name: sorted(json.loads((p / "manifest.json").read_text())["files"]) for p in unsent}
    time.sleep(3)  # several failed delivery attempts
    pacs = PacsPeer(tmp_path / "pacs", port=pacs_port).start()
    try:
        wait_until(lambda: _status(node)["results_sent"] == 2, 120)
    finally:
        pacs.stop()
        node.stop()
    results = _results_by_study(tmp_path / "pacs")
    assert sorted(results) == sorted([study_a, study_b])
    assert all(len(v) == 1 for v in results.values()), results  # exactly one SR per study
    # study A was processed once and complete; B ran twice (killed once), delivered once
    runs = [line.split()[0] for line in ledger.read_text().splitlines()]
    assert runs.count(study_a) == 1 and runs.count(study_b) == 2
    job_a = next(p for p in (node.spool / "done").iterdir() if p.name.endswith(study_a))
    assert json.loads((job_a / "job.json").read_text())["instances"] == 400
    retries = [e for e in _events(node) if e.get("event") == "results_retry"]
    assert retries and all(e["destination"].startswith("PACS_") for e in retries)
    assert first_uids  # the entries sent are those written before the outage
    sent = {p.name for p in (node.spool / "sent").iterdir()}
    assert set(first_uids) == sent


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_load_8_associations_10000_instances_none_lost(tmp_path: Path) -> None:
    n_assoc, total = 8, 10_000
    sources = []
    for i in range(n_assoc):
        _, files = write_study(tmp_path / f"src{i}", total // n_assoc, payload_bytes=2048)
        sources.append(tmp_path / f"src{i}")
    expected = {}
    for folder in sources:
        for f in folder.iterdir():
            ds = dcmread(f, stop_before_pixels=True)
            expected[str(ds.SOPInstanceUID)] = hashlib.sha256(dataset_body(f)).hexdigest()
    assert len(expected) == total
    node = NodeProcess(tmp_path / "node", quiet_period_s=1e6,
                       extra={"logging": {"level": "WARNING"}}).start()
    try:
        t0 = time.monotonic()
        procs = [subprocess.Popen([dcmtk_tool("storescu"), "-aet", "STORESCU", "-aec", "TSCNODE", "+sd",
                                   "+r", "127.0.0.1", str(node.port), str(folder)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for folder in sources]
        for p in procs:
            _, err = p.communicate(timeout=1100)
            assert p.returncode == 0, err.decode()[-1000:]
        elapsed = time.monotonic() - t0
    finally:
        node.stop()
    got = {}
    for f in (node.spool / "incoming").rglob("*.dcm"):
        got[f.stem] = hashlib.sha256(dataset_body(f)).hexdigest()
    assert got == expected  # every instance, right bytes, 0 lost
    print(f"\n{total} instances over {n_assoc} associations in {elapsed:.1f} s "
          f"({total / elapsed:.0f}/s, loaded 2-core machine)")
