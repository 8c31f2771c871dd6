"""The SCP in-process, driven by a pynetdicom SCU: acceptance rules, statuses, raw writes."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import MRImageStorage, Verification

from app.node.config import ScpConfig, TlsConfig
from app.node.scp import StoreScp, host_matcher
from app.node.spool import Spool, uid_key
from tests.node_helpers import dataset_body, free_port, make_instance

SHARED = Path(os.environ.get("TSC_SHARED_DIR", Path(__file__).resolve().parents[2] / ".." / "shared"))
VARIETY = SHARED / "data" / "dicom-variety"


@pytest.fixture()
def scp(tmp_path: Path) -> Iterator[StoreScp]:
    cfg = ScpConfig(ae_title="TSCNODE", host="127.0.0.1", port=free_port(), allowed_calling_aes=["PACS"],
                    network_timeout_s=10, acse_timeout_s=10, dimse_timeout_s=10)
    server = StoreScp(cfg, Spool(tmp_path / "spool", min_free_bytes=0, fsync=False))
    server.start()
    yield server
    server.stop()


def _assoc(scp: StoreScp, calling: str = "PACS", called: str = "TSCNODE", contexts=None):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.requested_contexts = contexts or [build_context(MRImageStorage), build_context(Verification)]
    return ae.associate("127.0.0.1", scp.port, ae_title=called)


def _spooled(scp: StoreScp) -> list[Path]:
    return sorted((scp.spool.root / "incoming").rglob("*.dcm"))


def test_echo_and_store_write_the_bytes_as_received(scp: StoreScp, tmp_path: Path) -> None:
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=8192)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    body = dataset_body(src)
    _config.STORE_SEND_CHUNKED_DATASET = True  # the SCU sends the file's encoded dataset as is
    try:
        assoc = _assoc(scp, contexts=[build_context(MRImageStorage, "1.2.840.10008.1.2.1"),
                                      build_context(Verification)])
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(src).Status == 0
        assert assoc.send_c_store(src).Status == 0  # duplicate: idempotent
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    (stored,) = _spooled(scp)
    assert stored.parts[-3:] == (ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
    assert stored.read_bytes().endswith(body)
    back = dcmread(stored)
    assert back.PixelData == ds.PixelData and back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("calling, called", [("INTRUDER", "TSCNODE"), ("PACS", "OTHERAE")])
def test_unknown_calling_or_wrong_called_ae_is_rejected(scp: StoreScp, calling: str, called: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    assoc = _assoc(scp, calling=calling, called=called)
    assert assoc.is_rejected
    assert any(getattr(r, "event", "") == "assoc_rejected" for r in caplog.records)
    assert _assoc(scp).is_established  # still serving


def test_host_filter() -> None:
    allowed = host_matcher(["10.1.0.0/16", "127.0.0.1"])
    assert allowed("127.0.0.1") and allowed("10.1.2.3") and allowed("::ffff:10.1.2.3")
    assert not allowed("10.2.0.1") and not allowed("not-an-ip")
    # secure by default: an empty list admits nobody; every host only when written as 'any'
    assert not host_matcher([])("192.0.2.1")
    assert host_matcher(["any"])("192.0.2.1")


def test_disallowed_host_gets_no_association(tmp_path: Path) -> None:
    cfg = ScpConfig(port=free_port(), allowed_calling_aes=["PACS"], allowed_hosts=["192.0.2.0/24"],
                    network_timeout_s=5, acse_timeout_s=5)
    server = StoreScp(cfg, Spool(tmp_path, min_free_bytes=0, fsync=False))
    server.start()
    try:
        assoc = _assoc(server)
        assert not assoc.is_established
    finally:
        server.stop()


def test_out_of_resources_when_disk_below_threshold(scp: StoreScp) -> None:
    scp.spool.min_free_bytes = scp.spool.free_bytes() + (1 << 30)
    assoc = _assoc(scp)
    status = assoc.send_c_store(make_instance(generate_uid(), generate_uid()))
    assoc.release()
    assert status.Status == 0xA700
    assert not _spooled(scp)


def _raw_file(path: Path, dataset_bytes: bytes, sop_uid: str) -> Path:
    """A Part 10 file whose dataset part is arbitrary bytes (sent unparsed by chunked C-STORE)."""
    from pydicom.dataset import FileMetaDataset
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = generate_uid()
    with open(path, "wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, meta)
        f.write(dataset_bytes)
    return path


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_non_dicom_and_truncated_datasets_are_refused(scp: StoreScp, tmp_path: Path, kind: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=8192)
    good = tmp_path / "good.dcm"
    ds.save_as(good, enforce_file_format=True)
    body = dataset_body(good)
    data = os.urandom(5000) if kind == "garbage" else body[:-1000]
    bad = _raw_file(tmp_path / "bad.dcm", data, ds.SOPInstanceUID)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = _assoc(scp, contexts=[build_context(MRImageStorage, "1.2.840.10008.1.2.1")])
        status = assoc.send_c_store(bad)
        ok = assoc.send_c_store(good)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert status.Status == 0xC210
    assert ok.Status == 0
    assert len(_spooled(scp)) == 1
    assert any(getattr(r, "event", "") == "instance_rejected" for r in caplog.records)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_path_like_uids_are_quarantined_never_processed(scp: StoreScp) -> None:
    ds = make_instance("../../../../tmp/evil", "/etc/cron.d", payload_bytes=256)
    assoc = _assoc(scp)
    assert assoc.send_c_store(ds).Status == 0xC210
    assoc.release()
    assert not _spooled(scp)  # never reaches a study, so never analysed nor answered with an SR
    (kept,) = (scp.spool.root / "invalid").iterdir()
    assert kept.name == f"{ds.SOPInstanceUID}.dcm"
    assert dcmread(kept).StudyInstanceUID == "../../../../tmp/evil"


@pytest.mark.skipif(not VARIETY.is_dir(), reason="shared dicom-variety data not present")
def test_compressed_transfer_syntaxes_are_accepted_and_kept_as_sent(scp: StoreScp) -> None:
    files = sorted((VARIETY / "dcm_qa_ts").rglob("*.dcm"))
    metas = [dcmread(f, stop_before_pixels=True).file_meta for f in files]
    contexts = [build_context(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in metas]
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the encoded bytes without re-encoding
    try:
        assoc = _assoc(scp, contexts=contexts)
        assert assoc.is_established
        statuses = [assoc.send_c_store(f).Status for f in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert statuses == [0] * len(files)
    stored = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in _spooled(scp)}
    for f, m in zip(files, metas):
        p = stored[m.MediaStorageSOPInstanceUID]
        assert str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) == m.TransferSyntaxUID
        # pixel data bytes identical to the source file
        assert hashlib.sha256(dcmread(p).PixelData).digest() == hashlib.sha256(dcmread(f).PixelData).digest()


def test_association_ended_without_release_holds_its_studies(scp: StoreScp) -> None:
    scp.interrupted_hold_s = 30.0
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=256)
    assoc = _assoc(scp)
    assert assoc.send_c_store(ds).Status == 0
    assoc.abort()
    key = uid_key(ds.StudyInstanceUID)
    deadline = time.monotonic() + 5
    while key not in scp.spool.hold_until and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scp.spool.hold_until[key] > time.monotonic() + 20
    # a released association does not hold its study
    other = make_instance(generate_uid(), generate_uid(), payload_bytes=256)
    assoc = _assoc(scp)
    assert assoc.send_c_store(other).Status == 0
    assoc.release()
    time.sleep(0.5)
    assert uid_key(other.StudyInstanceUID) not in scp.spool.hold_until


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_tls_with_client_certificates(tmp_path: Path) -> None:
    for name in ("ca", "server", "client"):
        subj = f"/CN=tsc-test-{name}"
        if name == "ca":
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subj,
                     "-keyout", "ca.key", "-out", "ca.pem", cwd=tmp_path)
            continue
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", cwd=tmp_path)
    cfg = ScpConfig(port=free_port(), allowed_calling_aes=["PACS"], network_timeout_s=5, acse_timeout_s=5,
                    tls_handshake_timeout_s=2,
                    tls=TlsConfig(True, str(tmp_path / "server.pem"), str(tmp_path / "server.key"),
                                  str(tmp_path / "ca.pem")))
    server = StoreScp(cfg, Spool(tmp_path / "spool", min_free_bytes=0, fsync=False))
    server.start()
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "ca.pem"))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        ae = AE(ae_title="PACS")
        ae.acse_timeout = ae.network_timeout = 5
        ae.requested_contexts = [build_context(MRImageStorage)]
        # a silent TCP connection (no ClientHello) must not block the others: the handshake
        # runs in the connection's own thread, not in the accept thread
        silent = socket.create_connection(("127.0.0.1", server.port))
        t0 = time.monotonic()
        assoc = ae.associate("127.0.0.1", server.port, ae_title="TSCNODE", tls_args=(ctx, None))
        assert assoc.is_established
        assert time.monotonic() - t0 < 2
        silent.settimeout(5)
        assert silent.recv(1) == b""  # closed by the node after tls_handshake_timeout_s
        silent.close()
        assert assoc.send_c_store(make_instance(generate_uid(), generate_uid(), payload_bytes=512)).Status == 0
        assoc.release()
        assert len(_spooled(server)) == 1
        # without TLS, or without a client certificate, no association
        assert not _assoc(server).is_established
        bare = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "ca.pem"))
        bare.check_hostname = False
        assoc = ae.associate("127.0.0.1", server.port, ae_title="TSCNODE", tls_args=(bare, None))
        assert not assoc.is_established
    finally:
        server.stop()
