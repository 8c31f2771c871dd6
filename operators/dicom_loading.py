"""Scan a folder of DICOM files and group the usable instances by study and series.

Pure core: :func:`scan_folder` and :func:`load_study` read headers only (pixel data
is deferred: pydicom reads it from the file on first access) and never raise on a
bad file. A truncated file, a non-DICOM file, an image without pixel data or an
instance of an unknown SOP class is skipped with a warning naming the file, and
recorded in :attr:`LoadedStudy.skipped`; the rest of the study is still loaded.

Gzip-compressed files (``*.dcm.gz``, as some archives export) are read in memory.

The thin MONAI Deploy operator :class:`DicomStudyLoaderOperator` (built on first
access, so that importing this module does not import Holoscan) wraps
:func:`load_study`.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from operators.errors import DicomReadError
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)

# Values above this size stay in the file until accessed (pixel data, large private blobs).
DEFER_SIZE = "32 KB"
PIXEL_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))
UNDEFINED_LENGTH = 0xFFFFFFFF
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
IGNORED_NAMES = {"DICOMDIR", "LICENSE", "README", "README.md", "clinical.json"}


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not loaded, and why.

    Attributes:
        path: The file.
        reason: One-line reason (safe for logs and reports: no patient data).
        series_instance_uid: The series the file belongs to, when its header was readable.
    """

    path: Path
    reason: str
    series_instance_uid: str | None = None


@dataclass
class SeriesInfo:
    """The readable instances of one series (headers; pixel data read on access).

    Attributes:
        series_instance_uid: Series Instance UID.
        study_instance_uid: Study Instance UID.
        modality: Modality (e.g. ``"MR"``).
        series_number: Series Number, if present.
        series_description: Series Description ("" if absent).
        protocol_name: Protocol Name ("" if absent).
        sop_class_uids: SOP Class UIDs of the instances.
        datasets: The instances, sorted by Instance Number then file name.
        files: Paths the datasets were read from, same order as ``datasets``.
        skipped: Files of this series that could not be used.
    """

    series_instance_uid: str
    study_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    protocol_name: str = ""
    sop_class_uids: set[str] = field(default_factory=set)
    datasets: list[Dataset] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def number_of_instances(self) -> int:
        """How many instances (files) were loaded."""
        return len(self.datasets)

    @property
    def number_of_frames(self) -> int:
        """Total frames over all instances (1 per classic single-frame instance)."""
        return sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in self.datasets)

    @property
    def is_incomplete(self) -> bool:
        """True when some files of this series could not be read."""
        return bool(self.skipped)

    def summary(self) -> str:
        """A one-line description without patient data, for logs and errors."""
        sop = ", ".join(sorted(UID(u).name for u in self.sop_class_uids))
        text = (f"series {self.series_number} '{self.series_description}' "
                f"({self.number_of_instances} instances, {self.number_of_frames} frames, {sop}; "
                f"uid {self.series_instance_uid})")
        if self.skipped:
            text += f" [{len(self.skipped)} file(s) unreadable]"
        return text


@dataclass
class LoadedStudy:
    """One study's readable series plus what was skipped.

    Attributes:
        study_instance_uid: Study Instance UID.
        series: Series by Series Instance UID.
        skipped: Files not loaded (any study), with reasons.
        non_image: Readable instances of known non-image SOP classes (SR, KO, PR...), ignored.
        root: The folder that was scanned.
    """

    study_instance_uid: str
    series: dict[str, SeriesInfo] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    non_image: list[SkippedFile] = field(default_factory=list)
    root: Path | None = None

    def first_dataset(self) -> Dataset | None:
        """Any instance of the study (for study-level attributes), or None if empty."""
        for info in self.series.values():
            if info.datasets:
                return info.datasets[0]
        return None


@dataclass
class LoadedFolder:
    """Everything found in a folder: studies by Study Instance UID and the skipped files."""

    studies: dict[str, LoadedStudy] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    root: Path | None = None


