"""All outputs written for a synthetic study from the project's generator.

Checks what the constructed-input unit tests cannot: real generator headers,
a true rigid T2-to-FLAIR motion (T2 source references follow it), and the
key-slice page on phantom anatomy. dcmtk validates every object written.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from operators.datatypes import Role
from operators.output_config import OutputConfig
from operators.sr_reader import read_result_sr
from operators.study_outputs import write_study_outputs
from tests.output_fixtures import NON_ASCII_NAME, make_prediction, synthetic_inputs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

synthetic = pytest.importorskip("synthetic", reason="synthetic study generator not available")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    study, selected, preprocessed = synthetic_inputs(root / "studies", seed=11)
    written = write_study_outputs(root / "out", make_prediction(), selected, preprocessed,
                                  config=OutputConfig(flair3_series=True, pdf=True))
    return study, {s.role: s for s in selected}, written


def test_sr_names_the_generated_series_and_instances(outputs):
    study, by_role, written = outputs
    assert written.failures == {}
    reported = read_result_sr(pydicom.dcmread(written.sr))
    assert reported.t2_series_uid == study.t2_series_uid
    assert reported.flair_series_uid == study.flair_series_uid
    assert set(reported.image_library_sop_uids) == {
        d.SOPInstanceUID for s in by_role.values() for d in s.datasets}
    sr = pydicom.dcmread(written.sr)
    assert sr.StudyInstanceUID == study.study_instance_uid
    assert str(sr.PatientName) == NON_ASCII_NAME


def test_flair3_series_follows_flair_and_registration(outputs):
    _, by_role, written = outputs
    flair = by_role[Role.FLAIR].datasets
    t2_uids = {d.SOPInstanceUID for d in by_role[Role.T2].datasets}
    instances = sorted((pydicom.dcmread(p) for p in written.flair3_series),
                       key=lambda d: int(d.InstanceNumber))
    assert len(instances) == len(flair)
    t2_referenced = 0
    for ds, source in zip(instances, flair):
        assert np.allclose(ds.ImagePositionPatient, source.ImagePositionPatient, atol=1e-3)
        refs = [r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence]
        assert refs[0] == source.SOPInstanceUID
        assert set(refs[1:]) <= t2_uids
        t2_referenced += len(refs) > 1
    assert t2_referenced >= len(instances) - 2  # all but possibly the outermost slices
    assert 0 < instances[0].WindowWidth < 1000


def test_every_object_passes_dcmtk(outputs):
    _, _, written = outputs
    for tool in ("dcmdump", "dsrdump"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package dcmtk)")
    for path in written.paths():
        tool = ["dsrdump"] if path == written.sr else ["dcmdump", "+E"]
        result = subprocess.run([*tool, str(path)], capture_output=True, text=True, timeout=120)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if line.startswith(("E:", "W:", "F:")) and "ISO_IR 192" not in line]
        assert result.returncode == 0 and problems == [], path.name
