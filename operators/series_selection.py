"""Choose one T2 and one FLAIR series from a study: acquisition physics first, names second.

Pure core: :func:`select_series` on a :class:`~operators.dicom_loading.LoadedStudy`.
For every series :func:`series_features` reads the acquisition attributes (classic
MR attributes, or the shared/per-frame functional groups of Enhanced MR):
ScanningSequence, SequenceVariant, ScanOptions, RepetitionTime, EchoTime,
InversionTime, MRAcquisitionType, ImageType, AcquisitionContrast, contrast agent,
diffusion b-values, number of slice positions and orientation.

Each series is then scored for each role by :func:`score_candidate`:

1. *Exclusions* (the series is ineligible for both roles): not MR, DERIVED or
   SECONDARY image type, localizer (ImageType LOCALIZER, several orientations
   or too few slices), diffusion, post-contrast (by default), unreadable files.
2. *Physics* per role (a failed check makes the series ineligible for that role;
   an absent attribute is noted and scores nothing):
   FLAIR = inversion recovery with TI in the FLAIR range, long TR, long TE;
   T2 = no FLAIR-like inversion, long TR, long TE.
3. *Preferences* add points: axial, more slices, spin echo, AcquisitionContrast,
   and SeriesDescription/ProtocolName patterns (role name +, other role's name -,
   decoy names such as ROI, copy, MPR, T1 -, even beside a role name). Names can
   reorder eligible series but never make an ineligible one eligible.
4. *Provenance* takes points from signs of a workstation copy (the scanner's
   ImageType is often kept): a workstation or PACS viewer in Manufacturer /
   ManufacturerModelName / SoftwareVersions (OsiriX, Horos, syngo.via...), a UID
   root unlike the study's, a series number far above the study's, and pixel data
   identical to another candidate's (a hash of the middle instance, computed only
   for eligible candidates of equal size).

The best eligible series wins. When two are still equal, the original acquisition
is taken by the tie rule (earliest SeriesDate/SeriesTime, else AcquisitionDate/
AcquisitionTime, then lowest SeriesNumber), the reason says so and a quality note
goes into the report; only when the tie rule cannot tell them apart either is
:class:`~operators.errors.AmbiguousSeriesError` raised, naming both. No eligible
series raises :class:`~operators.errors.NoSuitableSeriesError` listing what was found.
Defaults need no configuration; a site YAML file (format in
``docs/series-selection.md``) can change thresholds, weights and name patterns,
and force a series by description. Every decision is logged and returned as a
:class:`~operators.datatypes.SelectionExplanation`.

The thin operator :class:`SeriesSelectorOperator` is built on first access.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from pydicom import Dataset

from operators.datatypes import CandidateScore, QualityFlag, Role, SelectedSeries, SelectionExplanation
from operators.dicom_loading import LoadedStudy, SeriesInfo
from operators.errors import AmbiguousSeriesError, NoSuitableSeriesError, SeriesRulesError, SeriesSelectionError
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)

TIE_EPSILON = 1e-6

# Name patterns are Python regular expressions matched case-insensitively against
# "SeriesDescription | ProtocolName | SequenceName". FLAIR names are tested before
# T2 names, since most FLAIR names contain "T2" too; decoy names count on their own
# (a "FLAIR_ROI" is a FLAIR name and a decoy name).
DEFAULT_RULES: dict[str, Any] = {
    "version": 1,
    "thresholds": {
        "flair": {"ti_min_ms": 1400.0, "ti_max_ms": 3200.0, "tr_min_ms": 4000.0, "te_min_ms": 70.0},
        "t2": {"tr_min_ms": 2000.0, "te_min_ms": 70.0, "te_max_ms": 600.0, "flair_like_ti_min_ms": 1400.0},
        "min_slices": 8,
        "max_oblique_deg": 45.0,
        "large_series_number": 1000,
        "large_series_number_ratio": 5.0,
    },
    "exclude": {"derived": True, "localizer": True, "diffusion": True, "contrast": True, "incomplete": True},
    "weights": {
        "physics_check": 10.0,
        "inversion_in_range": 20.0,
        "acquisition_contrast": 20.0,
        "spin_echo": 5.0,
        "axial": 20.0,
        "per_slice": 0.25,
        "max_slices_counted": 60,
        "name_role": 15.0,
        "name_other_role": -15.0,
        "name_decoy": -20.0,
        "contrast_penalty": -40.0,
        "workstation": -30.0,
        "foreign_uid_root": -15.0,
        "large_series_number": -5.0,
        "duplicate_pixels": -30.0,
    },
    "names": {
        "flair": [
            r"flair", r"dark[\s_-]*fluid", r"tirm", r"(?<![a-z0-9])t2[\s_-]*fl", r"fluid[\s_-]*att",
            r"(?<![a-z0-9])da[\s_-]?fl", r"wasser[\s_-]*unterdr", r"水抑制", r"液体衰减", r"黑水",
            r"supresi[oó]n de (agua|l[ií]quido)",
        ],
        "t2": [
            r"(?<![a-z0-9])t2(?![\s_-]*\*)(?![0-9])", r"(?<![a-z0-9])[tf]se(?![a-z0-9])", r"turbo[\s_-]*spin",
            r"t2[\s_-]*gewichtet", r"potenciad[oa] en t2", r"ponderad[oa] en t2", r"t2加权", r"t2wi",
        ],
        "decoy": [
            r"(?<![a-z0-9])dwi(?![a-z0-9])", r"diff", r"(?<![a-z0-9])adc(?![a-z0-9])", r"trace",
            r"(?<![a-z0-9])b[\s_-]?1000(?![0-9])", r"ep2d", r"弥散",
            r"(?<![a-z0-9])loc(alizer)?(?![a-z0-9])", r"scout", r"survey", r"3[\s_-]*pl", r"übersicht", r"定位",
            r"(?<![a-z0-9])t1(?![0-9])", r"mprage", r"(?<![a-z0-9])tfl(?![a-z0-9])", r"spgr", r"bravo",
            r"(?<![a-z0-9])post(?![a-z0-9])", r"\+\s*c(?![a-z0-9])", r"(?<![a-z0-9])gad",
            r"(?<![a-z0-9])km(?![a-z0-9])",
            r"contrast", r"kontrast", r"增强",
            r"(?<![a-z0-9])roi(?![a-z0-9])", r"derived", r"export", r"(?<![a-z0-9])mpr(?![a-z0-9])", r"reformat",
            r"(?<![a-z0-9])mip(?![a-z0-9])", r"(?<![a-z0-9])sub(?![a-z0-9])",
            r"(?<![a-z0-9])swi(?![a-z0-9])", r"t2[\s_-]*\*", r"t2star", r"(?<![a-z0-9])hemo", r"(?<![a-z0-9])perf",
            r"(?<![a-z0-9])asl(?![a-z0-9])", r"(?<![a-z0-9])bold(?![a-z0-9])",
            r"(?<![a-z0-9])cop(y|ie)", r"(?<![a-z0-9])kopie", r"key[\s_-]*im", r"screen[\s_-]*(save|shot|capture)",
            r"snap[\s_-]*shot", r"secondary[\s_-]*capture", r"subtract", r"annotat",
        ],
        # matched against "Manufacturer | ManufacturerModelName | SoftwareVersions": a workstation
        # or PACS viewer wrote the series (a copy, ROI or screen save of an acquisition)
        "workstation": [
            r"osirix", r"horos", r"syngo[\s._-]*via", r"intelli[\s_-]*space", r"vitrea",
            r"advantage[\s_-]*(workstation|windows)", r"(?<![a-z0-9])aw[\s_-]*server", r"carestream",
            r"vue[\s_-]*pacs", r"visage", r"synapse", r"centricity", r"impax", r"enterprise[\s_-]*imaging",
            r"(?<![a-z0-9])slicer", r"radiant", r"weasis", r"mimics",
            r"olea[\s_-]*sphere", r"ziostation", r"terarecon", r"aquarius", r"clearcanvas", r"mint[\s_-]*lesion",
            r"(?<![a-z0-9])pacs(?![a-z0-9])",
        ],
    },
    "force": {"t2": None, "flair": None},
}


@dataclass(frozen=True)
class SeriesRules:
    """Validated selection rules (defaults merged with a site file)."""

    raw: dict[str, Any]
    name_patterns: dict[str, tuple[re.Pattern[str], ...]]
    force: dict[str, re.Pattern[str] | None]

    @property
    def thresholds(self) -> dict[str, Any]:
        return self.raw["thresholds"]

    @property
    def weights(self) -> dict[str, Any]:
        return self.raw["weights"]

    @property
    def exclude(self) -> dict[str, bool]:
        return self.raw["exclude"]


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base and where not in ("names.replace_defaults",):
            raise SeriesRulesError(f"unknown key '{where}' in series rules")
        if isinstance(base.get(key), dict) and not isinstance(value, Mapping):
            raise SeriesRulesError(f"'{where}' must be a mapping")
        if isinstance(base.get(key), dict):
            if key == "names":
                out[key] = _merge_names(base[key], value)
            else:
                out[key] = _merge(base[key], value, f"{where}.")
        else:
            out[key] = value
    return out


def _merge_names(base: dict[str, list[str]], override: Mapping[str, Any]) -> dict[str, list[str]]:
    replace = bool(override.get("replace_defaults", False))
    out = {k: ([] if replace else list(v)) for k, v in base.items()}
    for key, patterns in override.items():
        if key == "replace_defaults":
            continue
        if key not in base:
            raise SeriesRulesError(f"unknown name list 'names.{key}' (use flair, t2, decoy or workstation)")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise SeriesRulesError(f"'names.{key}' must be a list of regular expressions")
        out[key].extend(patterns)
    return out


def load_rules(path: Path | str | None = None, overrides: Mapping[str, Any] | None = None) -> SeriesRules:
    """Build the selection rules: defaults, then a site YAML file, then in-code overrides.

    Args:
        path: Optional YAML file (see ``docs/series-selection.md``).
        overrides: Optional mapping with the same structure, applied last.

    Returns:
        The validated :class:`SeriesRules`.

    Raises:
        SeriesRulesError: Unreadable file, unknown key, wrong type or invalid regular expression.
    """
    raw = copy.deepcopy(DEFAULT_RULES)
    if path is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SeriesRulesError(f"cannot read series rules {Path(path).name}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise SeriesRulesError(f"series rules {Path(path).name} must be a mapping")
        raw = _merge(raw, data)
    if overrides:
        raw = _merge(raw, overrides)
    if int(raw.get("version", 1)) != 1:
        raise SeriesRulesError(f"unsupported series rules version {raw.get('version')}")
    for section in ("thresholds", "weights"):
        _check_numbers(raw[section], section)
    patterns: dict[str, tuple[re.Pattern[str], ...]] = {}
    for key, values in raw["names"].items():
        patterns[key] = tuple(_compile(p, f"names.{key}") for p in values)
    force = {role: (_compile(raw["force"][role], f"force.{role}") if raw["force"].get(role) else None)
             for role in ("t2", "flair")}
    return SeriesRules(raw=raw, name_patterns=patterns, force=force)


def _check_numbers(section: Mapping[str, Any], where: str) -> None:
    for key, value in section.items():
        if isinstance(value, Mapping):
            _check_numbers(value, f"{where}.{key}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SeriesRulesError(f"'{where}.{key}' must be a number, got {value!r}")


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise SeriesRulesError(f"invalid regular expression in {where}: {pattern!r} ({exc})") from exc


# ---------------------------------------------------------------- features


@dataclass(frozen=True)
class SeriesFeatures:
    """Acquisition attributes of one series that selection looks at (no patient data)."""

    series_instance_uid: str
    series_number: int | None
    description: str
    protocol_name: str
    sequence_name: str
    modality: str
    enhanced: bool
    scanning_sequence: frozenset[str]
    sequence_variant: frozenset[str]
    scan_options: frozenset[str]
    repetition_time: float | None
    echo_time: float | None
    echo_times: tuple[float, ...]
    inversion_time: float | None
    inversion_recovery: bool | None
    acquisition_type: str
    image_type: tuple[str, ...]
    acquisition_contrast: str
    contrast_agent: str
    diffusion: bool
    n_slices: int
    n_instances: int
    orientation: str
    obliquity_deg: float
    n_orientations: int
    unreadable_files: int
    equipment: str = ""
    uid_roots: frozenset[str] = frozenset()
    acquired_at: datetime | None = None
    rows_columns_frames: tuple[int, int, int] = (0, 0, 0)

    def names_text(self) -> str:
        return " | ".join(t for t in (self.description, self.protocol_name, self.sequence_name) if t)

    def summary(self) -> dict[str, Any]:
        """Key attributes for logs, errors and the report."""
        return {
            "SeriesNumber": self.series_number,
            "SeriesDescription": self.description,
            "ScanningSequence": "\\".join(sorted(self.scanning_sequence)),
            "RepetitionTime": self.repetition_time,
            "EchoTime": self.echo_time,
            "InversionTime": self.inversion_time,
            "MRAcquisitionType": self.acquisition_type,
            "ImageType": "\\".join(self.image_type),
            "slices": self.n_slices,
            "orientation": self.orientation,
        }

    def short(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:g}"
        return (f"#{self.series_number} '{self.description}' {self.modality} {self.acquisition_type or '?'} "
                f"{'/'.join(sorted(self.scanning_sequence)) or '?'} TR {ms(self.repetition_time)} "
                f"TE {ms(self.echo_time)} TI {ms(self.inversion_time)} {self.n_slices} sl {self.orientation} "
                f"{'/'.join(self.image_type[:2]) or '?'}")


def _tokens(value: Any) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    if isinstance(value, str):
        parts = re.split(r"[\\/ ,]+", value)
    else:
        parts = [str(v) for v in value]
    return frozenset(p.strip().upper() for p in parts if p and p.strip())


def _float(value: Any) -> float | None:
    try:
        if value is None or value == "":
            return None
        if not isinstance(value, (int, float, str)) and hasattr(value, "__len__"):
            value = value[0] if len(value) else None
            if value is None:
                return None
        return float(value)
    except (TypeError, ValueError):
        return None


def _fg(ds: Dataset, seq_kw: str, attr_kw: str) -> Any:
    """An attribute from the shared, else the first per-frame, functional group macro."""
    for groups_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(groups_kw)
        if not groups:
            continue
        macro = groups[0].get(seq_kw)
        if macro and attr_kw in macro[0]:
            return macro[0].get(attr_kw)
    return None


def _orientation_of(iop: Iterable[Any]) -> tuple[str, float, tuple[float, ...]]:
    v = np.array([float(x) for x in iop], dtype=np.float64)
    normal = np.cross(v[:3], v[3:])
    norm = np.linalg.norm(normal)
    if norm == 0:
        return "unknown", 0.0, ()
    normal /= norm
    axis = int(np.argmax(np.abs(normal)))
    angle = float(np.degrees(np.arccos(min(1.0, abs(normal[axis])))))
    return ("sagittal", "coronal", "axial")[axis], angle, tuple(np.round(v, 3))


def _frame_geometry(ds: Dataset) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(rounded IOP, rounded IPP) of every frame of an instance."""
    out = []
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.get("SharedFunctionalGroupsSequence")
        shared0 = shared[0] if shared else None
        for frame in ds.PerFrameFunctionalGroupsSequence:
            iop = pos = None
            for group in (frame, shared0):
                if group is None:
                    continue
                if iop is None and group.get("PlaneOrientationSequence"):
                    iop = group.PlaneOrientationSequence[0].get("ImageOrientationPatient")
                if pos is None and group.get("PlanePositionSequence"):
                    pos = group.PlanePositionSequence[0].get("ImagePositionPatient")
            if iop is not None and pos is not None:
                out.append((tuple(round(float(x), 3) for x in iop), tuple(round(float(x), 2) for x in pos)))
    elif ds.get("ImageOrientationPatient") and ds.get("ImagePositionPatient"):
        out.append((tuple(round(float(x), 3) for x in ds.ImageOrientationPatient),
                    tuple(round(float(x), 2) for x in ds.ImagePositionPatient)))
    return out


