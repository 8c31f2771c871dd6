"""The site image's package set, end to end without a Docker engine.

* The whole app runs on a synthetic study with only the runtime packages importable
  (packaging/runtime_guard.py), as it would in the image: exit 0 and a result SR.
* The lock file resolves against the package index exactly as the Dockerfile's
  ``pip install --no-deps -r packaging/requirements-runtime.txt`` will
  (``pip install --dry-run --report``), skipped when the index is unreachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from synthetic import StudyOptions, generate_study
from tests.unit._model_sets import make_model_set

pytestmark = [pytest.mark.slow, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "packaging" / "requirements-runtime.txt"


@pytest.mark.timeout(1000)
def test_app_analyses_a_study_with_only_the_runtime_packages(tmp_path: Path) -> None:
    make_model_set(tmp_path / "models", {m: [0.7, 0.7] for m in ("t2_wae", "flair_wae", "flair3_wae", "clinical",
                                                                  "t2_etsc", "flair_etsc")})
    study = generate_study(tmp_path / "studies", 7, StudyOptions(decoys=False, t2_matrix=(192, 192), t2_pixel_mm=1.2,
                                                                 flair_matrix=(160, 160), flair_pixel_mm=1.4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLOSCAN_")}
    env["PYTHONPATH"] = str(REPO)
    cmd = ["bash", "-c", 'ulimit -s 32768; exec "$0" "$@"', sys.executable, str(REPO / "packaging" / "runtime_guard.py"),
           "app", "-i", str(study.input_dir), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "models")]
    # default configuration: HD-BET v1 (fast on CPU) with the runtime packages only (no scikit-image, requests)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=980)
    assert result.returncode == 0, result.stderr[-4000:]
    assert any(line.startswith("SR: ") for line in result.stdout.splitlines()), result.stdout
    assert "blocked imports" in result.stderr and "'cupy'" in result.stderr  # the guard was active


def _index_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).read(100)
        return True
    except OSError:
        return False


@pytest.mark.timeout(900)
def test_lock_resolves_against_the_index(tmp_path: Path) -> None:
    if not _index_reachable():
        pytest.skip("package index not reachable")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "-q",
           "--report", str(report), "-r", str(LOCK)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=880)
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    pins = [ln for ln in LOCK.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(installs) == len(pins)
    versions = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    for pin in pins:
        name, version = pin.split("==")
        assert versions.get(canonicalize_name(name)) == version, pin
