"""The site image's build steps, checked without a Docker engine.

What the Dockerfile does that can be checked here is checked the way the install
steps are: the lock file it installs equals the tested environment's packages,
the app and the node import with nothing but those packages (packaging/runtime_guard.py
hides every other installed distribution), every file it copies is in the build
context that .dockerignore lets through (and nothing heavy is), the final stage
carries no download tools, and the pins agree with pyproject.toml and the node's
example configuration. tests/integration/test_runtime_image.py runs the app end to
end under the same guard and resolves the lock against the package index.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
sys.path.insert(0, str(REPO / "scripts"))
import runtime_image  # noqa: E402


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _dockerignore_allows(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent folder counts."""
    allowed = True
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.split("/")[-1], pat[3:]) or fnmatch.fnmatch(c, pat[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pat) and c.count("/") == pat.count("/") for c in candidates)
        if hit:
            allowed = negate
    return allowed


def _ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_lock_file_is_the_tested_environment() -> None:
    assert runtime_image.lock_text() == runtime_image.LOCK.read_text(encoding="utf-8"), (
        "packaging/requirements-runtime.txt is stale: run python scripts/runtime_image.py lock")
    pins = runtime_image.runtime_set()
    assert "monai-deploy-app-sdk" in pins and "holoscan-cu13" in pins  # the app graph needs them
    for left_out in ("holoscan-cli", "cupy-cuda13x", "cuda-python"):
        assert left_out not in pins


def test_dockerfile_installs_pinned_packages_without_resolution() -> None:
    text = DOCKERFILE.read_text()
    stages = _stages(_instructions(text))
    runs = " ".join(args for stage in stages for word, args in stage if word == "RUN")
    pip_pin = re.search(r'pip install "pip==([0-9.]+)"', runs)
    assert pip_pin, "the image's pip must be pinned"
    torch_pin = next(r for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                     if r.startswith("torch"))
    assert f'"{torch_pin}"' in runs, f"Dockerfile torch pin differs from pyproject ({torch_pin})"
    assert "--no-deps -r /tmp/requirements-runtime.txt" in runs
    for cmd in re.findall(r"pip install ([^&;]+)", runs):
        assert "--no-deps" in cmd or "pip==" in cmd or "torch==" in cmd, f"unpinned resolution: pip install {cmd}"


def test_final_stage_is_small_and_safe() -> None:
    stages = _stages(_instructions(DOCKERFILE.read_text()))
    final = stages[-1]
    words = [w for w, _ in final]
    args = {w: a for w, a in final}
    runs = " ".join(a for w, a in final if w == "RUN")
    assert not re.search(r"\b(curl|unzip|wget|gcc|build-essential)\b", runs), runs
    apt = re.findall(r"apt-get install -y --no-install-recommends ([^&]+)", runs)
    assert [p.split() for p in apt] == [["libgomp1"]]
    assert "HEALTHCHECK" in words and "status --liveness --check" in args["HEALTHCHECK"]
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert args["USER"] == "tsc"
    assert "ulimit -s 32768" in args["ENTRYPOINT"]
    assert "HOLOSCAN_MODEL_PATH=/opt/tsc/models" in " ".join(a for w, a in final if w == "ENV")
    copies = [a for w, a in final if w == "COPY"]
    assert not any(re.match(r"(--\S+ )*(training|tests|models)\b", c) for c in copies), copies
    # demo weights only when asked for: the default stage copies the no-models note
    assert re.search(r"^ARG DEMO_MODELS=no$", DOCKERFILE.read_text(), re.M)
    assert "FROM models-${DEMO_MODELS} AS models" in DOCKERFILE.read_text()


def test_every_copied_path_is_in_the_build_context_and_nothing_heavy_is() -> None:
    patterns = _ignore_patterns()
    for stage in _stages(_instructions(DOCKERFILE.read_text())):
        for word, args in stage:
            if word != "COPY" or args.startswith("--from"):
                continue
            sources = shlex.split(args)[:-1]
            for src in sources:
                path = REPO / src.rstrip("/")
                assert path.exists(), f"COPY {src}: not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                rel = [str(f.relative_to(REPO)) for f in files if "__pycache__" not in f.parts]
                assert rel and all(_dockerignore_allows(r, patterns) for r in rel), f"COPY {src}: excluded"
    for heavy in (".venv/bin/python", ".git/HEAD", "training/config.py", "tests/unit/test_runtime_image.py",
                  "work-data/x.dcm", "demo-output/r.dcm", "build/map/x", "benchmarks/bench_app.py",
                  "app/__pycache__/cli.cpython-311.pyc"):
        assert not _dockerignore_allows(heavy, patterns), f"{heavy} would be sent to the Docker daemon"
    assert _dockerignore_allows("app/node/node.example.yaml", patterns)


def test_final_stage_apt_packages_exist_for_the_base_release() -> None:
    if not Path("/usr/bin/apt-get").exists():
        pytest.skip("no apt-get on this machine")
    out = subprocess.run(["apt-get", "-s", "install", "--no-install-recommends", "libgomp1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.timeout(300)
def test_app_and_node_import_with_only_the_runtime_packages(tmp_path: Path) -> None:
    probe = tmp_path / "runtime_probe.py"
    probe.write_text("import sys\nimport app.app, app.pipeline, app.node.service, app.node.cli, synthetic\n"
                     "assert not [m for m in sys.modules if m.split('.')[0] == 'training'], 'training imported'\n"
                     "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}")
    cmd = ["bash", "-c", 'ulimit -s 32768; exec "$0" "$@"', sys.executable,
           str(REPO / "packaging" / "runtime_guard.py"), "runtime_probe"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
    blocked = re.search(r"blocked imports: \[(.*)\]", result.stderr)
    # the guard really hid packages that are installed here (cupy at least)
    assert blocked and "'cupy'" in blocked.group(1), result.stderr[-2000:]