def series_features(info: SeriesInfo) -> SeriesFeatures:
    """Read the selection-relevant attributes of a series (first instance, plus geometry of all)."""
    ds = info.datasets[0]
    enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds

    tr = _float(ds.get("RepetitionTime"))
    te = _float(ds.get("EchoTime"))
    echo_times = tuple(sorted({t for t in (_float(d.get("EchoTime")) for d in info.datasets) if t is not None}))
    ti = _float(ds.get("InversionTime"))
    ir_flag: bool | None = None
    scanning = _tokens(ds.get("ScanningSequence"))
    if enhanced:
        tr = tr if tr is not None else _float(_fg(ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime"))
        te = te if te is not None else _float(_fg(ds, "MREchoSequence", "EffectiveEchoTime"))
        ir = _fg(ds, "MRModifierSequence", "InversionRecovery")
        if ir is not None:
            ir_flag = str(ir).upper() == "YES"
        if ti is None:
            ti = _float(_fg(ds, "MRModifierSequence", "InversionTimes"))
        pulse = str(ds.get("EchoPulseSequence", "") or "").upper()
        if not scanning:
            scanning = frozenset({"SPIN": {"SE"}, "GRADIENT": {"GR"}, "BOTH": {"SE", "GR"}}.get(pulse, set()))
            if ir_flag:
                scanning = scanning | {"IR"}
    scan_options = _tokens(ds.get("ScanOptions"))
    if ir_flag is None and ("IR" in scanning or "IR" in scan_options):
        ir_flag = True
    elif ir_flag is None and ti is None and (scanning or scan_options):
        ir_flag = False

    contrast = str(ds.get("AcquisitionContrast", "") or "").upper()
    if not contrast and enhanced:
        contrast = str(_fg(ds, "MRImageFrameTypeSequence", "AcquisitionContrast") or "").upper()
    image_type = tuple(_ordered_tokens(ds.get("ImageType")))

    agent = str(ds.get("ContrastBolusAgent", "") or "").strip()
    if not agent and ds.get("ContrastBolusAgentSequence"):
        agent = "contrast agent sequence present"
    usage = ds.get("ContrastBolusUsageSequence")
    if not agent and usage and any(str(u.get("ContrastBolusAgentAdministered", "")).upper() == "YES" for u in usage):
        agent = "ContrastBolusAgentAdministered YES"

    bvalues = {_float(d.get("DiffusionBValue")) for d in info.datasets}
    bval_fg = _max_frame_b_value(info.datasets) if enhanced else None
    sequence_name = str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "") or "").strip()
    diffusion = bool(
        any(b is not None and b > 0 for b in bvalues)
        or (bval_fg is not None and bval_fg > 0)
        or contrast == "DIFFUSION"
        or bool({"DIFFUSION", "ADC", "TRACEW", "FA", "EADC"} & set(image_type))
        or re.search(r"ep_b\d", sequence_name)  # Siemens DWI sequence names (*ep_b1000t)
    )

    geometry = [g for d in info.datasets for g in _frame_geometry(d)]
    orientations = {g[0] for g in geometry}
    positions = {g for g in geometry}
    if orientations:
        labels = [_orientation_of(iop) for iop in orientations]
        label, angle, _ = labels[0]
        if len({lab for lab, _, _ in labels}) > 1:
            label = "mixed"
    else:
        label, angle = "unknown", 0.0

    equipment = " | ".join(t for t in (_text(ds.get("Manufacturer")), _text(ds.get("ManufacturerModelName")),
                                        _text(ds.get("SoftwareVersions"))) if t)
    return SeriesFeatures(
        series_instance_uid=info.series_instance_uid,
        series_number=info.series_number,
        description=info.series_description.strip(),
        protocol_name=info.protocol_name.strip(),
        sequence_name=sequence_name,
        modality=info.modality,
        enhanced=enhanced,
        scanning_sequence=scanning,
        sequence_variant=_tokens(ds.get("SequenceVariant")),
        scan_options=scan_options,
        repetition_time=tr,
        echo_time=te,
        echo_times=echo_times,
        inversion_time=ti,
        inversion_recovery=ir_flag,
        acquisition_type=str(ds.get("MRAcquisitionType", "") or "").upper(),
        image_type=image_type,
        acquisition_contrast=contrast,
        contrast_agent=agent,
        diffusion=diffusion,
        n_slices=len({pos for _, pos in positions}) if positions else info.number_of_frames,
        n_instances=info.number_of_instances,
        orientation=label,
        obliquity_deg=round(angle, 1),
        n_orientations=len(orientations),
        unreadable_files=len(info.skipped),
        equipment=equipment,
        uid_roots=frozenset({uid_root(info.series_instance_uid), uid_root(str(ds.get("SOPInstanceUID", "") or ""))}),
        acquired_at=_acquired_at(info.datasets),
        rows_columns_frames=(_int(ds.get("Rows")), _int(ds.get("Columns")), info.number_of_frames),
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__len__"):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# Arcs under which organisations get their own number: the root is the arc plus that number.
_UID_ARCS = ("1.3.6.1.4.1.", "1.2.840.", "1.2.826.0.1.", "2.16.840.1.", "1.2.392.200036.", "1.2.276.0.")


def uid_root(uid: str) -> str:
    """The organisation root of a UID (e.g. ``1.3.12.2`` for Siemens, ``1.3.6.1.4.1.19291`` for OsiriX).

    The root is the registration arc plus the organisation's number where the UID lies under
    a known arc (ISO member bodies, IANA enterprises...), else its first four components;
    ``2.25`` (UUID-derived) UIDs have no organisation root.
    """
    uid = uid.strip()
    if not uid:
        return ""
    if uid.startswith("2.25."):
        return "2.25"
    for arc in _UID_ARCS:
        if uid.startswith(arc):
            rest = uid[len(arc):].split(".")
            return arc + rest[0]
    return ".".join(uid.split(".")[:4])


_TIME = re.compile(r"^(\d{2}):?(\d{2})?:?(\d{2})?(\.\d{1,6})?")


def _date_time(date: Any, time: Any) -> datetime | None:
    date_text, time_text = _text(date), _text(time)
    if not re.fullmatch(r"\d{8}", date_text):
        date_text = "19000101" if time_text else ""
    if not date_text:
        return None
    match = _TIME.match(time_text)
    try:
        day = datetime.strptime(date_text, "%Y%m%d")
        if match is None:
            return day
        hours, minutes, seconds, fraction = match.groups()
        return day.replace(hour=int(hours), minute=int(minutes or 0), second=int(seconds or 0),
                           microsecond=int(float(fraction or 0) * 1e6))
    except ValueError:
        return None


def _acquired_at(datasets: list[Dataset]) -> datetime | None:
    """When the series was acquired: SeriesDate/SeriesTime, else the earliest AcquisitionDate/AcquisitionTime."""
    ds = datasets[0]
    study_date = ds.get("StudyDate")
    when = _date_time(ds.get("SeriesDate") or study_date, ds.get("SeriesTime")) if ds.get("SeriesTime") else None
    if when is not None:
        return when
    times = [_date_time(d.get("AcquisitionDate") or d.get("SeriesDate") or study_date, d.get("AcquisitionTime"))
             for d in datasets if d.get("AcquisitionTime")]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def _max_frame_b_value(datasets: Iterable[Dataset]) -> float | None:
    """Largest DiffusionBValue over all frames of Enhanced MR instances (b=0 frames often come first)."""
    best: float | None = None
    for ds in datasets:
        groups = list(ds.get("PerFrameFunctionalGroupsSequence") or []) + list(
            ds.get("SharedFunctionalGroupsSequence") or [])
        for group in groups:
            seq = group.get("MRDiffusionSequence")
            value = _float(seq[0].get("DiffusionBValue")) if seq else None
            if value is not None and (best is None or value > best):
                best = value
    return best


def _ordered_tokens(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [p.strip().upper() for p in value.split("\\") if p.strip()]
    return [str(v).strip().upper() for v in value if str(v).strip()]


# ---------------------------------------------------------------- scoring


@dataclass
class _Score:
    eligible: bool = True
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)
    deciding: dict[str, Any] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.eligible = False
        self.reasons.append("ineligible: " + reason)

    def add(self, points: float, reason: str) -> None:
        self.score += points
        self.reasons.append(f"{points:+g} {reason}")


def name_signal(features: SeriesFeatures, rules: SeriesRules) -> str | None:
    """What the series' names suggest first: ``"flair"``, ``"t2"``, ``"decoy"`` or None.

    FLAIR words are tested first (most FLAIR names contain "T2"), then T2 words, then
    decoy words (DWI, localizer, T1, post-contrast...). Scoring also counts decoy words
    next to a role word (:func:`decoy_words`).
    """
    text = features.names_text()
    if not text:
        return None
    for key in ("flair", "t2", "decoy"):
        if any(p.search(text) for p in rules.name_patterns[key]):
            return key
    return None


def decoy_words(features: SeriesFeatures, rules: SeriesRules) -> list[str]:
    """The decoy words in the series' names (ROI, copy, MPR, T1, DWI...), even beside FLAIR or T2."""
    text = features.names_text()
    found = [m.group(0) for p in rules.name_patterns["decoy"] for m in [p.search(text)] if m]
    return found


@dataclass(frozen=True)
class StudyContext:
    """What a series is compared with: the rest of its study.

    Attributes:
        uid_root: The UID root most of the study's series (and its Study Instance UID) share.
        median_series_number: Median Series Number over the study's series.
        copies: Series Instance UID of a series whose pixel data equal another's -> the
            series number of the one taken as the original.
    """

    uid_root: str | None = None
    median_series_number: float | None = None
    copies: Mapping[str, int | None] = field(default_factory=dict)


def study_context(study_uid: str, feats: list[SeriesFeatures]) -> StudyContext:
    """The UID root and series numbers of a study, for the provenance checks."""
    votes: dict[str, int] = {}
    for root in [uid_root(study_uid)] + [uid_root(f.series_instance_uid) for f in feats]:
        if root:
            votes[root] = votes.get(root, 0) + 1
    ranked = sorted(votes.items(), key=lambda kv: kv[1], reverse=True)
    majority = ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else None
    numbers = [f.series_number for f in feats if f.series_number is not None]
    return StudyContext(uid_root=majority, median_series_number=statistics.median(numbers) if numbers else None)


def _provenance(f: SeriesFeatures, rules: SeriesRules, context: StudyContext, s: _Score) -> None:
    """Signs that the series is a workstation copy rather than the scanner's acquisition."""
    w, th = rules.weights, rules.thresholds
    if f.equipment and any(p.search(f.equipment) for p in rules.name_patterns["workstation"]):
        s.add(float(w["workstation"]), f"written by a workstation ('{f.equipment[:64]}'): a copy")
    if context.uid_root and f.uid_roots - {"", context.uid_root}:
        other = sorted(f.uid_roots - {"", context.uid_root})[0]
        s.add(float(w["foreign_uid_root"]), f"UID root {other} unlike the study's {context.uid_root}")
    number, median = f.series_number, context.median_series_number
    if number is not None and number >= th["large_series_number"] and median is not None and \
            number >= th["large_series_number_ratio"] * median:
        s.add(float(w["large_series_number"]), f"series number {number} far above the study's (median {median:g})")
    if f.series_instance_uid in context.copies:
        s.add(float(w["duplicate_pixels"]),
              f"same pixel data as series {context.copies[f.series_instance_uid]}: a copy of it")


def _exclusions(f: SeriesFeatures, rules: SeriesRules, s: _Score) -> None:
    ex, th = rules.exclude, rules.thresholds
    if f.modality and f.modality != "MR":
        s.refuse(f"modality {f.modality}")
    if ex["derived"] and ({"DERIVED", "SECONDARY"} & set(f.image_type[:2])):
        s.refuse(f"ImageType {'/'.join(f.image_type[:2])} (not an original acquisition)")
    if ex["localizer"]:
        if "LOCALIZER" in f.image_type or f.acquisition_contrast == "LOCALIZER":
            s.refuse("ImageType LOCALIZER")
        elif f.n_orientations > 1:
            s.refuse(f"{f.n_orientations} slice orientations (localizer or multi-plane series)")
        elif f.n_slices < int(th["min_slices"]):
            s.refuse(f"{f.n_slices} slice(s) < {int(th['min_slices'])}")
    if ex["diffusion"] and f.diffusion:
        s.refuse("diffusion-weighted (b-value > 0)")
    if f.contrast_agent:
        if ex["contrast"]:
            s.refuse(f"post-contrast (ContrastBolusAgent: {f.contrast_agent[:40]})")
        else:
            s.add(float(rules.weights["contrast_penalty"]), "post-contrast")
    if ex["incomplete"] and f.unreadable_files:
        s.refuse(f"{f.unreadable_files} file(s) of the series unreadable")
    if f.obliquity_deg > float(th["max_oblique_deg"]):
        s.refuse(f"oblique by {f.obliquity_deg} degrees")


def _check(s: _Score, value: float | None, name: str, ok: bool, requirement: str, points: float) -> None:
    if value is None:
        s.reasons.append(f"+0 {name} unknown")
        return
    s.deciding[name] = value
    if ok:
        s.add(points, f"{name} {value:g} {requirement}")
    else:
        s.refuse(f"{name} {value:g} not {requirement}")


def _role_echo_time(f: SeriesFeatures, te_min: float, te_max: float, s: _Score) -> float | None:
    """The echo time to judge: in a multi-echo series (e.g. PD/T2 dual echo), the longest echo in range."""
    if len(f.echo_times) <= 1:
        return f.echo_time
    in_range = [t for t in f.echo_times if te_min <= t <= te_max]
    chosen = max(in_range) if in_range else max(f.echo_times)
    echoes = ", ".join(f"{t:g}" for t in f.echo_times)
    s.reasons.append(f"+0 multi-echo series (TE {echoes} ms): echo TE {chosen:g} used")
    s.deciding["echoes in series"] = len(f.echo_times)
    return chosen


def _physics_flair(f: SeriesFeatures, rules: SeriesRules, s: _Score) -> None:
    th, w = rules.thresholds["flair"], rules.weights
    ti = f.inversion_time
    if ti is not None and ti > 0:
        s.deciding["InversionTime"] = ti
        if th["ti_min_ms"] <= ti <= th["ti_max_ms"]:
            s.add(float(w["inversion_in_range"]), f"InversionTime {ti:g} in FLAIR range "
                  f"[{th['ti_min_ms']:g}, {th['ti_max_ms']:g}] ms")
        else:
            s.refuse(f"InversionTime {ti:g} ms outside FLAIR range [{th['ti_min_ms']:g}, {th['ti_max_ms']:g}]")
    elif f.inversion_recovery:
        s.deciding["ScanningSequence"] = "IR"
        s.add(float(w["physics_check"]) / 2, "inversion recovery (InversionTime not given)")
    elif f.acquisition_contrast == "FLUID_ATTENUATED":
        s.add(0.0, "AcquisitionContrast FLUID_ATTENUATED (no inversion attributes)")
    else:
        s.refuse("no inversion recovery (no IR in ScanningSequence/ScanOptions, no InversionTime)")
    pc = float(w["physics_check"])
    _check(s, f.repetition_time, "RepetitionTime", f.repetition_time is not None
           and f.repetition_time >= th["tr_min_ms"], f">= {th['tr_min_ms']:g} ms", pc)
    te = _role_echo_time(f, th["te_min_ms"], float("inf"), s)
    _check(s, te, "EchoTime", te is not None and te >= th["te_min_ms"], f">= {th['te_min_ms']:g} ms", pc)
    if f.acquisition_contrast == "FLUID_ATTENUATED":
        s.add(float(w["acquisition_contrast"]), "AcquisitionContrast FLUID_ATTENUATED")
        s.deciding["AcquisitionContrast"] = f.acquisition_contrast


def _physics_t2(f: SeriesFeatures, rules: SeriesRules, s: _Score) -> None:
    th, w = rules.thresholds["t2"], rules.weights
    pc = float(w["physics_check"])
    ti = f.inversion_time
    if ti is not None and ti > 0:
        s.deciding["InversionTime"] = ti
        if ti >= th["flair_like_ti_min_ms"]:
            s.refuse(f"InversionTime {ti:g} ms (fluid-suppressed, FLAIR-like)")
        else:
            s.refuse(f"InversionTime {ti:g} ms (inversion-prepared: T1-weighted or STIR)")
    elif f.inversion_recovery:
        s.refuse("inversion recovery in ScanningSequence/ScanOptions")
    else:
        s.add(0.0, "no inversion")
    _check(s, f.repetition_time, "RepetitionTime", f.repetition_time is not None
           and f.repetition_time >= th["tr_min_ms"], f">= {th['tr_min_ms']:g} ms", pc)
    te = _role_echo_time(f, th["te_min_ms"], th["te_max_ms"], s)
    _check(s, te, "EchoTime", te is not None and th["te_min_ms"] <= te <= th["te_max_ms"],
           f"in [{th['te_min_ms']:g}, {th['te_max_ms']:g}] ms", pc)
    if "EP" in f.scanning_sequence:
        s.refuse("echo-planar (EP) acquisition")
    elif "SE" in f.scanning_sequence:
        s.add(float(w["spin_echo"]), "spin echo (SE)")
    if f.acquisition_contrast == "T2":
        s.add(float(w["acquisition_contrast"]), "AcquisitionContrast T2")
        s.deciding["AcquisitionContrast"] = f.acquisition_contrast
    elif f.acquisition_contrast == "FLUID_ATTENUATED":
        s.refuse("AcquisitionContrast FLUID_ATTENUATED")


def score_candidate(features: SeriesFeatures, role: Role, rules: SeriesRules,
                    context: StudyContext | None = None) -> CandidateScore:
    """Score one series for one role (see the module docstring for the rules)."""
    return _score_role(features, role, rules, context or StudyContext())[0]


def _score_role(features: SeriesFeatures, role: Role, rules: SeriesRules,
                context: StudyContext) -> tuple[CandidateScore, dict[str, Any]]:
    s = _Score()
    _exclusions(features, rules, s)
    (_physics_flair if role is Role.FLAIR else _physics_t2)(features, rules, s)
    w = rules.weights
    if features.orientation == "axial":
        s.add(float(w["axial"]), "axial")
    counted = min(features.n_slices, int(w["max_slices_counted"]))
    if counted:
        s.add(round(float(w["per_slice"]) * counted, 3), f"{features.n_slices} slices")
    signal = name_signal(features, rules)
    own = "flair" if role is Role.FLAIR else "t2"
    if signal == own:
        s.add(float(w["name_role"]), f"name '{features.names_text()}' suggests {role.value}")
    elif signal in ("flair", "t2"):
        s.add(float(w["name_other_role"]), f"name '{features.names_text()}' suggests {signal.upper()}")
    decoys = decoy_words(features, rules)
    if decoys:
        s.add(float(w["name_decoy"]), f"name '{features.names_text()}' suggests another kind of series "
              f"({', '.join(decoys[:3])})")
    _provenance(features, rules, context, s)
    s.deciding.setdefault("orientation", features.orientation)
    s.deciding.setdefault("slices", features.n_slices)
    return CandidateScore(
        series_instance_uid=features.series_instance_uid,
        series_number=features.series_number,
        series_description=features.description,
        score=round(s.score, 3),
        eligible=s.eligible,
        reasons=tuple(s.reasons),
    ), s.deciding


# ---------------------------------------------------------------- selection


@dataclass
class SeriesSelection:
    """Result of series selection for a study.

    Attributes:
        t2: The chosen T2 series, or None when the role was not required and none qualified.
        flair: The chosen FLAIR series, likewise.
        explanations: Why each role was (or was not) filled, by role.
        features: Key attributes of every series considered, by Series Instance UID.
        skipped_files: Files the loader skipped (name and reason).
    """

    t2: SelectedSeries | None
    flair: SelectedSeries | None
    explanations: dict[Role, SelectionExplanation]
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)


