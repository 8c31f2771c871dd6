"""tsc-synth --study-description / --procedure-code: a test study a site's routing rule can match."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydicom import dcmread

from synthetic.cli import main

ORTHANC_JSON = Path(__file__).resolve().parents[2] / "app" / "node" / "orthanc" / "orthanc.json"
SMALL = ["--t2-matrix", "48", "--flair-matrix", "48", "--slices", "4", "--decoys", "none"]


def _routing() -> dict:
    text = re.sub(r"^\s*//.*$", "", ORTHANC_JSON.read_text(), flags=re.M)  # Orthanc allows // comments
    return json.loads(text)["TscRouting"]


def test_description_and_procedure_code_are_written_to_every_instance(tmp_path: Path) -> None:
    assert main(["generate", "-o", str(tmp_path), *SMALL, "--study-description", "MR BRAIN TSC PROTOCOL",
                 "--procedure-code", "TSC-MR-BRAIN"]) == 0
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 8
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        assert ds.StudyDescription == "MR BRAIN TSC PROTOCOL"
        code = ds.ProcedureCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "TSC-MR-BRAIN", "99LOCAL", "MR BRAIN TSC PROTOCOL")
    # what the guide sends is what the shipped rule routes (pattern and code listed there)
    rule = _routing()
    assert any(p.upper() in "MR BRAIN TSC PROTOCOL" for p in rule["DescriptionPatterns"])
    assert "TSC-MR-BRAIN" in rule["ProcedureCodes"]


def test_defaults_are_unchanged_and_bad_values_are_refused(tmp_path: Path) -> None:
    assert main(["generate", "-o", str(tmp_path / "d"), *SMALL, "--no-flair"]) == 0
    ds = dcmread(next((tmp_path / "d").rglob("*.dcm")), stop_before_pixels=True)
    assert ds.StudyDescription == "MRI BRAIN WITHOUT CONTRAST" and "ProcedureCodeSequence" not in ds
    assert not any(p.upper() in ds.StudyDescription for p in _routing()["DescriptionPatterns"])
    with pytest.raises(SystemExit, match="VALUE"):
        main(["generate", "-o", str(tmp_path / "e"), *SMALL, "--procedure-code", "A^^"])
    with pytest.raises(ValueError, match="1-64 characters"):
        main(["generate", "-o", str(tmp_path / "f"), *SMALL, "--study-description", "x" * 65])