def read_dicom(path: Path, *, defer_pixels: bool = True) -> Dataset:
    """Read one DICOM file (plain or gzip-compressed).

    Args:
        path: File to read.
        defer_pixels: Leave large values (pixel data) in the file until accessed.
            Ignored for gzip files, which are read whole into memory.

    Returns:
        The dataset.

    Raises:
        DicomReadError: The file is not DICOM, is truncated, or cannot be parsed.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.filename = str(path)
            file_size = None
        else:
            file_size = os.path.getsize(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    ds = pydicom.dcmread(path, defer_size=DEFER_SIZE if defer_pixels else None)
                except InvalidDicomError:
                    ds = _read_without_preamble(path, defer_pixels)
            for warning in caught:
                if "End of file reached" in str(warning.message):
                    raise DicomReadError(f"{path.name}: truncated file ({warning.message})".replace(
                        f" in file {path}", ""))
            if _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:
                # values of a deflated dataset have no offset in the file: read it whole
                ds = pydicom.dcmread(path)
                file_size = None
    except InvalidDicomError as exc:
        raise DicomReadError(f"{path.name}: not a DICOM file ({exc})") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            NotImplementedError, OverflowError) as exc:
        # the exception text is left out: it may quote element values (patient data)
        raise DicomReadError(f"{path.name}: unreadable DICOM ({type(exc).__name__})") from exc
    if len(ds) == 0:
        raise DicomReadError(f"{path.name}: no data elements (empty or truncated file)")
    _check_not_truncated(ds, path, file_size)
    return ds


def _read_without_preamble(path: Path, defer_pixels: bool) -> Dataset:
    """Read a bare dataset (no preamble/'DICM', no file meta), as some old exports write.

    Accepted only when it parses into an instance with SOP Class and SOP Instance UIDs;
    the transfer syntax (necessarily uncompressed) is recorded from how it was parsed.
    """
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=DEFER_SIZE if defer_pixels else None)
        usable = bool(ds.get("SOPClassUID")) and bool(ds.get("SOPInstanceUID"))
    except Exception as exc:  # noqa: BLE001 - anything here means "not DICOM"
        raise InvalidDicomError(f"no DICOM preamble and not a bare dataset ({type(exc).__name__})") from exc
    if not usable:
        raise InvalidDicomError("no DICOM preamble, 'DICM' prefix or SOP Class UID")
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.file_meta = meta
    return ds


def _check_not_truncated(ds: Dataset, path: Path, file_size: int | None) -> None:
    """Raise if the pixel data element ends beyond the end of the file."""
    for tag in PIXEL_TAGS:
        if tag not in ds._dict:
            continue
        raw = ds._dict[tag]
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if getattr(raw, "value", None) is None and tell is not None and length not in (None, UNDEFINED_LENGTH):
            if file_size is not None and tell + length > file_size:
                raise DicomReadError(
                    f"{path.name}: truncated file (pixel data needs {length} bytes from offset {tell}, "
                    f"file has {file_size})")
            return
        value = ds[tag].value
        expected = _expected_native_pixel_bytes(ds)
        if expected is not None and value is not None and len(value) < expected:
            raise DicomReadError(
                f"{path.name}: truncated file (pixel data has {len(value)} bytes, {expected} expected)")
        return


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    return UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")


def _expected_native_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes of native (uncompressed) pixel data implied by the image pixel module."""
    ts = _transfer_syntax(ds)
    if not ts or ts.is_compressed:
        return None
    try:
        bits = int(ds.BitsAllocated)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        n *= int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (n * bits + 7) // 8


def _has_pixel_data(ds: Dataset) -> bool:
    return any(tag in ds._dict for tag in PIXEL_TAGS)


def _is_image_sop_class(sop: UID) -> bool:
    return "Image Storage" in sop.name or "Volume Storage" in sop.name