TIE_RULE = ("earliest SeriesDate/SeriesTime (else AcquisitionDate/AcquisitionTime), "
            "then lowest SeriesNumber")


def _original_key(f: SeriesFeatures) -> tuple:
    """Sort key of the tie rule: the original acquisition comes first."""
    return (f.acquired_at is None, f.acquired_at or datetime.min,
            f.series_number is None, f.series_number if f.series_number is not None else 0)


def _choose(role: Role, feats: list[SeriesFeatures], rules: SeriesRules, context: StudyContext | None = None
            ) -> tuple[SeriesFeatures | None, SelectionExplanation, Exception | None]:
    context = context or StudyContext()
    scored = []
    for f in feats:
        candidate, deciding = _score_role(f, role, rules, context)
        scored.append((candidate, deciding, f))
    scored.sort(key=lambda item: (item[0].eligible, item[0].score), reverse=True)
    candidates = tuple(c for c, _, _ in scored)

    forced = rules.force["flair" if role is Role.FLAIR else "t2"]
    if forced is not None:
        matches = [(c, d, f) for c, d, f in scored if forced.search(f.description)]
        if len(matches) == 1:
            c, _, f = matches[0]
            rule = f"forced by site rule: SeriesDescription matches /{forced.pattern}/"
            if not c.eligible:
                rule += f" (the physics rules would have refused it: {_first_refusal(c)})"
            expl = SelectionExplanation(role=role, rule=rule, deciding_attributes={"SeriesDescription": f.description},
                                        candidates=candidates)
            return f, expl, None
        logger.warning("%s: site rule /%s/ matched %d series; using the physics rules", role.value,
                       forced.pattern, len(matches))

    eligible = [(c, d, f) for c, d, f in scored if c.eligible]
    if not eligible:
        listing = "; ".join(f"{f.short()} -> {_first_refusal(c)}" for c, _, f in scored) or "no image series"
        msg = f"no suitable {role.value} series among {len(feats)}: {listing}"
        expl = SelectionExplanation(role=role, rule="no eligible series", deciding_attributes={},
                                    candidates=candidates)
        return None, expl, NoSuitableSeriesError(msg, role=role.value, candidates=candidates)
    best_c = eligible[0][0]
    tied = [item for item in eligible if abs(item[0].score - best_c.score) <= TIE_EPSILON]
    flags: list[QualityFlag] = []
    if len(tied) > 1:
        tied.sort(key=lambda item: _original_key(item[2]))
        if _original_key(tied[0][2]) == _original_key(tied[1][2]):
            msg = (f"{len(tied)} series are equally good {role.value} candidates (score {best_c.score:g}) and "
                   f"the tie rule ({TIE_RULE}) cannot tell them apart: "
                   + "; ".join(f"{f.short()} uid {f.series_instance_uid}" for _, _, f in tied)
                   + "; name one with a site rule (force)")
            expl = SelectionExplanation(role=role, rule="tie", deciding_attributes={}, candidates=candidates)
            return None, expl, AmbiguousSeriesError(msg, role=role.value, candidates=candidates)
        best_c, best_d, best_f = tied[0]
        others = ", ".join(str(f.series_number) for _, _, f in tied[1:])
        lead = (f", tied with series {others}: taken as the original acquisition by the tie rule "
                f"({TIE_RULE})")
        flags.append(QualityFlag(
            code="SERIES_TIE_BROKEN", severity="warning",
            message=f"{role.value}: series {best_f.series_number} and {others} are equally good candidates "
                    f"(score {best_c.score:g}); series {best_f.series_number} was taken as the original "
                    f"acquisition ({TIE_RULE}); check that it is the intended one"))
    else:
        best_c, best_d, best_f = eligible[0]
        if len(eligible) > 1:
            lead = f", {best_c.score - eligible[1][0].score:g} ahead of series {eligible[1][2].series_number}"
        else:
            lead = ", only eligible series"
    copies = [f for c, _, f in eligible if context.copies.get(f.series_instance_uid, -1) == best_f.series_number
              and f is not best_f]
    if copies:
        listed = ", ".join(str(f.series_number) for f in copies)
        flags.append(QualityFlag(
            code="SERIES_COPY_IGNORED", severity="info",
            message=f"{role.value}: series {listed} hold the same pixel data as series {best_f.series_number} "
                    "and were taken as copies of it"))
    physics = "; ".join(r for r in best_c.reasons if not r.startswith("+0"))
    rule = f"best {role.value} score {best_c.score:g}{lead} ({physics})"
    expl = SelectionExplanation(role=role, rule=rule, deciding_attributes=dict(best_d), candidates=candidates,
                                flags=tuple(flags))
    return best_f, expl, None


