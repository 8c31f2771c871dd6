"""End to end with a real PACS: storescu -> Orthanc + route_tsc.lua -> node -> SR and FLAIR3 back in Orthanc.

The scenario (tests/integration/node_orthanc_scenario.py) runs in a private
network namespace (``unshare -n``) so Orthanc, which cannot bind to one address,
and the node are reachable on loopback only. The node first is down: Orthanc's
routing job fails and is resubmitted with ``app.node.orthanc_retry``, as the
routing guide says.

The processor is the real pipeline (``app.pipeline:make_processor``) with a tiny
constant-output model set the scenario builds (no trained weights exist in a
test); ``TSC_NODE_E2E_PROCESSOR=tests.node_doubles:make_result_writer`` runs the
same scenario with the test double instead.
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

PROCESSOR = os.environ.get("TSC_NODE_E2E_PROCESSOR", "app.pipeline:make_processor")
DOUBLE = "tests.node_doubles:make_result_writer"


def _netns_prefix() -> list[str] | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    for flags in (["-n"], ["-rn"]):
        if subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0:
            return ["unshare", *flags]
    return None


def _synthetic_available() -> bool:
    try:
        from synthetic import generate_study  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists(),
                    reason="Orthanc (Debian package orthanc) not installed")
@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk storescu not installed")
@pytest.mark.skipif(_netns_prefix() is None,
                    reason="cannot create a private network namespace (unshare -n) to confine Orthanc")
@pytest.mark.skipif(not _synthetic_available(), reason="synthetic study generator not available")
def test_orthanc_routes_tsc_child_study_and_gets_results_back_once(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [*(_netns_prefix() or []), "sh", "-c",
           f"ip link set lo up && exec {sys.executable} -m tests.integration.node_orthanc_scenario "
           f"--work {tmp_path / 'work'} --out {out} --processor {PROCESSOR}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=os.environ.get("PATH", "") + ":/usr/sbin")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=560)
    report = json.loads(out.read_text()) if out.exists() else {}
    assert report.get("ok"), f"{report.get('error')}\n{proc.stderr[-3000:]}\n{json.dumps(report)[-4000:]}"
    child = report["studies"]["tsc_child"]
    # the routing job failed while the node was down and went through once resubmitted
    assert report["failed_jobs_while_node_down"] == 1
    assert len(report["resubmitted"]) == 1
    assert report["store_jobs"] == [{"id": report["resubmitted"][0], "state": "Success"}]
    # SR and FLAIR3 series in the same study, exactly one of each; processed exactly once
    series = report["routed_study_series"]
    assert sum(1 for k in series if k.startswith("SR:")) == 1
    assert sum(1 for k in series if "FLAIR3" in k) == 1
    if PROCESSOR == DOUBLE:
        assert series["SR:TSC outcome (test double)"] == 1
        assert report["ledger"] == [child]
    else:  # the real pipeline analysed the study: a result SR, not a not-analysable one
        assert not any("not analysable" in k for k in series), series
        assert report["node_status"]["processed"] == 1
    # only the paediatric TSC study was routed; the returning results did not re-trigger routing
    routed_lines = [line for line in report["orthanc_lua_log"] if "routed to" in line]
    assert len(routed_lines) == 1
    assert any("not paediatric" in line for line in report["orthanc_lua_log"])
    assert any("not a TSC brain MR" in line for line in report["orthanc_lua_log"])
    assert report["tsc_adult_series"] == 2 and report["other_child_series"] == 2
    assert report["node_status"]["results_sent"] == 1 and report["node_status"]["failed"] == 0
