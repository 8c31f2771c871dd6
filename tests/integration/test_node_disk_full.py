"""A full spool disk, then space freed: every study is analysed without a restart.

The node runs with its spool on a 64 MiB tmpfs mounted in a private mount
namespace (``unshare -rm``), so the disk really fills; the test reaches that
filesystem through ``/proc/<node pid>/root`` to fill it with a ballast file (as
another writer on the same disk would) and to free it again. ``status`` is read
from the same place while the stall lasts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.node_helpers import REPO, NodeProcess, PacsPeer, dcmtk_tool, storescu, wait_until, write_study

MIN_FREE_MB = 16


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _status(node: NodeProcess, spool: Path) -> dict:
    env = dict(node.env, TSC_NODE_SPOOL__DIR=str(spool))
    out = subprocess.run([sys.executable, "-m", "app.node", "status", "--config", str(node.config_path),
                          "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk storescu not installed")
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace")
def test_full_spool_stalls_visibly_and_recovers_without_restart(tmp_path: Path) -> None:
    pacs = PacsPeer(tmp_path / "pacs").start()
    spool_dir = tmp_path / "node" / "spool"
    spool_dir.mkdir(parents=True)
    prefix = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64m tmpfs "$0" && exec "$@"', str(spool_dir)]
    node = NodeProcess(tmp_path / "node", destinations=[f"PACS@127.0.0.1:{pacs.port}"], quiet_period_s=3,
                       extra={"spool": {"min_free_mb": MIN_FREE_MB, "fsync": False}}, command_prefix=prefix)
    _, a = write_study(tmp_path / "a", 4, payload_bytes=65536)
    _, b = write_study(tmp_path / "b", 4, payload_bytes=65536)
    try:
        node.start()
        pid = node.proc.pid
        spool = Path(f"/proc/{pid}/root") / str(spool_dir).lstrip("/")
        assert storescu(node.port, tmp_path / "a").returncode == 0
        # Another writer fills the disk until less than min_free_mb is left.
        free_mb = os.statvfs(spool).f_bavail * os.statvfs(spool).f_frsize / 2 ** 20
        ballast = spool / "ballast.bin"
        with open(ballast, "wb") as f:
            f.write(b"\0" * int((free_mb - MIN_FREE_MB / 2) * 2 ** 20))
        storescu(node.port, tmp_path / "b")  # dcmtk's storescu exits 0 even when every C-STORE failed
        # A700 out of resources for each instance: nothing acknowledged that cannot be kept
        assert node.log_text().count('"event": "out_of_resources"') == len(b)
        time.sleep(6)  # past the quiet period: study A is stable but cannot be processed
        stalled = _status(node, spool)
        assert any(p.startswith("disk:") for p in stalled["problems"]), stalled
        assert stalled["processed"] == 0 and stalled["waiting"] + stalled["receiving"] == 1
        ballast.unlink()  # space freed; the node is not restarted
        assert storescu(node.port, tmp_path / "b").returncode == 0  # the sender retries
        wait_until(lambda: _status(node, spool)["results_sent"] == 2, 120, 0.5)
        recovered = _status(node, spool)
        assert node.proc.pid == pid and node.proc.poll() is None
        assert recovered["processed"] == 2 and recovered["failed"] == 0
        assert not [p for p in recovered["problems"] if p.startswith("disk:")]
        assert len(pacs.received) == 2
    finally:
        node.stop()
        node.kill()
        pacs.stop()
