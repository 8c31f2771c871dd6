"""Durable, crash-safe spool of received DICOM instances.

Layout under the spool folder (one filesystem, so renames are atomic)::

    tmp/                                   partial writes (emptied at start-up)
    incoming/<study>/<series>/<sop>.dcm    instances of studies still being received
    jobs/<job>/input/...                   stable studies queued or being processed
    done/<job>/job.json                    processed studies (record only, by default)
    quarantine/<job>/                      studies that failed, with reason.json
    studies/<study>/<series>/<sop>.dcm     everything received for a study (re-analysed when it re-opens)
    invalid/<sop>.dcm                      instances with malformed UIDs (never processed)
    outbox/<job>/, sent/<job>/             results to deliver / delivered
    undeliverable/<job>/                   results not acknowledged within the retry horizon
    state/                                 per-study record of instances already processed

Every instance is written to ``tmp/``, fsynced, renamed into place and its folder
fsynced before the C-STORE is acknowledged, so an acknowledged instance survives
a crash or power loss. Names come from :func:`uid_key`, which only lets through
well-formed UIDs (digits and dots), so a crafted UID can never name a path
outside the spool. A second copy of the same SOP Instance UID replaces the first
(idempotent).

The dataset is not decoded on receipt: :func:`inspect_dataset` walks the element
headers of the encoded stream (values of large elements are skipped) to find the
Study and Series Instance UIDs and to prove the stream is complete.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from pydicom.filereader import data_element_generator
from pydicom.tag import Tag

logger = logging.getLogger(__name__)

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_STUDY_UID = Tag(0x0020, 0x000D)
_SERIES_UID = Tag(0x0020, 0x000E)
_SOP_UID = Tag(0x0008, 0x0018)

# DICOM status codes answered by the C-STORE handler.
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0x0110

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"


class InvalidInstanceError(ValueError):
    """The received bytes are not a complete, placeable DICOM dataset."""


def uid_key(uid: str) -> str:
    """Return a file-name-safe key for a UID.

    A well-formed UID (digits and dots, at most 64 characters) is its own key; any
    other value becomes ``x`` + the first 40 hex digits of its SHA-256, so no input
    can produce ``..``, a separator or an absolute path.
    """
    if len(uid) <= 64 and _UID_RE.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True)
class HeaderInfo:
    """What the spool needs from an encoded dataset."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str


