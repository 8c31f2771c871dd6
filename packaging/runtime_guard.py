"""Run a module with only the runtime image's distributions importable (the rest raise ImportError).

    python packaging/runtime_guard.py MODULE [ARGS...]

Every top-level module that belongs only to distributions outside
packaging/requirements-runtime.txt (plus torch) is made unimportable, as if it
were not installed, then ``MODULE`` runs as ``python -m MODULE ARGS``. The
standard library and the repository's own packages stay importable. This is how
the tests check, without a Docker engine, that the image's package set is enough
for the app and the node; blocked imports are listed on stderr at exit.
"""

from __future__ import annotations

import atexit
import importlib.metadata as md
import runpy
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parent / "requirements-runtime.txt"
# torch comes from the PyTorch index; the project itself is copied into the image.
SEPARATE = {"torch", "tsc-epilepsy-outcome"}


def allowed_distributions() -> set[str]:
    names = set(SEPARATE)
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def blocked_modules(allowed: set[str]) -> set[str]:
    """Top-level modules provided only by installed distributions outside ``allowed``.

    Standard-library names stay importable even when an old PyPI backport of the
    same name (e.g. ``argparse``) is installed: the standard library comes first
    on ``sys.path``, so the backport is never what gets imported.
    """
    owners = md.packages_distributions()
    return {module for module, dists in owners.items()
            if module not in sys.stdlib_module_names and not any(canonicalize_name(d) in allowed for d in dists)}


class _Guard:
    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked
        self.hits: set[str] = set()

    def find_spec(self, name: str, path=None, target=None):  # noqa: ANN001 - importlib protocol
        top = name.partition(".")[0]
        if top in self.blocked:
            self.hits.add(top)
            raise ModuleNotFoundError(f"No module named {name!r} (not in the runtime image)", name=name)
        return None


def main() -> None:
    guard = _Guard(blocked_modules(allowed_distributions()))
    sys.meta_path.insert(0, guard)
    atexit.register(lambda: guard.hits and print(f"runtime_guard: blocked imports: {sorted(guard.hits)}",
                                                 file=sys.stderr))
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
