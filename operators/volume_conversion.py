"""Turn one DICOM series into a 3D ``SimpleITK.Image`` with exact geometry.

Pure core: :func:`series_to_volume` (and :func:`convert_selected` for a
:class:`~operators.datatypes.SelectedSeries`). Geometry comes from
ImagePositionPatient / ImageOrientationPatient / PixelSpacing of every frame,
never from SliceThickness (except for a single-slice volume, see
:func:`_single_slice_spacing`):

* frames are collected from classic single-frame instances, Enhanced MR
  multi-frame instances (per-frame and shared functional groups) and Siemens
  MOSAIC instances (tiles split using the CSA header);
* frames are split into *stacks* by what distinguishes echoes, time points,
  diffusion weightings, inversion times and image types; a series holding more
  than one stack is an error unless a stack is chosen explicitly
  (:func:`list_stacks` shows them);
* within a stack the matrix, pixel spacing and orientation must agree, positions
  must be distinct, lie on one line along the slice normal, and be evenly
  spaced (a constant gap such as 6 mm for 5 mm slices is fine; a missing slice
  is not);
* slices are ordered by the projection of their position on the normal
  (row cosine x column cosine); the direction matrix columns are the row
  cosine, the column cosine and that normal; the origin is the first slice's
  position; the x spacing is PixelSpacing[1] (between columns) and the y
  spacing PixelSpacing[0] (between rows);
* stored values are decoded by pydicom (all transfer syntaxes its installed
  handlers decode; BitsStored/PixelRepresentation honoured) and the per-frame
  Rescale Slope/Intercept is applied; the image is float32 in LPS.

The thin operator :class:`VolumeConverterOperator` is built on first access.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

from operators.datatypes import Role, SelectedSeries, Volume
from operators.errors import VolumeConversionError
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4  # direction cosine components
SPACING_TOLERANCE_MM = 1e-3  # pixel spacing
DUPLICATE_TOLERANCE_MM = 1e-3  # two frames closer than this along the normal share a position
GAP_TOLERANCE_MM = 0.01  # absolute part of the slice-gap uniformity tolerance
GAP_TOLERANCE_REL = 0.02  # relative part (2 % of the median gap)
SHEAR_TOLERANCE_MM = 0.05  # in-plane drift of slice positions (gantry tilt / sheared stack)


@dataclass
class Frame:
    """One 2D image of a series with its geometry and rescale.

    Attributes:
        dataset_index: Index of the source dataset in the series.
        frame_index: Frame number within a multi-frame instance (0-based), or None.
        mosaic_tile: Tile index within a Siemens MOSAIC instance, or None.
        position: ImagePositionPatient of the first pixel (mm, LPS).
        row_cosine: Direction of increasing column index.
        column_cosine: Direction of increasing row index.
        pixel_spacing: (spacing between rows, spacing between columns) in mm.
        rows: Number of rows of this frame.
        columns: Number of columns of this frame.
        slope: Rescale slope.
        intercept: Rescale intercept.
        stack_key: What distinguishes this frame's stack (echo, time point...).
        source: File name, for messages.
    """

    dataset_index: int
    frame_index: int | None
    mosaic_tile: int | None
    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    stack_key: tuple[tuple[str, Any], ...]
    source: str
    thickness: float | None = None
    spacing_between_slices: float | None = None


@dataclass
class Stack:
    """Frames sharing one stack key (one echo, one time point, ...)."""

    key: tuple[tuple[str, Any], ...]
    frames: list[Frame] = field(default_factory=list)

    def describe(self) -> str:
        """``"echo_time=2.41, temporal_position=1 (96 frames)"`` style text."""
        parts = [f"{k}={_show(v)}" for k, v in self.key if v is not None]
        return (", ".join(parts) or "single stack") + f" ({len(self.frames)} frames)"


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "\\".join(_show(v) for v in value)
    return str(value)


# ---------------------------------------------------------------- frame collection


def _floats(value: Any, n: int, what: str, source: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise VolumeConversionError(f"{source}: invalid {what} {value!r}") from exc
    if arr.shape != (n,):
        raise VolumeConversionError(f"{source}: {what} has {arr.size} values, {n} expected")
    return arr


def _opt_float(value: Any, ndigits: int = 4) -> float | None:
    try:
        if value is None or value == "":
            return None
        return round(float(value), ndigits)
    except (TypeError, ValueError):
        return None


def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """First item of a sequence attribute, or None."""
    if ds is None:
        return None
    seq = ds.get(keyword)
    if seq is None or len(seq) == 0:
        return None
    return seq[0]


def _group_attr(per_frame: Dataset | None, shared: Dataset | None, seq_kw: str, attr_kw: str) -> Any:
    """An attribute of a functional group macro, per-frame first, then shared."""
    for group in (per_frame, shared):
        item = _item(group, seq_kw)
        if item is not None and attr_kw in item:
            return item.get(attr_kw)
    return None


def _image_type_key(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip().upper() for v in value.split("\\"))
    return tuple(str(v).strip().upper() for v in value)


def _classic_stack_key(ds: Dataset) -> tuple[tuple[str, Any], ...]:
    direction = ds.get("DiffusionGradientOrientation")
    return (
        ("image_type", _image_type_key(ds.get("ImageType"))),
        ("echo_number", _opt_float(ds.get("EchoNumbers"), 0)),
        ("echo_time", _opt_float(ds.get("EchoTime"), 3)),
        ("inversion_time", _opt_float(ds.get("InversionTime"), 2)),
        ("temporal_position", _opt_float(ds.get("TemporalPositionIdentifier"), 0)),
        ("b_value", _opt_float(ds.get("DiffusionBValue"), 1)),
        ("gradient", tuple(round(float(v), 4) for v in direction) if direction else None),
    )


def _enhanced_stack_key(ds: Dataset, per_frame: Dataset, shared: Dataset | None) -> tuple[tuple[str, Any], ...]:
    content = _item(per_frame, "FrameContentSequence")
    frame_type = _group_attr(per_frame, shared, "MRImageFrameTypeSequence", "FrameType")
    echo = _group_attr(per_frame, shared, "MREchoSequence", "EffectiveEchoTime")
    bval = _group_attr(per_frame, shared, "MRDiffusionSequence", "DiffusionBValue")
    diff = _item(_item(per_frame, "MRDiffusionSequence") or _item(shared, "MRDiffusionSequence"),
                 "DiffusionGradientDirectionSequence")
    direction = diff.get("DiffusionGradientOrientation") if diff is not None else None
    inversion = _group_attr(per_frame, shared, "MRModifierSequence", "InversionTimes")
    if inversion is not None and not isinstance(inversion, (int, float)):
        inversion = inversion[0] if len(inversion) else None
    return (
        ("image_type", _image_type_key(frame_type)),
        ("echo_time", _opt_float(echo, 3)),
        ("inversion_time", _opt_float(inversion, 2)),
        ("temporal_position", _opt_float(content.get("TemporalPositionIndex") if content else None, 0)),
        ("stack_id", str(content.get("StackID")) if content is not None and "StackID" in content else None),
        ("b_value", _opt_float(bval, 1)),
        ("gradient", tuple(round(float(v), 4) for v in direction) if direction else None),
    )


def _rescale(source: Dataset | None) -> tuple[float | None, float | None]:
    if source is None:
        return None, None
    slope = _opt_float(source.get("RescaleSlope"), 12)
    intercept = _opt_float(source.get("RescaleIntercept"), 12)
    return slope, intercept


def _classic_frames(ds: Dataset, index: int, source: str) -> list[Frame]:
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if kw not in ds or ds.get(kw) in (None, ""):
            raise VolumeConversionError(f"{source}: no {kw}; the slice cannot be placed in space")
    iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", source)
    spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing", source)
    slope, intercept = _rescale(ds)
    common = dict(
        row_cosine=iop[:3], column_cosine=iop[3:], pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
        stack_key=_classic_stack_key(ds), source=source,
        thickness=_opt_float(ds.get("SliceThickness"), 6),
        spacing_between_slices=_opt_float(ds.get("SpacingBetweenSlices"), 6),
    )
    position = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", source)
    if _is_mosaic(ds):
        return _mosaic_frames(ds, index, position, common)
    return [Frame(dataset_index=index, frame_index=None, mosaic_tile=None, position=position,
                  rows=int(ds.Rows), columns=int(ds.Columns), **common)]


def _is_mosaic(ds: Dataset) -> bool:
    image_type = _image_type_key(ds.get("ImageType")) or ()
    return "MOSAIC" in image_type


def _siemens_csa_image_header(ds: Dataset) -> dict[str, Any]:
    """The Siemens CSA image header (0029,xx10), parsed with nibabel's reader; {} if absent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are experimental
            from nibabel.nicom import csareader
    except ImportError:  # pragma: no cover - nibabel comes with nnunetv2/hd-bet
        return {}
    for block in range(0x10, 0x100):
        creator = ds.get((0x0029, block))
        if creator is None or "SIEMENS CSA HEADER" not in str(creator.value).upper():
            continue
        elem = ds.get((0x0029, (block << 8) | 0x10))
        if elem is None or not elem.value:
            continue
        try:
            header = csareader.read(elem.value)
            return {"NumberOfImagesInMosaic": csareader.get_n_mosaic(header),
                    "SliceNormalVector": csareader.get_slice_normal(header)}
        except Exception:  # noqa: BLE001 - a malformed CSA header means "not available"
            return {}
    return {}