def _pixel_copies(feats: list[SeriesFeatures], by_uid: Mapping[str, SeriesInfo], rules: SeriesRules,
                  context: StudyContext) -> dict[str, int | None]:
    """Series whose pixel data equal another series', each mapped to the series taken as the original.

    Only series eligible for the same role and of equal size (rows, columns, frames) are compared,
    by a hash of the pixel data of their middle instance, so that a study without
    look-alike candidates reads no pixel data here. Of identical series the original is
    the one with the fewest provenance signs, then by the tie rule.
    """
    digests: dict[str, str | None] = {}
    copies: dict[str, int | None] = {}
    for role in Role:
        by_size: dict[tuple[int, int, int], list[SeriesFeatures]] = {}
        for f in feats:
            if _score_role(f, role, rules, context)[0].eligible:
                by_size.setdefault(f.rows_columns_frames, []).append(f)
        for group in by_size.values():
            if len(group) < 2:
                continue
            by_hash: dict[str, list[SeriesFeatures]] = {}
            for f in group:
                uid = f.series_instance_uid
                if uid not in digests:
                    digests[uid] = _pixel_digest(by_uid[uid])
                if digests[uid] is not None:
                    by_hash.setdefault(digests[uid], []).append(f)
            for same in by_hash.values():
                if len(same) < 2:
                    continue
                signs = {f.series_instance_uid: _provenance_signs(f, rules, context) for f in same}
                same.sort(key=lambda f: (signs[f.series_instance_uid], _original_key(f)))
                for f in same[1:]:
                    if f.series_instance_uid not in copies:
                        copies[f.series_instance_uid] = same[0].series_number
                        logger.info("series %s holds the same pixel data as series %s: taken as a copy",
                                    f.series_number, same[0].series_number)
    return copies


