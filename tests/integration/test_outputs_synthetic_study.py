"""All outputs written for a synthetic study from the project's generator.

Checks what the constructed-input unit tests cannot: real generator headers,
a true rigid T2-to-FLAIR motion (T2 source references follow it), and the
key-slice page on phantom anatomy. dcmtk and dicom3tools' dciodvfy validate
every object written; dcmtk's dsr2html renders the SR as archives do, and the
result page is rendered to PNG.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import numpy as np
import pydicom
import SimpleITK as sitk
import pytest

from operators.datatypes import Role
from operators.errors import SeriesSelectionError
from operators.output_config import OutputConfig
from operators.sr_reader import read_result_sr
from operators.study_outputs import write_not_analysable_outputs, write_study_outputs
from tests.output_fixtures import NON_ASCII_NAME, make_prediction, synthetic_inputs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

synthetic = pytest.importorskip("synthetic", reason="synthetic study generator not available")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    study, selected, preprocessed = synthetic_inputs(root / "studies", seed=11)
    written = write_study_outputs(root / "out", make_prediction(), selected, preprocessed,
                                  config=OutputConfig(flair3_series=True, pdf=True))
    not_analysable = write_not_analysable_outputs(
        root / "na", SeriesSelectionError("No FLAIR series among 1 series"), selected[0].datasets)
    written.not_analysable_sr = not_analysable.not_analysable_sr
    return study, {s.role: s for s in selected}, written


def test_sr_names_the_generated_series_and_instances(outputs):
    study, by_role, written = outputs
    assert written.failures == {}
    reported = read_result_sr(pydicom.dcmread(written.sr))
    assert reported.t2_series_uid == study.t2_series_uid
    assert reported.flair_series_uid == study.flair_series_uid
    assert reported.image_library_sop_uids == [by_role[r].datasets[0].SOPInstanceUID
                                               for r in (Role.T2, Role.FLAIR)]
    sr = pydicom.dcmread(written.sr)
    assert sr.StudyInstanceUID == study.study_instance_uid
    assert str(sr.PatientName) == NON_ASCII_NAME


def test_flair3_series_follows_flair_and_registration(outputs):
    study, by_role, written = outputs
    flair = by_role[Role.FLAIR].datasets
    t2_uids = {d.SOPInstanceUID for d in by_role[Role.T2].datasets}
    instances = sorted((pydicom.dcmread(p) for p in written.flair3_series),
                       key=lambda d: int(d.InstanceNumber))
    mask = sitk.GetArrayFromImage(study.brain_mask) > 0
    with_brain = [k for k in range(mask.shape[0]) if mask[k].any()]
    assert len(instances) == len(with_brain)  # only slices holding brain
    first = instances[0].pixel_array
    assert first.any() and not first[~mask[with_brain[0]]].any()  # brain only, nothing outside it
    assert instances[0].ScanningSequence == "RM" and "InversionTime" not in instances[0]
    t2_referenced = 0
    for ds, source in zip(instances, [flair[k] for k in with_brain]):
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
        tool = ["dsrdump"] if path in (written.sr, written.not_analysable_sr) else ["dcmdump", "+E"]
        result = subprocess.run([*tool, str(path)], capture_output=True, text=True, timeout=120)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if line.startswith(("E:", "W:", "F:")) and "ISO_IR 192" not in line]
        assert result.returncode == 0 and problems == [], path.name


def test_every_object_passes_dciodvfy(outputs):
    _, _, written = outputs
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    kinds = {written.sr: "SR", written.not_analysable_sr: "not-analysable SR",
             written.result_page: "result page", written.pdf: "PDF", written.flair3_series[0]: "FLAIR3"}
    assert None not in kinds
    for path in [*kinds, *written.flair3_series[1:]]:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{kinds.get(path, 'FLAIR3')}: {errors}"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SeriesDate and ds.SeriesTime


def _visible_text(page: str) -> str:
    page = re.sub(r"(?is)<(head|style|script)[^>]*>.*?</\1>", " ", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page))).strip()


def test_rendered_sr_shows_the_labelled_result_on_the_first_screen(outputs, tmp_path):
    _, _, written = outputs
    if shutil.which("dsr2html") is None:
        pytest.skip("dsr2html not installed (Debian package dcmtk)")
    result = subprocess.run(["dsr2html", "+U8", str(written.sr)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = _visible_text(result.stdout)
    fused = round(make_prediction().fused_score, 3)
    label = f"Probability of uncontrolled epilepsy at one year: {fused}"
    assert label in text
    assert text.index(label) < 2000, text[:2500]
    assert "RESEARCH" in text[:300]  # the series description, printed in the header
    assert "Image Position" not in text  # no per-slice geometry footnotes
    assert "Ensemble member used" in text and "Result summary" in text  # labels kept (SEPARATE)


def test_result_page_renders_to_png(outputs, tmp_path):
    _, _, written = outputs
    from PIL import Image

    ds = pydicom.dcmread(written.result_page)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.PhotometricInterpretation == "RGB"
    page = ds.pixel_array
    assert page.shape[2] == 3 and page.shape[0] > page.shape[1] > 800
    png = tmp_path / "result_page.png"
    Image.fromarray(page).save(png)
    assert Image.open(png).size == (page.shape[1], page.shape[0])
    assert (page[30:60, 60:400] == page[40, 50]).mean() < 0.9  # banner text, not a blank band
    if shutil.which("dcmj2pnm"):
        converted = subprocess.run(["dcmj2pnm", "+on", str(written.result_page), str(tmp_path / "dcmtk.png")],
                                   capture_output=True, text=True, timeout=120)
        assert converted.returncode == 0, converted.stderr
