"""Synthetic studies checked by independent DICOM tools: dcm2niix geometry, PixelMed IOD validation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from synthetic import StudyOptions, generate_study

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
SMALL = dict(t2_matrix=(128, 128), t2_pixel_mm=1.8, flair_matrix=(112, 112), flair_pixel_mm=2.0, slices=12)


@pytest.mark.parametrize("encoding", ["classic", "enhanced"])
def test_dcm2niix_reads_the_geometry_the_truth_states(tmp_path: Path, encoding: str) -> None:
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not installed (Debian package dcm2niix)")
    study = generate_study(tmp_path / "s", 21, StudyOptions(**SMALL, encoding=encoding, decoys=False))
    for uid, truth in ((study.t2_series_uid, study.t2_image), (study.flair_series_uid, study.flair_image)):
        out = tmp_path / f"nii-{uid[-6:]}"
        out.mkdir()
        proc = subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "vol", "-o", str(out),
                               str(study.files[uid][0].parent)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        nii = sitk.ReadImage(str(out / "vol.nii"), sitk.sitkFloat32)
        assert nii.GetSize() == truth.GetSize()
        np.testing.assert_allclose(nii.GetSpacing(), truth.GetSpacing(), atol=1e-3)
        # dcm2niix may flip axes: compare in physical space by resampling onto the truth grid.
        on_truth = sitk.Resample(nii, truth, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
        assert np.array_equal(sitk.GetArrayViewFromImage(on_truth), sitk.GetArrayViewFromImage(truth))


# PixelMed's own main() validates one file per JVM and compiles its IOD templates each time;
# this single-file Java program validates many files in one JVM.
_VALIDATE_MANY = """
import com.pixelmed.dicom.AttributeList;
import com.pixelmed.validate.DicomInstanceValidator;

public class ValidateInstances {
    public static void main(String[] args) throws Exception {
        DicomInstanceValidator validator = new DicomInstanceValidator();
        for (String file : args) {
            AttributeList list = new AttributeList();
            list.read(file);
            System.out.println("=== BEGIN " + file);
            System.out.print(validator.validate(list));
            System.out.println("=== END " + file);
        }
    }
}
"""


def test_enhanced_files_pass_pixelmed_iod_validation(tmp_path: Path) -> None:
    if shutil.which("java") is None or not PIXELMED_JAR.is_file():
        pytest.skip("java and PixelMed (Debian libpixelmed-java) are needed")
    study = generate_study(tmp_path / "study", 22, StudyOptions(**SMALL, encoding="enhanced", t1_variant="3d"))
    source = tmp_path / "ValidateInstances.java"
    source.write_text(_VALIDATE_MANY, encoding="utf-8")
    files = {str(paths[0]): study.series_kinds[uid] for uid, paths in study.files.items()}
    # PixelMed's compiled IOD rules exceed the JDK's default XPath limits.
    limits = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0"]
    proc = subprocess.run(["java", *limits, "-cp", str(PIXELMED_JAR), str(source), *files],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    reports = proc.stdout.split("=== BEGIN ")[1:]
    assert len(reports) == len(files) == 6
    for report in reports:
        name, _, text = report.partition("\n")
        assert "Found EnhancedMRImage IOD" in text, text[:2000]
        problems = [line for line in text.splitlines() if line.startswith(("Error", "Warning"))]
        assert not problems, f"{files[name]}: {problems[:10]}"
