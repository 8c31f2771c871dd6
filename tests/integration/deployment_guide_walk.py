"""Walk docs/deployment.md's route A (steps A5-A7) and report what happened.

Run by tests/integration/test_deployment_guide.py inside a private network
namespace (only loopback exists, so the default ports 4242, 8042 and 11112 are
free and nothing leaves the machine). The guide's own command blocks are read
from the Markdown (``<!-- walk: NAME -->`` before a ```bash block) and run as
written, with one change: absolute paths of the target system (``/etc/orthanc``,
``/opt/tsc``, ``/var/lib/tsc-node`` ...) are moved under a temporary root. The
installed configuration files get the same path substitution and nothing else;
the report lists every line that changed so the test can prove it. ``systemctl``
lines start each named unit from its unit file's ``ExecStart`` (with its
``Environment=``, ``WorkingDirectory=`` and ``LimitSTACK=``), Orthanc from the
Debian package's unit.

    python -m tests.integration.deployment_guide_walk --work DIR --out report.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "deployment.md"
DEBIAN_ORTHANC_UNIT = Path("/lib/systemd/system/orthanc.service")
RETRY_MARKERS = ("Repeat until", "Give it a minute")
RETRY_TIMEOUT_S = {"Repeat until": 900.0, "Give it a minute": 240.0}


def guide_blocks(text: str) -> dict[str, str]:
    """``{name: script}`` for every ``<!-- walk: name -->`` followed by a fenced bash block."""
    blocks = {}
    for m in re.finditer(r"<!-- walk: (\S+) -->\s*```bash\n(.*?)```", text, re.S):
        blocks[m.group(1)] = m.group(2)
    return blocks


def commands(script: str) -> list[tuple[str, str]]:
    """(preceding comment, command) pairs with continuation lines joined."""
    out, comment, buf = [], "", ""
    for line in script.splitlines():
        stripped = line.strip()
        if not buf and stripped.startswith("#"):
            comment = (comment + " " + stripped.lstrip("# ")).strip()
            continue
        if not stripped:
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        out.append((comment, buf + stripped))
        comment, buf = "", ""
    return out


class Substitution:
    """Moves the target system's absolute paths under ``root`` (longest prefix first)."""

    def __init__(self, root: Path, python: str) -> None:
        self.pairs = [("/opt/tsc/.venv/bin/python", python), ("/opt/tsc", str(REPO))]
        for path in ("/etc/orthanc", "/etc/tsc-node", "/etc/systemd/system", "/var/lib/orthanc",
                     "/var/log/orthanc", "/var/lib/tsc-node", "/tmp/tsc-check"):
            self.pairs.append((path, str(root) + path))
        self.pairs.sort(key=lambda p: -len(p[0]))

    def __call__(self, text: str) -> str:
        # Only whole absolute paths (not a path already moved under root): idempotent.
        pattern = r"(?<![\w./-])(?:" + "|".join(re.escape(a) for a, _ in self.pairs) + ")"
        table = dict(self.pairs)
        return re.sub(pattern, lambda m: table[m.group(0)], text)


def unit_command(unit: Path, sub: Substitution) -> tuple[list[str], dict[str, str], str]:
    """(argv under bash with the unit's stack limit, environment, working directory)."""
    text = sub(unit.read_text())
    env = dict(os.environ)
    cwd = str(REPO)
    exec_start, stack = "", None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            k, _, v = value.partition("=")
            env[k] = v
        elif key == "WorkingDirectory":
            cwd = value
        elif key == "ExecStart":
            exec_start = value
        elif key == "LimitSTACK":
            stack = int(value) // 1024
    limit = f"ulimit -s {stack}; " if stack else ""
    return ["bash", "-c", f"{limit}exec {exec_start}"], env, cwd


