"""Loading a study folder: grouping, ordering, and bad files skipped with a named reason."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from operators.dicom_loading import load_study, scan_folder
from operators.errors import DicomReadError, NoSuitableSeriesError
from operators.series_selection import select_series
from tests.unit.mr_factory import ROOT, flair_spec, t2_spec, write_series, write_study


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    write_study(tmp_path / "study", [t2_spec(), flair_spec()])
    return tmp_path / "study"


def test_groups_series_and_orders_by_instance_number(tmp_path: Path) -> None:
    spec = t2_spec(n_slices=6)
    order = [3, 0, 5, 1, 4, 2]  # instance numbers do not follow file names
    write_series(tmp_path / "s", spec, study_uid=generate_uid(prefix=ROOT), frame_uid=generate_uid(prefix=ROOT),
                 order=order)
    study = load_study(tmp_path)
    (info,) = study.series.values()
    assert info.series_instance_uid == spec.series_uid
    assert [int(ds.InstanceNumber) for ds in info.datasets] == [1, 2, 3, 4, 5, 6]
    assert [Path(info.datasets[i].filename) for i in range(6)] == info.files
    assert info.series_description == "t2_tse_tra" and info.modality == "MR"
    assert info.number_of_frames == 6 and not info.is_incomplete


def test_pixel_data_is_deferred_but_readable(tmp_path: Path) -> None:
    write_study(tmp_path, [t2_spec(rows=160, cols=160, n_slices=2)])  # 50 KB of pixels per file
    study = load_study(tmp_path)
    ds = next(iter(study.series.values())).datasets[0]
    assert ds._dict[pydicom.tag.Tag(0x7FE0, 0x0010)].value is None  # not read during the scan
    assert ds.pixel_array.shape == (int(ds.Rows), int(ds.Columns))


def test_bad_files_are_skipped_with_reasons_and_the_rest_loads(study_dir: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    t2_files = sorted((study_dir / "s002").glob("*.dcm"))
    flair_files = sorted((study_dir / "s003").glob("*.dcm"))
    # truncated FLAIR slice
    data = flair_files[4].read_bytes()
    flair_files[4].write_bytes(data[: len(data) - 100])
    # a text file, an empty file
    (study_dir / "notes.txt").write_text("not dicom\n")
    (study_dir / "empty.dcm").write_bytes(b"")
    # an image without pixel data
    ds = pydicom.dcmread(t2_files[0])
    del ds.PixelData
    nopix = study_dir / "nopixels.dcm"
    ds.SOPInstanceUID = generate_uid(prefix=ROOT)
    ds.save_as(nopix)
    # an unknown (private) SOP class
    ds = pydicom.dcmread(t2_files[1])
    ds.SOPClassUID = "1.3.12.2.1107.5.9.1"
    ds.file_meta.MediaStorageSOPClassUID = "1.3.12.2.1107.5.9.1"
    ds.SeriesInstanceUID = generate_uid(prefix=ROOT)
    unknown = study_dir / "private.dcm"
    ds.save_as(unknown)

    with caplog.at_level(logging.WARNING, logger="operators.dicom_loading"):
        study = load_study(study_dir)

    reasons = {s.path.name: s.reason for s in study.skipped}
    assert "truncated" in reasons[flair_files[4].name]
    assert "not a DICOM file" in reasons["notes.txt"]
    assert "empty.dcm" in reasons
    assert "no pixel data" in reasons["nopixels.dcm"]
    assert "unknown SOP class" in reasons["private.dcm"]
    for name in reasons:
        assert name in caplog.text  # every skipped file is named in a warning
    # patient identifiers never reach the log
    assert "Test^Ingestion" not in caplog.text and "ING-0001" not in caplog.text

    t2 = study.series[next(u for u, s in study.series.items() if s.series_number == 2)]
    flair = study.series[next(u for u, s in study.series.items() if s.series_number == 3)]
    assert t2.number_of_instances == 12  # the rest of the study is there
    assert flair.number_of_instances == 11 and flair.is_incomplete
    assert flair.skipped[0].path == flair_files[4]
    assert "1 file(s) unreadable" in flair.summary()

    # the series that became unusable is reported as such by selection
    with pytest.raises(NoSuitableSeriesError, match="unreadable"):
        select_series(study)


def test_gzip_files_and_non_image_instances(tmp_path: Path) -> None:
    paths = write_study(tmp_path / "raw", [t2_spec(n_slices=4)])
    out = tmp_path / "study"
    out.mkdir()
    for p in next(iter(paths.values())):
        with open(p, "rb") as fin, gzip.open(out / (p.name + ".gz"), "wb") as fout:
            shutil.copyfileobj(fin, fout)
    sr = pydicom.dcmread(next(iter(paths.values()))[0])
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.SOPInstanceUID = generate_uid(prefix=ROOT)
    sr.SeriesInstanceUID = generate_uid(prefix=ROOT)
    del sr.PixelData
    sr.save_as(out / "report.dcm")
    study = load_study(out)
    (info,) = study.series.values()
    assert info.number_of_instances == 4
    assert info.datasets[0].pixel_array.shape == (12, 10)
    assert [s.path.name for s in study.non_image] == ["report.dcm"] and not study.skipped


def test_several_studies_need_a_uid(tmp_path: Path) -> None:
    write_study(tmp_path / "a", [t2_spec(n_slices=2)])
    write_study(tmp_path / "b", [t2_spec(n_slices=2)])
    folder = scan_folder(tmp_path)
    assert len(folder.studies) == 2
    with pytest.raises(DicomReadError, match="2 studies"):
        load_study(tmp_path)
    uid = next(iter(folder.studies))
    assert load_study(tmp_path, uid).study_instance_uid == uid
    with pytest.raises(DicomReadError, match="not found"):
        load_study(tmp_path, "1.2.3")


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 300)
    with pytest.raises(DicomReadError, match="no readable DICOM image"):
        load_study(tmp_path)
    with pytest.raises(DicomReadError, match="does not exist"):
        load_study(tmp_path / "absent")


def test_bare_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    """Old exports write the dataset alone (no preamble, no 'DICM', no file meta)."""
    paths = write_study(tmp_path / "raw", [t2_spec(n_slices=3)])
    out = tmp_path / "study"
    out.mkdir()
    for p in next(iter(paths.values())):
        ds = pydicom.dcmread(p)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(out / p.name, implicit_vr=True, little_endian=True, enforce_file_format=False)
        assert (out / p.name).read_bytes()[128:132] != b"DICM"
    study = load_study(out)
    (info,) = study.series.values()
    assert info.number_of_instances == 3 and not study.skipped
    original = pydicom.dcmread(next(iter(paths.values()))[0]).pixel_array
    assert (info.datasets[0].pixel_array == original).all()


def test_truncated_compressed_file_is_skipped(tmp_path: Path) -> None:
    paths = next(iter(write_study(tmp_path / "study", [t2_spec(n_slices=3)]).values()))
    ds = pydicom.dcmread(paths[1])
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(paths[1])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 40])  # cut inside the encapsulated pixel data
    study = load_study(tmp_path / "study")
    assert [(s.path.name, "truncated" in s.reason) for s in study.skipped] == [(paths[1].name, True)]
    assert next(iter(study.series.values())).number_of_instances == 2


def test_warnings_name_files_below_the_scanned_folder_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "Mueller_Juergen_1980"  # folders above the study may carry patient names
    write_study(root / "study", [t2_spec(n_slices=2)])
    (root / "study" / "sub").mkdir()
    (root / "study" / "sub" / "broken.dcm").write_bytes(b"DICM" * 10)
    with caplog.at_level(logging.INFO, logger="operators.dicom_loading"):
        study = load_study(root / "study")
    assert study.skipped[0].path.name == "broken.dcm"
    assert "sub/broken.dcm" in caplog.text
    assert "Mueller" not in caplog.text and "Mueller" not in study.skipped[0].reason
