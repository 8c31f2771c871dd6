"""The node's own "not analysable" SR, sent when processing a study failed.

The pipeline writes its own not-analysable report when it can explain a failure
(no FLAIR, unreadable series...). This one covers what the pipeline cannot
report itself: a crash, a hang past the time limit, a broken worker. It is a
Comprehensive SR in the received study, with the reason in plain text, so the
radiologist is not left waiting for a result that will never come.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import highdicom as hd
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

logger = logging.getLogger(__name__)

ALGORITHM_NAME = "TSC epilepsy outcome (DICOM node)"


def _reference_dataset(study_dir: Path) -> Dataset:
    for f in sorted(study_dir.rglob("*.dcm")):
        try:
            return dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
    raise FileNotFoundError(f"no readable DICOM instance under {study_dir.name}")


def build_not_analysable_sr(reference: Dataset, reason: str, *, series_number: int = 9901,
                            software_version: str = "0.1.0") -> Dataset:
    """Build a Comprehensive SR saying the study could not be analysed, and why.

    Args:
        reference: Any instance of the study (patient and study modules are copied).
        reason: Human-readable reason, free of patient identifiers.
        series_number: Series Number of the new SR series.
        software_version: Version written to Software Versions.

    Returns:
        The SR dataset (new Series and SOP Instance UIDs).
    """
    title = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
    finding = hd.sr.TextContentItem(
        name=hd.sr.CodedConcept("121071", "DCM", "Finding"),
        value=f"Not analysable: {reason}"[:1024],
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    comment = hd.sr.TextContentItem(
        name=hd.sr.CodedConcept("121106", "DCM", "Comment"),
        value="No prediction was made for this study. Research use only; not for diagnosis.",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    content = hd.sr.ContainerContentItem(name=title, template_id=None,
                                         relationship_type=None)
    content.ContentSequence = [finding, comment]
    with warnings.catch_warnings():
        # highdicom warns about single-component patient names copied from the study.
        warnings.simplefilter("ignore", UserWarning)
        sr = _comprehensive_sr(reference, content, series_number)
    sr.SoftwareVersions = software_version
    return sr


def _comprehensive_sr(reference: Dataset, content: hd.sr.ContainerContentItem,
                      series_number: int) -> Dataset:
    return hd.sr.ComprehensiveSR(
        evidence=[reference], content=content,
        series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="TSC epilepsy outcome project", is_complete=True, is_final=False,
        is_verified=False, series_description="TSC outcome: not analysable",
        institution_name=None)


def write_not_analysable_sr(study_dir: Path, reason: str, out_dir: Path) -> Path:
    """Write the not-analysable SR for the study in ``study_dir`` into ``out_dir``."""
    sr = build_not_analysable_sr(_reference_dataset(study_dir), reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"not_analysable_{sr.SOPInstanceUID}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


__all__ = ["build_not_analysable_sr", "write_not_analysable_sr"]