def run(work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"steps": []}
    root = work / "root"
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() \
        else sys.executable
    sub = Substitution(root, python)
    # The machine after A1-A4: the Debian orthanc package's files, systemd's StateDirectory.
    shutil.copytree("/etc/orthanc", root / "etc/orthanc") if Path("/etc/orthanc").is_dir() \
        else (root / "etc/orthanc").mkdir(parents=True)
    for d in ("var/lib/orthanc/db", "var/log/orthanc", "etc/systemd/system", "var/lib/tsc-node", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    blocks = guide_blocks(GUIDE.read_text())
    report["blocks"] = sorted(blocks)
    env = dict(os.environ, PYTHONPATH=str(REPO))

    # A5: install the configuration files exactly as the guide says.
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", sub(blocks["configure"])], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    report["steps"].append({"block": "configure", "rc": r.returncode, "stderr": r.stderr[-2000:]})
    if r.returncode:
        raise RuntimeError(f"configure block failed: {r.stderr}")
    changed: list[list[str]] = []
    for installed in [root / "etc/tsc-node/node.yaml", root / "etc/orthanc/orthanc.json",
                      *sorted((root / "etc/systemd/system").iterdir())]:
        before = installed.read_text()
        after = sub(before)
        changed += [[a, b] for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
        installed.write_text(after)
    report["config_lines_changed"] = changed
    shipped = {root / "etc/tsc-node/node.yaml": "app/node/node.example.yaml",
               root / "etc/orthanc/orthanc.json": "app/node/orthanc/orthanc.json",
               root / "etc/orthanc/route_tsc.lua": "app/node/orthanc/route_tsc.lua",
               **{u: f"packaging/systemd/{u.name}" for u in (root / "etc/systemd/system").iterdir()}}
    report["installed_is_shipped_with_paths_moved"] = {
        src: installed.read_text() == sub((REPO / src).read_text()) for installed, src in shipped.items()}

    # A6: start what `systemctl` names, from the unit files.
    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        for _, cmd in commands(blocks["start"]):
            words = shlex.split(cmd)
            if words[:1] != ["systemctl"] or words[1] == "daemon-reload":
                continue
            for name in [w for w in words[2:] if not w.startswith("-")]:
                if name.endswith(".timer"):
                    report.setdefault("timers", []).append(name)
                    continue
                unit = DEBIAN_ORTHANC_UNIT if name == "orthanc" else root / "etc/systemd/system" / f"{name}.service"
                argv, unit_env, cwd = unit_command(unit, sub)
                log = open(work / f"{name}.log", "wb")
                procs.append((name, subprocess.Popen(argv, env=unit_env, cwd=cwd, stdout=log,
                                                     stderr=subprocess.STDOUT, start_new_session=True)))
                report["steps"].append({"unit": name, "argv": argv})
                time.sleep(3 if name == "orthanc" else 0)

        # A7: the install check, command by command.
        for comment, cmd in commands(blocks["check"]):
            marker = next((m for m in RETRY_MARKERS if m in comment), None)
            deadline = time.monotonic() + (RETRY_TIMEOUT_S[marker] if marker else 0)
            started = time.monotonic()
            while True:
                r = subprocess.run(["bash", "-c", sub(cmd)], cwd=REPO, env=env, capture_output=True, text=True,
                                   timeout=300)
                done = r.returncode == 0 and (marker != "Repeat until" or r.stdout.strip() not in ("", "[]"))
                if done or time.monotonic() > deadline:
                    break
                for name, p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{name} exited with {p.returncode}: "
                                           f"{(work / f'{name}.log').read_text(errors='replace')[-3000:]}")
                time.sleep(5)
            report["steps"].append({"command": cmd, "rc": r.returncode, "seconds": round(time.monotonic() - started, 1),
                                    "stdout": r.stdout[-3000:], "stderr": r.stderr[-1500:]})
            if not done:
                raise RuntimeError(f"install check failed: {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        report["results"] = _results_in_orthanc(work)
        report["ok"] = True
    finally:
        for name, p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
            report.setdefault("exit_codes", {})[name] = p.returncode
        for name, _ in procs:
            report.setdefault("logs", {})[name] = (work / f"{name}.log").read_text(errors="replace")[-4000:]
    return report


def _results_in_orthanc(work: Path) -> dict[str, Any]:
    """Every series of the routed study, and the result SR read back from Orthanc."""
    from pydicom import dcmread

    from app.node.orthanc_retry import OrthancClient
    from operators.sr_reader import read_result_sr

    client = OrthancClient("http://127.0.0.1:8042")
    out: dict[str, Any] = {"series": {}}
    for study_id in client.request("GET", "/studies"):
        for series in client.request("GET", f"/studies/{study_id}/series"):
            tags = series["MainDicomTags"]
            out["series"][f"{tags.get('Modality')}:{tags.get('SeriesDescription', '')}"] = len(series["Instances"])
            if tags.get("Modality") == "SR":
                url = f"{client.url}/instances/{series['Instances'][0]}/file"
                with urllib.request.urlopen(url, timeout=30) as resp:
                    raw = resp.read()
                path = work / f"sr-{series['ID']}.dcm"
                path.write_bytes(raw)
                sr = read_result_sr(dcmread(path))
                out.setdefault("srs", []).append({"analysed": sr.analysed, "ensembles": sr.ensemble_probabilities})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.work)
    except Exception as exc:
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        for log in sorted(args.work.glob("*.log")):
            report[log.name] = log.read_text(errors="replace")[-3000:]
    args.out.write_text(json.dumps(report, indent=1, default=str))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