def iter_candidate_files(root: Path) -> Iterable[Path]:
    """Files under ``root`` (recursively, sorted), without hidden files and known non-DICOM names."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name in IGNORED_NAMES:
                continue
            yield Path(dirpath) / name


def scan_folder(root: Path) -> LoadedFolder:
    """Read the headers of every file under ``root`` and group instances by study and series.

    Args:
        root: Folder (searched recursively) or a single file.

    Returns:
        A :class:`LoadedFolder`; bad files are in ``skipped``, never raised.

    Raises:
        DicomReadError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise DicomReadError(f"input folder '{root.name}' does not exist")
    files = [root] if root.is_file() else list(iter_candidate_files(root))
    folder = LoadedFolder(root=root)
    for path in files:
        _add_file(folder, path)
    for study in folder.studies.values():
        for info in study.series.values():
            _sort_series(info)
    for study in folder.studies.values():
        logger.info("study %s: %d series loaded, %d file(s) skipped", study.study_instance_uid,
                    len(study.series), len(study.skipped))
    return folder


def _skip(folder: LoadedFolder, path: Path, reason: str, series_uid: str | None = None,
          study_uid: str | None = None) -> None:
    skipped = SkippedFile(path=path, reason=reason, series_instance_uid=series_uid)
    logger.warning("skipping %s: %s", _relative(path, folder.root), reason)
    folder.skipped.append(skipped)
    if study_uid and study_uid in folder.studies:
        study = folder.studies[study_uid]
        study.skipped.append(skipped)
        if series_uid and series_uid in study.series:
            study.series[series_uid].skipped.append(skipped)


def _relative(path: Path, root: Path | None) -> str:
    """The path below the scanned folder (folder names above it may name the patient)."""
    try:
        return str(path.relative_to(root)) if root is not None and root != path else path.name
    except ValueError:
        return path.name


def _add_file(folder: LoadedFolder, path: Path) -> None:
    try:
        ds = read_dicom(path)
    except DicomReadError as exc:
        header = _try_header(path)
        series_uid = str(header.get("SeriesInstanceUID", "") or "") if header is not None else ""
        study_uid = str(header.get("StudyInstanceUID", "") or "") if header is not None else ""
        _skip(folder, path, exc.reason, series_uid or None, study_uid or None)
        return

    sop = UID(str(ds.get("SOPClassUID", "") or ""))
    study_uid = str(ds.get("StudyInstanceUID", "") or "")
    series_uid = str(ds.get("SeriesInstanceUID", "") or "")
    if sop == MEDIA_STORAGE_DIRECTORY:
        logger.info("ignoring DICOMDIR %s", _relative(path, folder.root))
        return
    if not sop:
        _skip(folder, path, "no SOP Class UID", series_uid or None, study_uid or None)
        return
    if not study_uid or not series_uid:
        _skip(folder, path, "missing Study or Series Instance UID")
        return
    if sop.name == sop:  # pydicom knows no name for it: private or unknown SOP class
        _skip(folder, path, f"unknown SOP class {sop}", series_uid, study_uid)
        return

    study = folder.studies.setdefault(study_uid, LoadedStudy(study_instance_uid=study_uid, root=folder.root))
    if not _is_image_sop_class(sop):
        entry = SkippedFile(path=path, reason=f"not an image ({sop.name})", series_instance_uid=series_uid)
        logger.info("ignoring %s: %s", _relative(path, folder.root), entry.reason)
        study.non_image.append(entry)
        return
    if not _has_pixel_data(ds):
        _skip(folder, path, f"no pixel data ({sop.name})", series_uid, study_uid)
        return

    info = study.series.get(series_uid)
    if info is None:
        info = SeriesInfo(
            series_instance_uid=series_uid,
            study_instance_uid=study_uid,
            modality=str(ds.get("Modality", "") or ""),
            series_number=_int_or_none(ds.get("SeriesNumber")),
            series_description=str(ds.get("SeriesDescription", "") or ""),
            protocol_name=str(ds.get("ProtocolName", "") or ""),
        )
        study.series[series_uid] = info
        # files of this series skipped before its first good file was seen
        for skipped in folder.skipped:
            if skipped.series_instance_uid == series_uid and skipped not in info.skipped:
                info.skipped.append(skipped)
                if skipped not in study.skipped:
                    study.skipped.append(skipped)
    info.sop_class_uids.add(str(sop))
    info.datasets.append(ds)
    info.files.append(path)


