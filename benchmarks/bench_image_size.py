"""Installed size of the site image's layers, computed without a Docker engine.

For the previous Dockerfile (one stage: apt curl/unzip/ca-certificates/libgomp1, torch
CPU + ``pip install .`` = the whole pyproject closure, training/ and the demo models
copied) and the current one (apt libgomp1; torch CPU + packaging/requirements-runtime.txt
with --no-deps; app/operators/synthetic; no models by default), from:

* Python packages: the files each distribution installed in this environment (RECORD),
  the same versions the image installs (scripts/runtime_image.py);
* apt: ``Installed-Size`` of each package and of its dependencies that a
  ``python:3.11-slim-bookworm`` base lacks (priority required/important packages and
  the ones the python image adds are taken as present) - an estimate from apt-cache;
* code and models: bytes of the copied folders.

The base image itself is the same in both and not counted. Run:
``python -m benchmarks.bench_image_size [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import runtime_image  # noqa: E402

# What python:3.11-slim-bookworm installs on top of debian:bookworm-slim (its Dockerfile).
PYTHON_SLIM_EXTRAS = {"ca-certificates", "netbase", "tzdata", "libsqlite3-0", "libssl3", "libffi8",
                      "libbz2-1.0", "libncursesw6", "libreadline8", "libuuid1", "liblzma5", "zlib1g",
                      "libexpat1", "libgdbm6", "libdb5.3"}


def _closure(packages: list[str]) -> set[str]:
    """Packages ``packages`` pull in through Depends/Pre-Depends (apt-cache, one call)."""
    out = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                          "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(("Depends:", "PreDepends:")):
            line = line.split(":", 1)[1].strip()
        if line and not line.startswith("<") and " " not in line:
            names.add(line.split(":")[0])
    return names


def _installed_size_kb(packages: set[str]) -> dict[str, int]:
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", *sorted(packages)],
                         capture_output=True, text=True).stdout
    sizes: dict[str, int] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("Package:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Installed-Size:") and name:
            sizes.setdefault(name, int(line.split(":", 1)[1]))
    return sizes


def base_packages() -> set[str]:
    """debian:bookworm-slim (its priority-required packages and their dependencies) + python's additions."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Priority}\n"], capture_output=True, text=True).stdout
    required = [ln.split("\t")[0] for ln in out.splitlines() if ln.endswith("\trequired")]
    return _closure(required) | set(required) | PYTHON_SLIM_EXTRAS


def apt_added_kb(packages: list[str], base: set[str]) -> tuple[int, list[str]]:
    """Installed-Size (kB) of ``packages`` plus their dependencies the base image lacks."""
    added = (_closure(packages) | set(packages)) - (base - set(packages))
    sizes = _installed_size_kb(added)
    return sum(sizes.values()), sorted(added)


def folder_mb(*names: str) -> float:
    total = 0
    for name in names:
        for p in (REPO / name).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                total += p.stat().st_size
    return round(total / 1e6, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runtime = runtime_image.runtime_set()
    full = runtime_image.closure(runtime_image.project_dependencies(), set())
    sizes = runtime_image.installed_bytes(sorted(set(full) | set(runtime)))
    mb = lambda names: round(sum(sizes[n] for n in names) / 1e6, 1)  # noqa: E731
    base = base_packages() - {"curl", "unzip", "libgomp1"}
    old_apt_kb, old_apt = apt_added_kb(["libgomp1", "curl", "unzip"], base)  # ca-certificates: in the base
    new_apt_kb, new_apt = apt_added_kb(["libgomp1"], base)
    old = {"apt": round(old_apt_kb / 1000, 1), "python": mb(full),
           "code": folder_mb("app", "operators", "training", "synthetic"), "models": folder_mb("models")}
    new = {"apt": round(new_apt_kb / 1000, 1), "python": mb(n for n in runtime if n != "pip"),
           "code": folder_mb("app", "operators", "synthetic"), "models": 0.0}
    old["total"] = round(sum(old.values()), 1)
    new["total"] = round(sum(new.values()), 1)
    report = {"previous": old, "current_cpu": new, "previous_apt_packages": old_apt, "current_apt_packages": new_apt,
              "python_left_out_mb": {n: round(sizes[n] / 1e6, 1) for n in sorted(set(full) - set(runtime))}}
    print(f"{'layer (MB installed)':<22}{'previous':>10}{'current CPU':>13}")
    for key in ("apt", "python", "code", "models", "total"):
        print(f"{key:<22}{old[key]:>10}{new[key]:>13}")
    print("left out of the Python set:", ", ".join(f"{k} {v}" for k, v in report["python_left_out_mb"].items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
