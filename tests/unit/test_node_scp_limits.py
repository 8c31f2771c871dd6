"""The SCP against hostile and messy peers on loopback: raw sockets, pynetdicom and dcmtk SCUs.

Each test bounds its own time: the node's timeouts are set to 1-2 s and every socket
read has a timeout.
"""

from __future__ import annotations

import logging
import resource
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import MRImageStorage, Verification

from app.node.config import ScpConfig
from app.node.scp import CSA_NON_IMAGE_STORAGE, StoreScp
from app.node.spool import Spool
from benchmarks.bench_node_attack import DEFLATED, write_deflate_bomb
from tests.node_helpers import free_port, make_instance


def _server(tmp_path: Path, **overrides) -> StoreScp:
    settings = dict(ae_title="TSCNODE", host="127.0.0.1", port=free_port(), allowed_calling_aes=["PACS"],
                    allowed_hosts=["127.0.0.0/8"], network_timeout_s=2, acse_timeout_s=2,
                    dimse_timeout_s=5, max_associations_per_host=4)
    settings.update(overrides)
    server = StoreScp(ScpConfig(**settings), Spool(tmp_path / "spool", min_free_bytes=0, fsync=False))
    server.start()
    return server


@pytest.fixture()
def scp(tmp_path: Path) -> Iterator[StoreScp]:
    server = _server(tmp_path)
    yield server
    server.stop()


def _assoc(port: int, contexts=None, calling: str = "PACS", called: str = "TSCNODE"):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.requested_contexts = contexts or [build_context(MRImageStorage), build_context(Verification)]
    return ae.associate("127.0.0.1", port, ae_title=called)


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the peer closed ``sock`` (raises if it did not within ``seconds``)."""
    t0 = time.monotonic()
    sock.settimeout(seconds)
    assert sock.recv(1 << 16) == b"" or sock.recv(1 << 16) == b""
    return time.monotonic() - t0


def _raw(port: int, source: str = "127.0.0.2") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_declared_4gib_pdu_is_refused_before_any_allocation(tmp_path: Path) -> None:
    # Timeouts far longer than the test waits: a close can only come from the length check.
    scp = _server(tmp_path, network_timeout_s=30, acse_timeout_s=30)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    socks = []
    try:
        for _ in range(4):
            s = _raw(scp.port)
            s.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
            socks.append(s)
        for s in socks:
            assert _closed_within(s, 15) < 15
            s.close()
        # ru_maxrss is KiB on Linux; one 4 GiB buffer would show as +4 GiB
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 256 * 1024
        assert _assoc(scp.port).is_established
    finally:
        scp.stop()


def test_silent_and_stalled_connections_time_out_and_one_host_cannot_take_every_slot(scp: StoreScp) -> None:
    silent = [_raw(scp.port) for _ in range(4)]      # the per-host limit (4)
    stalled = _raw(scp.port)                          # the 5th from the same host: refused at once
    assert _closed_within(stalled, 5) < 5  # before the 2 s ARTIM timer could explain it (margin for load)
    stalled.close()
    # another host still gets in while the first is at its limit
    assoc = _assoc(scp.port)
    assert assoc.is_established
    assoc.release()
    # a header that promises a small PDU and then stalls is dropped by the PDU deadline
    header_only = socket.create_connection(("127.0.0.1", scp.port))
    header_only.sendall(struct.pack(">BBL", 0x01, 0, 1000))
    for s in silent:  # ARTIM (acse_timeout_s = 2 s) closes connections that send nothing
        assert _closed_within(s, 15) < 15
        s.close()
    assert _closed_within(header_only, 15) < 15
    header_only.close()
    assert scp.server.connections_from("127.0.0.2") == 0


def test_deflate_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    server = _server(tmp_path, max_instance_mb=64)
    bomb = tmp_path / "bomb.dcm"
    wire = write_deflate_bomb(bomb, 256)  # 256 MiB inflated, ~250 KiB on the wire
    assert wire < 1 << 20
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = _assoc(server.port, contexts=[build_context(MRImageStorage, DEFLATED)])
        status = assoc.send_c_store(bomb)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        server.stop()
    assert status.Status == 0xC210
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 128 * 1024
    assert not list((tmp_path / "spool" / "incoming").rglob("*.dcm"))
    assert not list((tmp_path / "spool" / "tmp").iterdir())  # the inflated scratch file is gone


def test_oversized_instance_closes_the_association(tmp_path: Path) -> None:
    server = _server(tmp_path, max_instance_mb=1)
    try:
        assoc = _assoc(server.port)
        big = make_instance(generate_uid(), generate_uid(), payload_bytes=3 << 20)
        status = assoc.send_c_store(big)
        assert "Status" not in status  # connection closed, no answer
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
        small = _assoc(server.port)
        assert small.send_c_store(make_instance(generate_uid(), generate_uid())).Status == 0
        small.release()
    finally:
        server.stop()


def test_only_unsupported_abstract_syntaxes_get_a_rejection_not_an_abort(
        scp: StoreScp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app.node.scp")
    assoc = _assoc(scp.port, contexts=[build_context("1.2.840.10008.5.1.4.1.2.2.1")])  # Study Root FIND
    assert assoc.is_rejected and not assoc.is_aborted
    assert any(getattr(r, "event", "") == "assoc_rejected" and "no supported abstract syntax" in r.getMessage()
               for r in caplog.records)


def test_rejection_log_names_the_called_ae_the_peer_used(scp: StoreScp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app.node.scp")
    assert _assoc(scp.port, called="SOMEONEELSE").is_rejected
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "assoc_rejected"]
    assert record.called_ae == "SOMEONEELSE"


@pytest.mark.parametrize("policy", ["ignore", "store"])
def test_siemens_csa_non_image_alongside_mr_is_accepted_and_handled_by_policy(tmp_path: Path, policy: str) -> None:
    server = _server(tmp_path, csa_non_image=policy)
    study = generate_uid()
    mr = make_instance(study, generate_uid())
    csa = make_instance(study, generate_uid())
    csa.SOPClassUID = csa.file_meta.MediaStorageSOPClassUID = CSA_NON_IMAGE_STORAGE
    try:
        assoc = _assoc(server.port, contexts=[build_context(MRImageStorage),
                                              build_context(CSA_NON_IMAGE_STORAGE)])
        assert assoc.is_established
        assert assoc.send_c_store(mr).Status == 0
        assert assoc.send_c_store(csa).Status == 0
        assoc.release()
    finally:
        server.stop()
    stored = list((tmp_path / "spool" / "incoming").rglob("*.dcm"))
    assert len(stored) == (2 if policy == "store" else 1)
