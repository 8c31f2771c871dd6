"""The deployment guide's files agree with each other (fast checks; the walk is an integration test).

* systemd units parse (``systemd-analyze verify``, with /opt/tsc pointed at this checkout);
* the guide's route A installs the Python packages exactly as the Dockerfile does;
* the guide's walked blocks exist (tests/integration/test_deployment_guide.py runs them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.deployment_guide_walk import commands, guide_blocks

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "packaging" / "systemd").glob("tsc-*"))
GUIDE = (REPO / "docs" / "deployment.md").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/tsc", str(REPO)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *[str(tmp_path / u.name) for u in UNITS]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    node = (REPO / "packaging" / "systemd" / "tsc-node.service").read_text()
    assert "LimitSTACK=33554432" in node and "User=tsc" in node and "Restart=on-failure" in node
    retry = (REPO / "packaging" / "systemd" / "tsc-orthanc-retry.service").read_text()
    assert "--password" not in retry.replace("--password-file", "")


def test_route_a_installs_the_image_packages_the_same_way() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    pip_pin = re.search(r'pip install "(pip==[0-9.]+)"', dockerfile).group(1)
    assert f'.venv/bin/pip install "{pip_pin}"' in GUIDE
    assert '--no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"' in GUIDE
    assert '--no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"' in dockerfile
    assert ".venv/bin/pip install --no-deps -r packaging/requirements-runtime.txt" in GUIDE


def test_walked_blocks_are_in_the_guide() -> None:
    blocks = guide_blocks(GUIDE)
    assert set(blocks) == {"configure", "start", "check"}
    check = [cmd for _, cmd in commands(blocks["check"])]
    assert any(c.startswith("/usr/bin/storescu +sd +r") for c in check)  # dcmtk's, by full path
    assert any("status" in c and "--check" in c for c in check)
    assert any(c.startswith("/usr/bin/echoscu") for c in check)


def test_compose_keeps_the_stack_limit_and_uses_the_shipped_configs() -> None:
    import yaml

    compose_path = REPO / "app" / "node" / "compose.yaml"
    compose = yaml.safe_load(compose_path.read_text())
    node = compose["services"]["tsc-node"]
    assert node["ulimits"]["stack"] == 33554432
    assert "entrypoint" not in node  # the image's entry point raises the soft limit
    assert node["build"]["args"]["DEMO_MODELS"] in ("yes", "no")
    for service in ("tsc-node", "orthanc-retry"):
        assert compose["services"][service]["network_mode"] == "service:orthanc"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_path.parent / source).exists(), volume
    retry = " ".join(compose["services"]["orthanc-retry"]["command"])
    assert "--password" not in retry and "127.0.0.1:8042" in retry