def _try_header(path: Path) -> Dataset | None:
    """Best-effort header of a file that failed to load (to attribute it to its series)."""
    try:
        if path.suffix.lower() == ".gz":
            return None
        return pydicom.dcmread(path, stop_before_pixels=True, force=False)
    except Exception:  # noqa: BLE001 - any failure just means "unknown series"
        return None


def _sort_series(info: SeriesInfo) -> None:
    order = sorted(range(len(info.datasets)),
                   key=lambda i: (_int_or_none(info.datasets[i].get("InstanceNumber")) or 0, str(info.files[i])))
    info.datasets = [info.datasets[i] for i in order]
    info.files = [info.files[i] for i in order]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def load_study(root: Path, study_instance_uid: str | None = None) -> LoadedStudy:
    """Load the one study in ``root`` (or the one with the given UID).

    Args:
        root: Folder to scan recursively.
        study_instance_uid: Which study to return when the folder holds several.

    Returns:
        The :class:`LoadedStudy`; files skipped anywhere in the folder are in its ``skipped``.

    Raises:
        DicomReadError: No usable DICOM image in the folder, the requested study is absent,
            or several studies are present and none was named.
    """
    return study_from_folder(scan_folder(root), study_instance_uid)


def study_from_folder(folder: LoadedFolder, study_instance_uid: str | None = None) -> LoadedStudy:
    """The one study of an already scanned folder (or the one with the given UID).

    Args:
        folder: What :func:`scan_folder` found.
        study_instance_uid: Which study to return when the folder holds several.

    Returns:
        The :class:`LoadedStudy`; files skipped anywhere in the folder are in its ``skipped``.

    Raises:
        DicomReadError: As :func:`load_study`.
    """
    name = folder.root.name if folder.root is not None else "the input"
    if not folder.studies:
        detail = f"; {len(folder.skipped)} file(s) skipped" if folder.skipped else ""
        raise DicomReadError(f"no readable DICOM image in {name}{detail}")
    if study_instance_uid is None:
        if len(folder.studies) > 1:
            series = sum(len(s.series) for s in folder.studies.values())
            raise DicomReadError(f"input holds {len(folder.studies)} studies ({series} image series); "
                                 "this app analyses one study per run")
        study = next(iter(folder.studies.values()))
    else:
        if study_instance_uid not in folder.studies:
            raise DicomReadError(f"study {study_instance_uid} not found in {name}")
        study = folder.studies[study_instance_uid]
    for skipped in folder.skipped:
        if skipped not in study.skipped:
            study.skipped.append(skipped)
    return study


def _build_operator() -> type:
    from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec

    class DicomStudyLoaderOperator(Operator):
        """Loads one DICOM study from a folder, skipping bad files with a warning.

        As the SDK's own loader, it has no required input, so the application must
        give it a condition that stops it, e.g. ``CountCondition(app, 1)``.

        Named input:
            input_folder: Optional ``Path`` of the study folder; when not connected, the
                ``input_folder`` given at construction is used.

        Named output:
            study: :class:`LoadedStudy` (headers, pixel data deferred, skipped files listed).
        """

        def __init__(self, fragment: Fragment, *args: Any, input_folder: Path | str = "input",
                     study_instance_uid: str | None = None,
                     on_scanned: Callable[[LoadedFolder], None] | None = None, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application (a Fragment) the operator belongs to.
                input_folder: Default study folder.
                study_instance_uid: Study to load when the folder holds several.
                on_scanned: Called with everything found in the folder, before the study is
                    taken from it (so that a failure report need not read the folder again).
            """
            self.input_folder = Path(input_folder)
            self.study_instance_uid = study_instance_uid
            self.on_scanned = on_scanned
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("input_folder").condition(ConditionType.NONE)
            spec.output("study")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            folder = None
            try:
                folder = op_input.receive("input_folder")
            except Exception:  # noqa: BLE001 - the port is optional
                folder = None
            scanned = scan_folder(Path(folder) if folder else self.input_folder)
            if self.on_scanned is not None:
                self.on_scanned(scanned)
            op_output.emit(study_from_folder(scanned, self.study_instance_uid), "study")

    return DicomStudyLoaderOperator


__getattr__ = lazy_operator(globals(), "DicomStudyLoaderOperator", _build_operator)
