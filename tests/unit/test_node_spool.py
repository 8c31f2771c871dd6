"""Spool: UID sanitising, header inspection without decoding, atomic idempotent writes."""

import os
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from app.node.spool import (DEFLATED_LE, EXPLICIT_BE, IMPLICIT_LE, HeaderInfo, InvalidInstanceError, Spool,
                            inspect_dataset, uid_key)
from tests.node_helpers import make_instance

SHARED = Path(os.environ.get("TSC_SHARED_DIR", Path(__file__).resolve().parents[2] / ".." / "shared"))
VARIETY = SHARED / "data" / "dicom-variety"


def _encode(ds, implicit: bool = False, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize("uid", ["../../etc/passwd", "/abs/path", "1.2/../../3", "1.2.3\x00", "..",
                                 ".", "", "1." * 40, "１.２", "1..2", "C:\\x", "1.2.3 "])
def test_crafted_uids_become_single_safe_components(tmp_path: Path, uid: str) -> None:
    key = uid_key(uid)
    assert "/" not in key and "\\" not in key and key not in (".", "..", "")
    assert key.startswith("x") and len(key) == 41
    assert (tmp_path / key).resolve().parent == tmp_path.resolve()


def test_well_formed_uid_is_its_own_key() -> None:
    uid = generate_uid()
    assert uid_key(uid) == uid


@pytest.mark.parametrize("ts, implicit, little", [
    ("1.2.840.10008.1.2.1", False, True), (IMPLICIT_LE, True, True), (EXPLICIT_BE, False, False)])
def test_inspect_finds_uids_without_decoding(ts: str, implicit: bool, little: bool) -> None:
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=2048)
    info = inspect_dataset(_encode(ds, implicit, little), ts)
    assert info == HeaderInfo(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def test_inspect_deflated() -> None:
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=2048)
    co = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = co.compress(_encode(ds)) + co.flush()
    assert inspect_dataset(stream, DEFLATED_LE).study_uid == ds.StudyInstanceUID


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b[:len(b) // 2], "truncated|parseable"),
    (lambda b: b + b"\x01\x02\x03", "truncated|garbage|parseable"),
    (lambda b: os.urandom(3000), "parseable|truncated|order|UID"),
    (lambda b: b"%PDF-1.4 not dicom at all" * 20, "parseable|truncated|order|UID"),
])
def test_inspect_rejects_truncated_and_garbage(mutate, match: str) -> None:
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=8192)
    with pytest.raises(InvalidInstanceError, match=match):
        inspect_dataset(mutate(_encode(ds)), "1.2.840.10008.1.2.1")


def test_inspect_requires_study_and_series_uid() -> None:
    ds = make_instance(generate_uid(), generate_uid(), payload_bytes=512)
    del ds.StudyInstanceUID
    with pytest.raises(InvalidInstanceError, match="Study or Series"):
        inspect_dataset(_encode(ds), "1.2.840.10008.1.2.1")


@pytest.mark.skipif(not VARIETY.is_dir(), reason="shared dicom-variety data not present")
def test_inspect_accepts_real_scanner_files_in_every_transfer_syntax() -> None:
    files = sorted((VARIETY / "dcm_qa_ts").rglob("*.dcm")) + sorted((VARIETY / "dcm_qa_enh").rglob("*.dcm"))
    assert files
    syntaxes = set()
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        raw = f.read_bytes()
        # preamble + "DICM" + (0002,0000) element (12 bytes) + the rest of the meta group
        offset = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
        ts = str(ds.file_meta.TransferSyntaxUID)
        syntaxes.add(ts)
        info = inspect_dataset(raw[offset:], ts)
        assert info.study_uid == ds.StudyInstanceUID and info.series_uid == ds.SeriesInstanceUID
    assert len(syntaxes) >= 6


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_store_is_atomic_idempotent_and_inside_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    ds = make_instance("../../evil", "1.2.3/../..", payload_bytes=512)
    stream = _encode(ds)
    info = inspect_dataset(stream, "1.2.840.10008.1.2.1")
    p1 = spool.store(stream, b"META", info, ds.SOPInstanceUID)
    p2 = spool.store(stream, b"META", info, ds.SOPInstanceUID)
    assert p1 == p2
    assert p1.resolve().is_relative_to((tmp_path / "spool" / "incoming").resolve())
    assert p1.read_bytes() == b"META" + stream
    assert len(list((tmp_path / "spool").rglob("*.dcm"))) == 1
    assert not list((tmp_path / "spool" / "tmp").iterdir())
    assert uid_key("../../evil") in spool.last_activity


def test_free_space_threshold(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    assert spool.has_room_for(1024)
    spool.min_free_bytes = spool.free_bytes() + 1
    assert not spool.has_room_for(0)


def test_clean_tmp_drops_partial_writes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    (spool.path("tmp") / "123.part").write_bytes(b"partial")
    assert spool.clean_tmp() == 1
    assert not list(spool.path("tmp").iterdir())
