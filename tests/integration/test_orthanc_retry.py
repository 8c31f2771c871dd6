"""app.node.orthanc_retry against a real Orthanc (shipped orthanc.json) whose jobs to the node fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_deployment_guide import _netns_prefix
from tests.node_helpers import REPO, dcmtk_tool


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/usr/sbin/Orthanc").exists(), reason="Debian package orthanc not installed")
@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk storescu not installed")
@pytest.mark.skipif(_netns_prefix() is None, reason="cannot create a private network namespace")
def test_transient_failures_are_resubmitted_until_given_up_and_permanent_ones_never(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [*(_netns_prefix() or []), "sh", "-c",
           f"ip link set lo up && exec {sys.executable} -m tests.integration.orthanc_retry_scenario "
           f"--work {tmp_path / 'work'} --out {out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=280)
    report = json.loads(out.read_text()) if out.exists() else {}
    assert report.get("ok"), f"{report.get('error')}\n{proc.stderr[-2000:]}\n{json.dumps(report)[-3000:]}"
    job, job2 = report["job_ids"]
    assert report["storescu_rc"] == 0  # the shipped config accepts the documented test sender
    assert report["first"]["rc"] == 0 and json.loads(report["first"]["stdout"]) == {"resubmitted": [job]}
    assert json.loads(report["give_up"]["stdout"]) == {"resubmitted": []}
    assert "given up" in report["give_up"]["stderr"] and report["state_after_give_up"] == "Failure"
    assert job in report["state_file"]["given_up"]
    assert report["password_option_rc"] == 2  # argparse: no such option
    assert report["refused_error"]["code"] == 9  # node down: "Error in the network protocol", transient
    assert json.loads(report["permanent"]["stdout"]) == {"resubmitted": []}
    assert "failed permanently (the study is no longer in Orthanc" in report["permanent"]["stderr"]
