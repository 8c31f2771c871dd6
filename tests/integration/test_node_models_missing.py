"""A node whose models path is wrong: it accepts, says why studies wait, and recovers by itself.

Chosen behaviour (docs/dicom-node.md, "When the models cannot be loaded"): the SCP keeps
accepting studies and spools them; the log and ``status`` say the worker cannot load
its models from the named path; ``status --check`` exits 1 naming it. Once the model
set is installed at that path the worker starts on its next retry and the waiting
study is processed, without a restart and without the PACS sending it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node_helpers import REPO, NodeProcess, dcmtk_tool, storescu, wait_until, write_study


def _status(node: NodeProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "status", "--config", str(node.config_path), *args],
                          cwd=REPO, env=node.env, capture_output=True, text=True, timeout=60)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk storescu not installed")
def test_wrong_models_path_is_reported_and_studies_wait_with_a_reason(tmp_path: Path) -> None:
    models = tmp_path / "models-not-installed"
    node = NodeProcess(tmp_path / "node", processor="app.pipeline:make_processor",
                       options={"models": str(models), "brain_extraction": "fallback"}, quiet_period_s=1)
    node.start()
    try:
        # the worker fails to load the model set and says where it looked
        wait_until(lambda: '"worker_start_failed"' in node.log_text(), 120, 0.5)
        log = node.log_text()
        assert str(models) in log and "worker.options.models" in log and "-m or" not in log
        # the SCP still accepts (the chosen behaviour), and the study waits with a reason
        study_uid, _ = write_study(tmp_path / "study", 3)
        sent = storescu(node.port, tmp_path / "study")
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: '"study_waiting_for_worker"' in node.log_text(), 60, 0.5)
        check = _status(node, "--check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert check.stdout.startswith("PROBLEM: worker cannot start") and str(models) in check.stdout
        report = json.loads(_status(node, "--json").stdout)
        assert report["node"]["running"] and report["waiting"] == 1
        assert report["studies"][0]["study_uid"] == study_uid
        assert report["studies"][0]["reason"].startswith("worker cannot start:")

        # installing the model set where the node looks is enough: no restart, no re-send
        from tests.unit._model_sets import make_model_set
        staging = tmp_path / "models-staging"
        make_model_set(staging, {m: [0.6, 0.6] for m in ("t2_wae", "flair_wae", "flair3_wae", "clinical",
                                                          "t2_etsc", "flair_etsc")})
        staging.rename(models)  # appears at once, as a finished install or a mount would
        wait_until(lambda: json.loads(_status(node, "--json").stdout)["failed"] == 1, 200, 2)
        after = json.loads(_status(node, "--json").stdout)
        # the test study has no T2/FLAIR: the pipeline ran and judged it not analysable (not a crash)
        assert after["waiting"] == 0 and after["not_analysable"] == 1 and after["errors"] == 0
        assert any(w["state"] == "ready" for w in after["node"]["workers"])
        assert _status(node, "--check").returncode == 0
    finally:
        node.stop()
    stopped = _status(node, "--check")
    assert stopped.returncode == 1 and "node not running" in stopped.stdout
