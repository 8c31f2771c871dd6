"""A study arriving in two parts gets one coherent answer: the final SR supersedes the first.

T2 first (the node answers "not analysable": no FLAIR), then FLAIR after the
first SR reached the PACS: the study re-opens, is analysed on everything
received, and the analysed SR names the not-analysable one in its Predecessor
Documents Sequence. Orthanc is the PACS; the real pipeline runs with a tiny
constant-output model set. Runs in a private network namespace (see
tests/integration/node_reopen_scenario.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_node_orthanc import _netns_prefix, _synthetic_available
from tests.node_helpers import REPO, dcmtk_tool


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists(),
                    reason="Orthanc (Debian package orthanc) not installed")
@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk storescu not installed")
@pytest.mark.skipif(_netns_prefix() is None, reason="cannot create a private network namespace (unshare -n)")
@pytest.mark.skipif(not _synthetic_available(), reason="synthetic study generator not available")
def test_t2_then_flair_gives_one_analysed_sr_superseding_the_first(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [*(_netns_prefix() or []), "sh", "-c",
           f"ip link set lo up && exec {sys.executable} -m tests.integration.node_reopen_scenario "
           f"--work {tmp_path / 'work'} --out {out}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=os.environ.get("PATH", "") + ":/usr/sbin")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=560)
    report = json.loads(out.read_text()) if out.exists() else {}
    assert report.get("ok"), f"{report.get('error')}\n{proc.stderr[-3000:]}\n{json.dumps(report)[-4000:]}"
    (first,) = report["first"]
    assert not first["analysed"] and first["predecessors"] == []
    final = report["final"]
    analysed = [sr for sr in final if sr["analysed"]]
    assert len(analysed) == 1, final  # exactly one analysed SR in the PACS
    assert len(final) == 2  # and the superseded not-analysable one, nothing else
    (result,) = analysed
    assert result["predecessors"] == [first["sop_instance_uid"]]
    assert "Supersedes 1 earlier report" in result["change_note"] and "not analysable" in result["change_note"]
    assert "new series" in result["change_note"]
    status = report["node_status"]
    assert status["failed"] == 1 and status["processed"] == 1 and status["results_sent"] == 2
    assert status["problems"] == []
