"""Delivery errors tell a refused connection from a rejected association (dcmtk storescp as the peer)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from app.node.config import Destination
from app.node.outbox import DeliveryError, send_files
from tests.node_helpers import free_port, make_instance

pytestmark = pytest.mark.integration


def _one_file(tmp_path: Path) -> list[Path]:
    path = tmp_path / "one.dcm"
    make_instance(generate_uid(), generate_uid()).save_as(path, enforce_file_format=True)
    return [path]


def _listening(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something listens on ``port`` (read from /proc: a probe connection would be an association)."""
    wanted = f":{port:04X} "
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
            if any(wanted in line.split()[1] + " " and line.split()[3] == "0A" for line in lines):
                return
        time.sleep(0.1)
    raise TimeoutError(f"storescp did not listen on {port}")


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk not installed")
def test_rejected_association_is_named_as_rejected(tmp_path: Path) -> None:
    port = free_port()
    peer = subprocess.Popen(["storescp", "--refuse", "--aetitle", "PACS", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _listening(port)
        files = _one_file(tmp_path)
        deadline = time.monotonic() + 15
        while True:  # storescp may take a moment to accept after it starts listening
            with pytest.raises(DeliveryError) as err:
                send_files(files, Destination("PACS", "127.0.0.1", port), "TSCNODE", timeout_s=5)
            if "connection refused" not in str(err.value.args[0]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    if "connection refused" in str(err.value.args[0]):
        pytest.skip("storescp --refuse never accepted a connection on loopback here")
    assert "rejected by the destination" in str(err.value.args[0])
    assert err.value.args[1] == []


def test_refused_connection_is_named_as_such(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DeliveryError) as err:
        send_files(_one_file(tmp_path), Destination("PACS", "127.0.0.1", port), "TSCNODE", timeout_s=5)
    message = str(err.value.args[0])
    assert "connection refused, unreachable or timed out" in message
    assert "rejected" not in message
