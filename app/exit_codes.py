"""What the exit status of a study run means, per hosting platform.

Platforms read a container's exit status differently:

* ``detailed`` (default): 0 analysed, 2 not analysable (a short SR says why),
  1 configuration or internal error. For the command line and for platforms that
  look at outputs rather than the status (MONAI Deploy Express / Workflow Manager
  count every exited container as succeeded; a missing mandatory output artifact is
  what marks a failure there).
* ``sr-written``: 0 whenever this run wrote an SR into the output folder (result or
  not analysable), 1 otherwise. For mercure, which treats a non-zero status as a
  failed module and then dispatches nothing: the not-analysable SR must still reach
  the PACS, so that radiologists are not left waiting.

Chosen with ``--exit-code-policy`` or ``TSC_EXIT_CODE_POLICY``.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydicom import dcmread

POLICIES = ("detailed", "sr-written")
ENV_VAR = "TSC_EXIT_CODE_POLICY"
_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


class ExitCodePolicyError(ValueError):
    """An unknown policy name."""


def check_policy(name: str) -> str:
    """Return ``name`` if it is a known policy; raise :class:`ExitCodePolicyError` naming the choices."""
    if name not in POLICIES:
        raise ExitCodePolicyError(f"exit-code policy {name!r} is not one of {', '.join(POLICIES)}")
    return name


def srs_written_since(output_dir: Path, since: float) -> list[Path]:
    """SR documents under ``output_dir`` modified at or after ``since`` (seconds since the epoch)."""
    found = []
    if not output_dir.is_dir():
        return found
    for path in output_dir.rglob("*"):
        try:
            if not path.is_file() or path.stat().st_mtime < since - 1:
                continue
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        except Exception:  # noqa: BLE001 - not DICOM: not an SR
            continue
        if str(ds.get("SOPClassUID", "")).startswith(_SR_CLASS_PREFIX):
            found.append(path)
    return found


def apply_policy(code: int, policy: str, output_dir: Path, started: float) -> int:
    """The exit status to return under ``policy`` for a run that ended with ``code``."""
    if check_policy(policy) == "sr-written":
        return 0 if srs_written_since(output_dir, started) else 1
    return code


def now() -> float:
    return time.time()
