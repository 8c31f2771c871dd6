"""Test doubles of the pipeline for the DICOM node tests (not product code).

``ResultWriter`` stands in for ``app.pipeline`` in node-mechanics tests: it reads
the received study and writes a genuine DICOM result, a Comprehensive SR in the
same study that references the received instances, and optionally a derived MR
series (a FLAIR3 stand-in) copied from the received MR images with new UIDs.
Its behaviour can be steered per study through the Study Description
(``RAISE``, ``CRASH``, ``HANG``) to exercise the node's failure handling.
Each call appends the study UID to ``options["ledger"]`` so tests can count runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import highdicom as hd
from pydicom import dcmread
from pydicom.uid import generate_uid

from app.node.worker import ProcessOutcome


class ResultWriter:
    """A processor writing one SR (and optionally a derived series) per study."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.ledger = options.get("ledger")
        self.sleep_s = float(options.get("sleep_s", 0))
        self.derived_series = bool(options.get("derived_series", False))
        self.started = time.time()  # models "loaded" once per worker process
        self.pid = os.getpid()

    def process(self, study_dir: Path, output_dir: Path) -> ProcessOutcome:
        files = sorted(study_dir.rglob("*.dcm"))
        headers = [dcmread(f, stop_before_pixels=True) for f in files]
        study_uid = str(headers[0].StudyInstanceUID)
        if self.ledger:
            with open(self.ledger, "a") as f:
                f.write(f"{study_uid} {self.pid}\n")
        description = str(headers[0].get("StudyDescription", ""))
        if "RAISE" in description:
            raise ValueError("test double asked to raise")
        if "CRASH" in description:
            os._exit(3)
        if "HANG" in description:
            time.sleep(3600)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        results: list[Path] = []
        if self.derived_series:
            results += self._derived(files, output_dir)
        sr = hd.sr.ComprehensiveSR(
            evidence=headers,
            content=_report_content(f"test double result for {len(files)} instances"),
            series_instance_uid=generate_uid(), series_number=9900,
            sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="node test double", series_description="TSC outcome (test double)")
        out = output_dir / "sr.dcm"
        sr.save_as(out, enforce_file_format=True)
        results.append(out)
        return ProcessOutcome(True, None, results)

    def _derived(self, files: list[Path], output_dir: Path) -> list[Path]:
        """Copy the original FLAIR-like images (long inversion time) as a derived series."""
        series_uid = generate_uid()
        out = []
        for i, f in enumerate(files):
            ds = dcmread(f)
            if ds.get("Modality") != "MR" or "PixelData" not in ds:
                continue
            if float(ds.get("InversionTime", 0) or 0) < 1500 or "DERIVED" in list(ds.get("ImageType", [])):
                continue
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesDescription = "FLAIR3 (test double)"
            ds.SeriesNumber = 9901
            ds.ImageType = ["DERIVED", "SECONDARY"]
            p = output_dir / f"derived_{i:04d}.dcm"
            ds.save_as(p, enforce_file_format=True)
            out.append(p)
        return out


def _report_content(text: str) -> hd.sr.ContainerContentItem:
    item = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report"), template_id=None)
    item.ContentSequence = [hd.sr.TextContentItem(
        name=hd.sr.CodedConcept("121071", "DCM", "Finding"), value=text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)]
    return item


def make_result_writer(options: dict[str, Any]) -> ResultWriter:
    return ResultWriter(options)
