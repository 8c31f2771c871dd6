"""docs/deployment.md route A, walked end to end: configure, start, install check -> SR in Orthanc.

tests/integration/deployment_guide_walk.py reads the guide's command blocks and runs
them in a private network namespace (``unshare -rn``: loopback only), with the shipped
orthanc.json, route_tsc.lua, node.example.yaml and systemd units changed in their paths
only, the Debian package's Orthanc, the repository's demo model set, a synthetic study
made by the guide's `python -m synthetic generate` and sent with dcmtk's storescu.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node_helpers import REPO, dcmtk_tool


def _netns_prefix() -> list[str] | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    for flags in (["-rn"], ["-n"]):
        if subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0:
            return ["unshare", *flags]
    return None


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not Path("/usr/sbin/Orthanc").exists(), reason="Debian package orthanc not installed")
@pytest.mark.skipif(dcmtk_tool("storescu") is None or dcmtk_tool("echoscu") is None, reason="dcmtk not installed")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.skipif(_netns_prefix() is None, reason="cannot create a private network namespace")
@pytest.mark.skipif(not (REPO / "models" / "manifest.yaml").exists(), reason="no demo model set in models/")
def test_route_a_of_the_deployment_guide_gets_an_analysed_sr_into_orthanc(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [*(_netns_prefix() or []), "sh", "-c",
           f"ip link set lo up && exec {sys.executable} -m tests.integration.deployment_guide_walk "
           f"--work {tmp_path / 'work'} --out {out}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1150)
    report = json.loads(out.read_text()) if out.exists() else {}
    assert report.get("ok"), f"{report.get('error')}\n{proc.stderr[-3000:]}\n{json.dumps(report)[-6000:]}"
    assert report["blocks"] == ["check", "configure", "start"]
    # the shipped configurations were installed as they are, with only their paths moved
    installed = report["installed_is_shipped_with_paths_moved"]
    assert set(installed) >= {"app/node/node.example.yaml", "app/node/orthanc/orthanc.json",
                              "app/node/orthanc/route_tsc.lua", "packaging/systemd/tsc-node.service"}
    assert all(installed.values()), installed
    assert report["config_lines_changed"] and all(
        any(p in before for p in ("/opt/tsc", "/etc/", "/var/")) for before, _ in report["config_lines_changed"])
    started = [s["unit"] for s in report["steps"] if "unit" in s]
    assert started == ["orthanc", "tsc-node", "tsc-orthanc-retry"]
    checks = [s for s in report["steps"] if "command" in s]
    assert [c["rc"] for c in checks] == [0] * len(checks)
    assert any(c["command"].startswith("/usr/bin/storescu +sd +r") for c in checks)
    # the result came back analysed, once, into the test study
    srs = report["results"]["srs"]
    assert len(srs) == 1 and srs[0]["analysed"], report["results"]
    status = checks[-1]["stdout"]
    assert "studies processed:      1" in status and "results sent:           1" in status, status
    assert "problems: none" in status
    # the node stopped cleanly on SIGTERM, as systemd stops it
    assert report["exit_codes"]["tsc-node"] == 0
