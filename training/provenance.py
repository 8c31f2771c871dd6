"""What a model card must record to be reproducible: package versions, git commit, seeds, threads.

Also the held-out check: which evaluated studies (if any) were training cases, compared by
case id, StudyInstanceUID and pseudonymous patient key, not assumed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "SimpleITK", "pydicom", "highdicom", "monai",
            "monai-deploy-app-sdk", "hd-bet")
_REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = _REPO) -> str | None:
    """The repository's HEAD commit, with ``+dirty`` when tracked files differ; None outside a checkout."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def provenance(threads: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Environment of a training run (written to ``provenance.json`` in the work folder)."""
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "cpu_count": os.cpu_count(), "torch_threads": threads, "device": device,
            "packages": package_versions()}


def held_out_check(evaluated: Iterable[Mapping[str, Any]], training_cases: Mapping[str, Mapping[str, Any]]
                   ) -> dict[str, Any]:
    """Compare evaluated studies with the training cases.

    Args:
        evaluated: One mapping per evaluated study with ``case_id`` and, where known, ``study_uid``
            and ``patient_key``.
        training_cases: Training case id -> ``{"study_uid", "patient_key"}`` (``split.json``'s ``cases``).

    Returns:
        ``held_out`` (True only when nothing overlaps and every study's UID was known), the
        overlapping ids per kind, and how many evaluated studies had no UID to compare.
    """
    train_ids = set(training_cases)
    train_uids = {v.get("study_uid") for v in training_cases.values()} - {None}
    train_patients = {v.get("patient_key") for v in training_cases.values()} - {None}
    same_id, same_uid, same_patient, unknown = [], [], [], 0
    for e in evaluated:
        if e.get("case_id") in train_ids:
            same_id.append(e["case_id"])
        uid = e.get("study_uid")
        if uid is None:
            unknown += 1
        elif uid in train_uids:
            same_uid.append(e["case_id"])
        if e.get("patient_key") in train_patients:
            same_patient.append(e["case_id"])
    return {"held_out": not (same_id or same_uid or same_patient) and unknown == 0,
            "same_case_id": sorted(same_id), "same_study_uid": sorted(same_uid),
            "same_patient": sorted(same_patient), "without_study_uid": unknown}


# Manifest keys whose content changes a score (the rest: names, wording, intended-use gate, card).
SCORING_KEYS = ("grids", "members", "ensembles", "primary", "preprocessing")


def scoring_differences(evaluated_dir: Path, model_set_dir: Path) -> tuple[bool, list[str]]:
    """Whether two model sets score identically (same scoring manifest content), and which keys differ.

    Returns:
        (scores identical, sorted top-level manifest keys that differ).
    """
    import yaml

    a = yaml.safe_load((Path(evaluated_dir) / "manifest.yaml").read_text())
    b = yaml.safe_load((Path(model_set_dir) / "manifest.yaml").read_text())
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return not any(k in SCORING_KEYS for k in differ), differ