def _mosaic_frames(ds: Dataset, index: int, position: np.ndarray, common: dict[str, Any]) -> list[Frame]:
    """Split a Siemens MOSAIC instance into its tiles (one slice each).

    The mosaic's ImagePositionPatient is that of the top-left pixel of the whole
    mosaic seen as one image; the real slices are centred in that field of view.
    Slices are stacked along the CSA SliceNormalVector at SpacingBetweenSlices
    (one instance holds all slices, so there is no second position to measure).
    """
    source = common["source"]
    csa = _siemens_csa_image_header(ds)
    n_tiles = csa.get("NumberOfImagesInMosaic")
    if not n_tiles and (0x0019, 0x100A) in ds:
        n_tiles = ds[(0x0019, 0x100A)].value
    if not n_tiles:
        raise VolumeConversionError(f"{source}: MOSAIC image without NumberOfImagesInMosaic")
    n_tiles = int(n_tiles)
    grid = int(math.ceil(math.sqrt(n_tiles)))
    rows, cols = int(ds.Rows) // grid, int(ds.Columns) // grid
    row_cos, col_cos = common["row_cosine"], common["column_cosine"]
    dr, dc = common["pixel_spacing"]
    normal = np.cross(row_cos, col_cos)
    csa_normal = csa.get("SliceNormalVector")
    if csa_normal is not None and len(csa_normal) == 3:
        normal = np.array([float(v) for v in csa_normal], dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    gap = common["spacing_between_slices"] or common["thickness"]
    if not gap:
        raise VolumeConversionError(f"{source}: MOSAIC image without SpacingBetweenSlices")
    first = (position + row_cos * dc * (int(ds.Columns) - cols) / 2.0
             + col_cos * dr * (int(ds.Rows) - rows) / 2.0)
    frames = []
    for tile in range(n_tiles):
        frames.append(Frame(dataset_index=index, frame_index=None, mosaic_tile=tile,
                            position=first + normal * gap * tile, rows=rows, columns=cols, **common))
    return frames


def _enhanced_frames(ds: Dataset, index: int, source: str) -> list[Frame]:
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frames = ds.get("PerFrameFunctionalGroupsSequence")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if per_frames is None or len(per_frames) != n_frames:
        raise VolumeConversionError(
            f"{source}: multi-frame instance with {n_frames} frames but "
            f"{0 if per_frames is None else len(per_frames)} per-frame functional group items")
    top_slope, top_intercept = _rescale(ds)
    frames = []
    for i, per_frame in enumerate(per_frames):
        pos = _group_attr(per_frame, shared, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group_attr(per_frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _group_attr(per_frame, shared, "PixelMeasuresSequence", "PixelSpacing")
        if pos is None or iop is None or spacing is None:
            raise VolumeConversionError(
                f"{source}: frame {i + 1} lacks plane position, orientation or pixel spacing")
        slope = _opt_float(_group_attr(per_frame, shared, "PixelValueTransformationSequence", "RescaleSlope"), 12)
        intercept = _opt_float(
            _group_attr(per_frame, shared, "PixelValueTransformationSequence", "RescaleIntercept"), 12)
        if slope is None:
            slope = top_slope
        if intercept is None:
            intercept = top_intercept
        iop_arr = _floats(iop, 6, "ImageOrientationPatient", source)
        sp = _floats(spacing, 2, "PixelSpacing", source)
        frames.append(Frame(
            dataset_index=index, frame_index=i, mosaic_tile=None,
            position=_floats(pos, 3, "ImagePositionPatient", source),
            row_cosine=iop_arr[:3], column_cosine=iop_arr[3:], pixel_spacing=(float(sp[0]), float(sp[1])),
            rows=int(ds.Rows), columns=int(ds.Columns),
            slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
            stack_key=_enhanced_stack_key(ds, per_frame, shared), source=source,
            thickness=_opt_float(_group_attr(per_frame, shared, "PixelMeasuresSequence", "SliceThickness"), 6),
            spacing_between_slices=_opt_float(
                _group_attr(per_frame, shared, "PixelMeasuresSequence", "SpacingBetweenSlices"), 6),
        ))
    return frames


def collect_frames(datasets: Sequence[Dataset], files: Sequence[Path] | None = None) -> list[Frame]:
    """All frames of a series, in dataset order then frame order.

    Args:
        datasets: The series' instances.
        files: Their paths (only used to name files in messages).

    Returns:
        One :class:`Frame` per 2D image.

    Raises:
        VolumeConversionError: An instance lacks the attributes that place it in space.
    """
    if not datasets:
        raise VolumeConversionError("empty series: no instance to convert")
    frames: list[Frame] = []
    for i, ds in enumerate(datasets):
        source = _source_name(ds, files[i] if files is not None and i < len(files) else None)
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise VolumeConversionError(f"{source}: colour images ({ds.SamplesPerPixel} samples) not supported")
        if "PerFrameFunctionalGroupsSequence" in ds:
            frames.extend(_enhanced_frames(ds, i, source))
        elif int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise VolumeConversionError(
                f"{source}: multi-frame instance without per-frame functional groups is not supported")
        else:
            frames.extend(_classic_frames(ds, i, source))
    return frames


def _source_name(ds: Dataset, path: Path | None) -> str:
    if path is not None:
        return Path(path).name
    filename = getattr(ds, "filename", None)
    if isinstance(filename, str) and filename:
        return Path(filename).name
    return f"instance {ds.get('SOPInstanceUID', '?')}"


# ---------------------------------------------------------------- stacks


def split_stacks(frames: Sequence[Frame]) -> list[Stack]:
    """Group frames by stack key, in order of first appearance."""
    stacks: dict[tuple[tuple[str, Any], ...], Stack] = {}
    for frame in frames:
        stacks.setdefault(frame.stack_key, Stack(key=frame.stack_key)).frames.append(frame)
    return _drop_constant_keys(list(stacks.values()))


def _drop_constant_keys(stacks: list[Stack]) -> list[Stack]:
    """Keep only the key components that differ between stacks (for readable messages)."""
    if not stacks:
        return stacks
    names = [name for name, _ in stacks[0].key]
    varying = {name for j, name in enumerate(names) if len({s.key[j][1] for s in stacks}) > 1}
    for stack in stacks:
        stack.key = tuple((name, value) for name, value in stack.key if name in varying)
    return stacks


def list_stacks(datasets: Sequence[Dataset], files: Sequence[Path] | None = None) -> list[Stack]:
    """The stacks (echoes, time points, image types...) a series holds, in order."""
    return split_stacks(collect_frames(datasets, files))


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class StackGeometry:
    """Geometry of one validated stack, frames sorted along the normal."""

    frames: tuple[Frame, ...]
    origin: np.ndarray
    spacing: tuple[float, float, float]
    direction: np.ndarray  # 3x3, columns = row cosine, column cosine, normal


def stack_geometry(stack: Stack, series_label: str = "series") -> StackGeometry:
    """Validate one stack and compute its origin, spacing and direction.

    Raises:
        VolumeConversionError: Varying matrix, pixel spacing or orientation; duplicate
            positions; positions off the slice normal; uneven slice spacing.
    """
    frames = stack.frames
    first = frames[0]
    for f in frames[1:]:
        if (f.rows, f.columns) != (first.rows, first.columns):
            raise VolumeConversionError(
                f"{series_label}: varying matrix ({first.rows}x{first.columns} in {first.source}, "
                f"{f.rows}x{f.columns} in {f.source})")
        if (abs(f.pixel_spacing[0] - first.pixel_spacing[0]) > SPACING_TOLERANCE_MM
                or abs(f.pixel_spacing[1] - first.pixel_spacing[1]) > SPACING_TOLERANCE_MM):
            raise VolumeConversionError(
                f"{series_label}: varying pixel spacing ({list(first.pixel_spacing)} in {first.source}, "
                f"{list(f.pixel_spacing)} in {f.source})")
        if (np.abs(f.row_cosine - first.row_cosine).max() > ORIENTATION_TOLERANCE
                or np.abs(f.column_cosine - first.column_cosine).max() > ORIENTATION_TOLERANCE):
            raise VolumeConversionError(
                f"{series_label}: varying orientation ({_fmt(first.row_cosine, first.column_cosine)} in "
                f"{first.source}, {_fmt(f.row_cosine, f.column_cosine)} in {f.source}); "
                "a localizer or a multi-plane series is not one volume")

    row = first.row_cosine / np.linalg.norm(first.row_cosine)
    col = first.column_cosine / np.linalg.norm(first.column_cosine)
    if abs(float(row @ col)) > 1e-3:
        raise VolumeConversionError(f"{series_label}: ImageOrientationPatient is not orthogonal ({first.source})")
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    col = np.cross(normal, row)  # remove round-off non-orthogonality
    direction = np.column_stack([row, col, normal])

    proj = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(proj, kind="stable")
    frames_sorted = tuple(frames[i] for i in order)
    proj = proj[order]
    gaps = np.diff(proj)
    dup = np.nonzero(gaps < DUPLICATE_TOLERANCE_MM)[0]
    if dup.size:
        i = int(dup[0])
        n_same = int(np.sum(np.abs(proj - proj[i]) < DUPLICATE_TOLERANCE_MM))
        raise VolumeConversionError(
            f"{series_label}: {n_same} frames share the slice position {proj[i]:.3f} mm "
            f"({frames_sorted[i].source}, {frames_sorted[i + 1].source}): duplicate instances, or several "
            "echoes/time points that their attributes do not tell apart")

    origin = frames_sorted[0].position
    for f, p in zip(frames_sorted, proj):
        offset = f.position - origin - normal * (p - proj[0])
        if np.linalg.norm(offset) > SHEAR_TOLERANCE_MM:
            raise VolumeConversionError(
                f"{series_label}: slice {f.source} is displaced {np.linalg.norm(offset):.3f} mm off the slice "
                "normal (sheared or tilted stack)")

    if len(frames_sorted) > 1:
        median_gap = float(np.median(gaps))
        tolerance = max(GAP_TOLERANCE_MM, GAP_TOLERANCE_REL * median_gap)
        bad = np.nonzero(np.abs(gaps - median_gap) > tolerance)[0]
        if bad.size:
            i = int(bad[0])
            raise VolumeConversionError(
                f"{series_label}: uneven slice spacing: gap of {gaps[i]:.3f} mm between {frames_sorted[i].source} "
                f"and {frames_sorted[i + 1].source} where {median_gap:.3f} mm is usual (missing slice?)")
        dz = float((proj[-1] - proj[0]) / (len(proj) - 1))
    else:
        dz = _single_slice_spacing(first)
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], dz)
    return StackGeometry(frames=frames_sorted, origin=np.asarray(origin, dtype=np.float64),
                         spacing=spacing, direction=direction)


def _single_slice_spacing(frame: Frame) -> float:
    """Through-plane spacing of a one-slice volume.

    With one slice there is no second position to measure the spacing from, so
    (and only then) SpacingBetweenSlices, else SliceThickness, else 1 mm is used.
    """
    return float(frame.spacing_between_slices or frame.thickness or 1.0)


def _fmt(row: np.ndarray, col: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in (*row, *col)) + "]"


# ---------------------------------------------------------------- pixels


def _stored_pixels(ds: Dataset, source: str) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        raise VolumeConversionError(f"{source}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    return np.asarray(arr)


def _frame_pixels(frame: Frame, stored: np.ndarray, n_frames_in_ds: int) -> np.ndarray:
    if frame.frame_index is not None:
        plane = stored[frame.frame_index] if n_frames_in_ds > 1 else stored
    else:
        plane = stored
    if frame.mosaic_tile is not None:
        grid_cols = plane.shape[1] // frame.columns
        r, c = divmod(frame.mosaic_tile, grid_cols)
        plane = plane[r * frame.rows:(r + 1) * frame.rows, c * frame.columns:(c + 1) * frame.columns]
    if plane.shape != (frame.rows, frame.columns):
        raise VolumeConversionError(
            f"{frame.source}: decoded frame is {plane.shape}, {frame.rows}x{frame.columns} expected")
    return plane


def stack_to_image(datasets: Sequence[Dataset], geometry: StackGeometry) -> sitk.Image:
    """Decode the frames of a validated stack into a float32 ``SimpleITK.Image``."""
    first = geometry.frames[0]
    volume = np.empty((len(geometry.frames), first.rows, first.columns), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    for k, frame in enumerate(geometry.frames):
        ds = datasets[frame.dataset_index]
        if frame.dataset_index not in cache:
            cache[frame.dataset_index] = _stored_pixels(ds, frame.source)
        plane = _frame_pixels(frame, cache[frame.dataset_index], int(ds.get("NumberOfFrames", 1) or 1))
        values = plane.astype(np.float64)
        if frame.slope != 1.0 or frame.intercept != 0.0:
            values = values * frame.slope + frame.intercept
        volume[k] = values
    image = sitk.GetImageFromArray(volume, isVector=False)
    image.SetSpacing(tuple(float(s) for s in geometry.spacing))
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    image.SetDirection(tuple(float(v) for v in geometry.direction.flatten()))
    return image


# ---------------------------------------------------------------- public API


def series_to_volume(
    datasets: Sequence[Dataset],
    files: Sequence[Path] | None = None,
    *,
    series_instance_uid: str | None = None,
    role: Role | None = None,
    stack_index: int | None = None,
) -> Volume:
    """Convert one series into a :class:`~operators.datatypes.Volume`.

    Args:
        datasets: The series' instances (headers; pixel data may be deferred).
        files: Their paths, for messages.
        series_instance_uid: Defaults to the first dataset's.
        role: Role of the series, copied into the Volume.
        stack_index: Which stack to convert when the series holds several
            (see :func:`list_stacks`); None requires exactly one.

    Returns:
        The Volume (float32 image in LPS).

    Raises:
        VolumeConversionError: The series is not one consistent 3D volume.
    """
    if not datasets:
        raise VolumeConversionError("empty series: no instance to convert")
    uid = series_instance_uid or str(datasets[0].get("SeriesInstanceUID", ""))
    label = f"series {datasets[0].get('SeriesNumber', '?')} ({uid})"
    stacks = split_stacks(collect_frames(datasets, files))
    if stack_index is None:
        if len(stacks) > 1:
            listing = "; ".join(s.describe() for s in stacks[:8])
            more = f"; and {len(stacks) - 8} more" if len(stacks) > 8 else ""
            raise VolumeConversionError(
                f"{label} mixes {len(stacks)} stacks that are not one volume: {listing}{more}")
        stack = stacks[0]
    else:
        if not 0 <= stack_index < len(stacks):
            raise VolumeConversionError(f"{label}: stack {stack_index} requested, {len(stacks)} present")
        stack = stacks[stack_index]
    geometry = stack_geometry(stack, label)
    image = stack_to_image(datasets, geometry)
    used = sorted({f.dataset_index for f in geometry.frames})
    volume = Volume(
        image=image,
        series_instance_uid=uid,
        role=role,
        sop_instance_uids=tuple(str(datasets[i].get("SOPInstanceUID", "")) for i in used),
        sop_class_uid=str(datasets[0].get("SOPClassUID", "")),
    )
    logger.info("converted %s: size %s, spacing %s mm", label, image.GetSize(),
                tuple(round(s, 4) for s in image.GetSpacing()))
    return volume


def convert_selected(selected: SelectedSeries) -> Volume:
    """Convert a series chosen by series selection (keeps its role)."""
    return series_to_volume(selected.datasets, selected.files,
                            series_instance_uid=selected.series_instance_uid, role=selected.role)


def _build_operator() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class VolumeConverterOperator(Operator):
        """Converts a selected series into a 3D volume with exact geometry.

        Named input:
            series: :class:`~operators.datatypes.SelectedSeries`.

        Named output:
            volume: :class:`~operators.datatypes.Volume` (float32 ``SimpleITK.Image`` in LPS).
        """

        def __init__(self, fragment: Fragment, *args: Any, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application (a Fragment) the operator belongs to.
            """
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("series")
            spec.output("volume")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            op_output.emit(convert_selected(op_input.receive("series")), "volume")

    return VolumeConverterOperator


__getattr__ = lazy_operator(globals(), "VolumeConverterOperator", _build_operator)