def _text(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", "replace").strip("\x00 ")
    return str(value or "").strip("\x00 ")


def is_valid_uid(uid: str) -> bool:
    """True for a well-formed UID: digits and dots, no empty component, at most 64 characters."""
    return 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


def _walk(fp: BinaryIO, length: int, transfer_syntax: str) -> HeaderInfo:
    implicit = transfer_syntax == IMPLICIT_LE
    little = transfer_syntax != EXPLICIT_BE
    start = fp.tell()
    found: dict[int, str] = {}
    end = start
    last_tag = -1
    try:
        for elem in data_element_generator(fp, implicit, little, defer_size=512):
            if int(elem.tag) <= last_tag:
                raise InvalidInstanceError(f"element {elem.tag} out of order")
            last_tag = int(elem.tag)
            if elem.tag in (_STUDY_UID, _SERIES_UID, _SOP_UID):
                found[int(elem.tag)] = _text(elem.value)
            end = fp.tell()
    except InvalidInstanceError:
        raise
    except Exception as exc:  # pydicom raises a variety of errors on garbage
        raise InvalidInstanceError(f"not a parseable dataset ({type(exc).__name__})") from None
    if end - start != length:
        raise InvalidInstanceError(
            f"dataset truncated or followed by garbage (parsed {end - start} of {length} bytes)")
    study, series = found.get(int(_STUDY_UID), ""), found.get(int(_SERIES_UID), "")
    if not study or not series:
        raise InvalidInstanceError("dataset has no Study or Series Instance UID")
    return HeaderInfo(study, series, found.get(int(_SOP_UID), ""))


def inspect_dataset(stream: bytes, transfer_syntax: str, *, max_inflated_bytes: int = 1 << 30) -> HeaderInfo:
    """Walk the element headers of an encoded dataset without decoding values.

    Args:
        stream: The dataset as received (no preamble or file meta).
        transfer_syntax: UID of the transfer syntax it is encoded in.
        max_inflated_bytes: A deflated dataset larger than this once inflated is refused.

    Returns:
        The study, series and SOP instance UIDs found in the dataset.

    Raises:
        InvalidInstanceError: The stream is not parseable to its last byte
            (non-DICOM bytes, truncation, a deflate bomb) or lacks a Study/Series Instance UID.
    """
    data = stream
    if transfer_syntax == DEFLATED_LE:
        data = _inflate_bytes(stream, max_inflated_bytes)
    return _walk(io.BytesIO(data), len(data), transfer_syntax)


def _inflate_bytes(stream: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(stream, limit + 1)
    except zlib.error as exc:
        raise InvalidInstanceError(f"deflated dataset does not inflate: {exc}") from None
    if len(data) > limit:
        raise InvalidInstanceError(f"deflated dataset inflates beyond the limit of {limit} bytes")
    return data


def dataset_offset(path: Path) -> int:
    """Offset of the dataset in a Part 10 file (after preamble, ``DICM`` and file meta group)."""
    with open(path, "rb") as f:
        head = f.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise InvalidInstanceError("received file has no file meta group")
    (group_length,) = struct.unpack_from("<L", head, 140)
    return 144 + group_length


def inspect_instance_file(path: Path, transfer_syntax: str, *, max_inflated_bytes: int,
                          tmp_dir: Path) -> HeaderInfo:
    """:func:`inspect_dataset` for a received Part 10 file, reading it from disk.

    A deflated dataset is inflated in chunks into a temporary file in ``tmp_dir``
    and refused as soon as it exceeds ``max_inflated_bytes``: memory use stays a
    few MiB whatever the compression ratio.
    """
    offset = dataset_offset(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(offset)
        if transfer_syntax != DEFLATED_LE:
            return _walk(f, size - offset, transfer_syntax)
        with tempfile.TemporaryFile(dir=tmp_dir) as out:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            try:
                while True:
                    chunk = f.read(1 << 16)
                    pending = inflater.decompress(chunk, 1 << 20) if chunk else inflater.flush()
                    while True:
                        total += len(pending)
                        if total > max_inflated_bytes:
                            raise InvalidInstanceError(
                                f"deflated dataset inflates beyond the limit of {max_inflated_bytes} bytes")
                        out.write(pending)
                        if not inflater.unconsumed_tail:
                            break
                        pending = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
                    if not chunk:
                        break
            except zlib.error as exc:
                raise InvalidInstanceError(f"deflated dataset does not inflate: {exc}") from None
            out.seek(0)
            return _walk(out, total, transfer_syntax)


def fsync_dir(path: Path) -> None:
    """fsync a folder so that a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: list[bytes] | bytes, tmp_dir: Path, *, fsync: bool = True) -> None:
    """Write ``chunks`` to ``path`` via a temp file in ``tmp_dir``, fsync, rename, fsync folder."""
    if isinstance(chunks, (bytes, bytearray)):
        chunks = [chunks]
    fd, tmp = _mkstemp(tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


_tmp_counter = iter(range(1 << 62))
_tmp_lock = threading.Lock()


def _mkstemp(tmp_dir: Path) -> tuple[int, str]:
    with _tmp_lock:
        n = next(_tmp_counter)
    name = os.path.join(tmp_dir, f"{os.getpid()}-{threading.get_ident()}-{n}.part")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name


class Spool:
    """The spool folder: receiving, per-study locks and activity times.

    Args:
        root: Spool folder (created if missing).
        min_free_bytes: Refuse instances when free space would fall below this.
        fsync: fsync files and folders (disable only for throw-away tests).
    """

    SUBDIRS = ("tmp", "incoming", "jobs", "done", "quarantine", "outbox", "sent", "undeliverable",
               "state", "invalid", "studies")

    def __init__(self, root: Path, *, min_free_bytes: int = 1 << 30, fsync: bool = True) -> None:
        self.root = Path(root)
        self.min_free_bytes = int(min_free_bytes)
        self.fsync = fsync
        for sub in self.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.last_activity: dict[str, float] = {}
        # study key -> monotonic time before which the study must not be considered complete
        self.hold_until: dict[str, float] = {}

    def hold(self, study_keys: "set[str] | list[str]", seconds: float) -> None:
        """Keep studies whose receipt was interrupted open for a retry by the sender."""
        until = time.monotonic() + seconds
        for key in study_keys:
            with self.study_lock(key):
                self.hold_until[key] = max(self.hold_until.get(key, 0.0), until)

    def path(self, sub: str) -> Path:
        return self.root / sub

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    def clean_tmp(self) -> int:
        """Remove partial writes left by a crash; return how many."""
        n = 0
        for p in self.path("tmp").iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        return n

    @contextmanager
    def study_lock(self, key: str) -> Iterator[None]:
        """Serialise writes into, and moves of, one study's incoming folder."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def has_room_for(self, nbytes: int) -> bool:
        return self.free_bytes() - nbytes >= self.min_free_bytes

    def store(self, dataset: bytes, file_meta: bytes, header: HeaderInfo, sop_instance_uid: str) -> Path:
        """Write one instance durably into its study's incoming folder.

        Args:
            dataset: Encoded dataset as received.
            file_meta: Preamble, ``DICM`` prefix and encoded file meta group.
            header: UIDs from :func:`inspect_dataset`.
            sop_instance_uid: Affected SOP Instance UID of the C-STORE request.

        Returns:
            The final path of the instance file.
        """
        study_key = uid_key(header.study_uid)
        series_key = uid_key(header.series_uid)
        sop_key = uid_key(sop_instance_uid)
        with self.study_lock(study_key):
            folder = self._series_folder(study_key, series_key)
            final = folder / f"{sop_key}.dcm"
            atomic_write(final, [file_meta, dataset], self.path("tmp"), fsync=self.fsync)
            self.last_activity[study_key] = time.monotonic()
        return final

    def _series_folder(self, study_key: str, series_key: str) -> Path:
        """The incoming folder of one series, made durably (call under the study lock)."""
        folder = self.incoming / study_key / series_key
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                fsync_dir(folder.parent)
                fsync_dir(folder.parent.parent)
        return folder

    def store_file(self, received: Path, header: HeaderInfo, sop_instance_uid: str) -> Path:
        """Move a received Part 10 file (in ``tmp/``) durably into its study's incoming folder.

        Args:
            received: The file as pynetdicom wrote it (preamble, file meta, dataset as received).
            header: UIDs from :func:`inspect_instance_file`.
            sop_instance_uid: Affected SOP Instance UID of the C-STORE request.

        Returns:
            The final path of the instance file.
        """
        study_key = uid_key(header.study_uid)
        series_key = uid_key(header.series_uid)
        sop_key = uid_key(sop_instance_uid)
        if self.fsync:
            fd = os.open(received, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with self.study_lock(study_key):
            folder = self._series_folder(study_key, series_key)
            final = folder / f"{sop_key}.dcm"
            try:
                os.replace(received, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                with open(received, "rb") as f:  # another filesystem: copy through tmp/
                    atomic_write(final, [f.read()], self.path("tmp"), fsync=self.fsync)
            if self.fsync:
                fsync_dir(folder)
            self.last_activity[study_key] = time.monotonic()
        return final

    def quarantine_instance(self, received: Path, sop_instance_uid: str) -> Path | None:
        """Keep an instance that must not be processed (malformed UIDs) for inspection."""
        target = self.path("invalid") / f"{uid_key(sop_instance_uid)}.dcm"
        try:
            os.replace(received, target)
        except OSError:
            return None
        return target

    def incoming_studies(self) -> list[str]:
        """Keys of studies with an incoming folder on disk."""
        return sorted(p.name for p in self.incoming.iterdir() if p.is_dir())