def _provenance_signs(f: SeriesFeatures, rules: SeriesRules, context: StudyContext) -> int:
    s = _Score()
    _provenance(f, rules, context, s)
    return len(s.reasons)


def _pixel_digest(info: SeriesInfo) -> str | None:
    """SHA-256 of the pixel data of the series' middle instance (None when unreadable)."""
    ds = info.datasets[len(info.datasets) // 2]
    try:
        data = ds.PixelData
    except Exception:  # noqa: BLE001 - unreadable pixel data: no comparison
        return None
    return hashlib.sha256(data).hexdigest() if data else None


def _first_refusal(candidate: CandidateScore) -> str:
    for reason in candidate.reasons:
        if reason.startswith("ineligible: "):
            return reason[len("ineligible: "):]
    return "not chosen"


def select_series(
    study: LoadedStudy,
    rules: SeriesRules | None = None,
    *,
    require: Iterable[Role] = (Role.T2, Role.FLAIR),
) -> SeriesSelection:
    """Choose the T2 and FLAIR series of a study.

    Args:
        study: The loaded study.
        rules: Selection rules (defaults when None; see :func:`load_rules`).
        require: Roles that must be filled; a missing role not in it is returned as None.

    Returns:
        A :class:`SeriesSelection` with the chosen series and explanations.

    Raises:
        NoSuitableSeriesError: A required role has no eligible series (message lists the series found).
        AmbiguousSeriesError: Two series are equally good for a required role.
        SeriesSelectionError: The same series came out best for both roles.
    """
    rules = rules or load_rules()
    required = set(require)
    infos = [info for info in study.series.values() if info.datasets]
    feats = [series_features(info) for info in infos]
    by_uid = {info.series_instance_uid: info for info in infos}
    context = study_context(study.study_instance_uid, feats)
    context = StudyContext(context.uid_root, context.median_series_number,
                           _pixel_copies(feats, by_uid, rules, context))

    chosen: dict[Role, SeriesFeatures | None] = {}
    explanations: dict[Role, SelectionExplanation] = {}
    errors: list[Exception] = []
    for role in (Role.T2, Role.FLAIR):
        feature, explanation, error = _choose(role, feats, rules, context)
        explanations[role] = explanation
        chosen[role] = feature
        _log_decision(role, explanation, feature)
        if error is not None and role in required:
            errors.append(error)
    if errors:
        raise errors[0]
    if chosen[Role.T2] is not None and chosen[Role.FLAIR] is not None and \
            chosen[Role.T2].series_instance_uid == chosen[Role.FLAIR].series_instance_uid:
        raise SeriesSelectionError(f"series {chosen[Role.T2].short()} came out best for both T2 and FLAIR")

    def selected(role: Role) -> SelectedSeries | None:
        f = chosen[role]
        if f is None:
            return None
        info = by_uid[f.series_instance_uid]
        datasets, files = list(info.datasets), list(info.files)
        echo = explanations[role].deciding_attributes.get("EchoTime")
        if len(f.echo_times) > 1 and echo is not None:
            # keep only the echo that was judged; the converter refuses mixed echoes
            keep = [i for i, d in enumerate(datasets) if _float(d.get("EchoTime")) == echo]
            datasets, files = [datasets[i] for i in keep], [files[i] for i in keep]
        return SelectedSeries(role=role, series_instance_uid=info.series_instance_uid, datasets=datasets,
                              files=files, explanation=explanations[role])

    return SeriesSelection(
        t2=selected(Role.T2),
        flair=selected(Role.FLAIR),
        explanations=explanations,
        features={f.series_instance_uid: f.summary() for f in feats},
        skipped_files=[(s.path.name, s.reason) for s in study.skipped],
    )


def _log_decision(role: Role, explanation: SelectionExplanation, feature: SeriesFeatures | None) -> None:
    # Series descriptions are free text (they can hold a name): logs give numbers and UIDs only.
    if feature is not None:
        logger.info("%s: chose series %s (uid %s)", role.value, feature.series_number,
                    feature.series_instance_uid)
    else:
        logger.warning("%s: no series chosen", role.value)
    for c in explanation.candidates:
        logger.debug("  %s candidate series %s: %s", role.value, c.series_number,
                     f"score {c.score:g}" if c.eligible else "not eligible")


def _build_operator() -> type:
    from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec

    class SeriesSelectorOperator(Operator):
        """Chooses the T2 and FLAIR series of a study by acquisition physics, then names.

        Named input:
            study: :class:`~operators.dicom_loading.LoadedStudy`.

        Named outputs:
            t2_series: :class:`~operators.datatypes.SelectedSeries` for T2 (None if not required and absent).
            flair_series: :class:`~operators.datatypes.SelectedSeries` for FLAIR.
            selection: :class:`SeriesSelection` (explanations and candidate scores, for the report).
        """

        def __init__(self, fragment: Fragment, *args: Any, rules_path: Path | str | None = None,
                     require: Iterable[str] = ("T2", "FLAIR"),
                     on_selected: Callable[[list[SelectedSeries]], None] | None = None, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application (a Fragment) the operator belongs to.
                rules_path: Optional site rules YAML file.
                require: Roles that must be found (``"T2"``, ``"FLAIR"``).
                on_selected: Called with the series chosen, so that a later failure's
                    report can still name them.
            """
            self.rules = load_rules(rules_path)
            self.require = tuple(Role(r) for r in require)
            self.on_selected = on_selected
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("study")
            spec.output("t2_series").condition(ConditionType.NONE)
            spec.output("flair_series").condition(ConditionType.NONE)
            spec.output("selection").condition(ConditionType.NONE)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            selection = select_series(op_input.receive("study"), self.rules, require=self.require)
            if self.on_selected is not None:
                self.on_selected([s for s in (selection.t2, selection.flair) if s is not None])
            op_output.emit(selection.t2, "t2_series")
            op_output.emit(selection.flair, "flair_series")
            op_output.emit(selection, "selection")

    return SeriesSelectorOperator


__getattr__ = lazy_operator(globals(), "SeriesSelectorOperator", _build_operator)
