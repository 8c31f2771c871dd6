"""Clinical variables of the WAE-Net clinical member, with their sources and validation.

The four variables (``ClinicalData.as_vector()`` order):

1. age at seizure onset (months): from the study's clinical-data file or the site lookup table;
2. age at imaging (months): from DICOM, ``StudyDate - PatientBirthDate`` (else
   ``AcquisitionDate``/``SeriesDate`` for the date), else ``PatientAge``;
3. infantile spasms (yes/no) and 4. number of ASMs >= 3 (yes/no): file or table.

Sources, in order of precedence (formats in ``docs/clinical-data.md``):

* ``clinical.json`` delivered with the study (in the study's input folder),
  format ``tsc-clinical/1``;
* a site lookup table (CSV) keyed by Accession Number.

Validation: types (numbers are numbers, yes/no are booleans), ranges (ages
0..216 months), age at onset not after imaging (0.5 month tolerance for
rounding), and the record's accession number equals the study's when both are
given (a record of another examination is never used). An invalid or missing
record does not stop the analysis: ``build_clinical_data`` returns a
``ClinicalData`` with ``missing_reason`` set, and the clinical member is left
out with that reason.

Logs and reasons never contain patient names, IDs, birth dates or accession
numbers (accession numbers are shown as a short hash).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydicom import Dataset

from operators.datatypes import ClinicalData, ClinicalValue
from operators.errors import ClinicalDataError
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)

CLINICAL_FORMAT = "tsc-clinical/1"
CLINICAL_FILE_NAME = "clinical.json"
MAX_AGE_MONTHS = 216.0  # 18 years: the models are paediatric
ONSET_TOLERANCE_MONTHS = 0.5
DAYS_PER_MONTH = 365.25 / 12.0
_REQUIRED = ("age_at_seizure_onset_months", "infantile_spasms", "asm_count_ge_3")
_KNOWN_JSON_KEYS = {"format", "accession_number", *_REQUIRED, "comment"}
_CSV_TRUE = {"true", "yes", "y", "1"}
_CSV_FALSE = {"false", "no", "n", "0"}
_AGE = re.compile(r"^(\d{3})([DWMY])$")


@dataclass(frozen=True)
class ClinicalRecord:
    """The clinician-supplied variables of one examination (validated types and ranges).

    Attributes:
        accession_number: The examination it belongs to, if stated.
        age_at_onset_months: Age at first seizure, months.
        infantile_spasms: History of infantile spasms.
        asm_count_ge_3: Three or more antiseizure medications.
        source: Where it came from (file name or table name and row), no patient data.
    """

    accession_number: str | None
    age_at_onset_months: float
    infantile_spasms: bool
    asm_count_ge_3: bool
    source: str


def short_hash(text: str) -> str:
    """A short, non-reversible tag for an identifier (for logs)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def _months(value: Any, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClinicalDataError(f"{source}: {field} must be a number of months, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= MAX_AGE_MONTHS:
        raise ClinicalDataError(f"{source}: {field} = {v} is outside 0..{MAX_AGE_MONTHS:g} months")
    return v


def _flag(value: Any, field: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ClinicalDataError(f"{source}: {field} must be true or false, got {type(value).__name__}")
    return value


def parse_clinical_json(data: Any, source: str = CLINICAL_FILE_NAME) -> ClinicalRecord:
    """Validate a parsed ``tsc-clinical/1`` document.

    Raises:
        ClinicalDataError: Wrong format, missing field, wrong type or out of range.
    """
    if not isinstance(data, Mapping):
        raise ClinicalDataError(f"{source}: must be a JSON object")
    if data.get("format") != CLINICAL_FORMAT:
        raise ClinicalDataError(f"{source}: format must be {CLINICAL_FORMAT!r}, got {data.get('format')!r}")
    missing = [k for k in _REQUIRED if k not in data or data[k] is None]
    if missing:
        raise ClinicalDataError(f"{source}: missing {', '.join(missing)}")
    unknown = sorted(set(data) - _KNOWN_JSON_KEYS)
    if unknown:
        logger.warning("%s: ignoring unknown field(s) %s", source, unknown)
    acc = data.get("accession_number")
    if acc is not None and not isinstance(acc, str):
        raise ClinicalDataError(f"{source}: accession_number must be a string")
    return ClinicalRecord(
        accession_number=(acc or "").strip() or None,
        age_at_onset_months=_months(data["age_at_seizure_onset_months"], "age_at_seizure_onset_months", source),
        infantile_spasms=_flag(data["infantile_spasms"], "infantile_spasms", source),
        asm_count_ge_3=_flag(data["asm_count_ge_3"], "asm_count_ge_3", source),
        source=source,
    )


def load_clinical_file(path: str | Path) -> ClinicalRecord:
    """Read and validate a ``clinical.json`` file.

    Raises:
        ClinicalDataError: Unreadable, not JSON, or invalid (the message names the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClinicalDataError(f"{path.name}: cannot be read as JSON ({type(exc).__name__})") from exc
    return parse_clinical_json(data, source=path.name)


def find_clinical_file(study_folder: str | Path | None) -> Path | None:
    """The study's ``clinical.json``: at the top of the folder, else the only one below it.

    Raises:
        ClinicalDataError: Several ``clinical.json`` files below the folder.
    """
    if study_folder is None:
        return None
    root = Path(study_folder)
    if (root / CLINICAL_FILE_NAME).is_file():
        return root / CLINICAL_FILE_NAME
    if not root.is_dir():
        return None
    found = sorted(p for p in root.rglob(CLINICAL_FILE_NAME) if p.is_file())
    if len(found) > 1:
        raise ClinicalDataError(f"{len(found)} {CLINICAL_FILE_NAME} files in the study folder; expected one")
    return found[0] if found else None


class SiteLookupTable:
    """Clinical records of a site keyed by Accession Number, from a CSV file.

    Columns (header row, any order; extra columns ignored): ``accession_number``,
    ``age_at_seizure_onset_months``, ``infantile_spasms``, ``asm_count_ge_3``.
    Yes/no columns accept true/false, yes/no, y/n, 1/0 (case-insensitive). A row
    with an invalid value is kept as invalid and reported when its accession
    is looked up (other rows stay usable); a duplicate accession number makes
    that accession invalid.
    """

    def __init__(self, records: Mapping[str, ClinicalRecord | ClinicalDataError], name: str) -> None:
        self._records = dict(records)
        self.name = name

    def __len__(self) -> int:
        return len(self._records)

    @classmethod
    def from_csv(cls, path: str | Path) -> "SiteLookupTable":
        """Load a lookup table.

        Raises:
            ClinicalDataError: Unreadable file or missing columns (a configuration error:
                raised at start-up by the operator).
        """
        path = Path(path)
        records: dict[str, ClinicalRecord | ClinicalDataError] = {}
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                absent = [c for c in ("accession_number", *_REQUIRED) if c not in header]
                if absent:
                    raise ClinicalDataError(f"{path.name}: missing column(s) {', '.join(absent)}")
                for line, row in enumerate(reader, start=2):
                    row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    acc = row.get("accession_number", "")
                    if not acc:
                        logger.warning("%s line %d: no accession number, row ignored", path.name, line)
                        continue
                    source = f"{path.name} line {line}"
                    if acc in records:
                        records[acc] = ClinicalDataError(f"{path.name}: accession number appears more than once")
                        continue
                    try:
                        records[acc] = _csv_record(row, source)
                    except ClinicalDataError as exc:
                        records[acc] = exc
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ClinicalDataError(f"{path.name}: cannot be read as CSV ({type(exc).__name__})") from exc
        logger.info("site lookup table %s: %d accession numbers", path.name, len(records))
        return cls(records, path.name)

    def get(self, accession_number: str | None) -> ClinicalRecord | None:
        """The record for an accession number, or None if absent.

        Raises:
            ClinicalDataError: The row exists but is invalid.
        """
        if not accession_number:
            return None
        rec = self._records.get(accession_number.strip())
        if isinstance(rec, ClinicalDataError):
            raise rec
        return rec


def _csv_record(row: Mapping[str, str], source: str) -> ClinicalRecord:
    def flag(name: str) -> bool:
        text = row.get(name, "").lower()
        if text in _CSV_TRUE:
            return True
        if text in _CSV_FALSE:
            return False
        raise ClinicalDataError(f"{source}: {name} must be yes/no, true/false or 1/0, got {text!r}"
                                if text else f"{source}: {name} is empty")

    text = row.get("age_at_seizure_onset_months", "")
    try:
        onset = float(text)
    except ValueError:
        raise ClinicalDataError(f"{source}: age_at_seizure_onset_months must be a number, got {text!r}") from None
    return ClinicalRecord(accession_number=row["accession_number"],
                          age_at_onset_months=_months(onset, "age_at_seizure_onset_months", source),
                          infantile_spasms=flag("infantile_spasms"), asm_count_ge_3=flag("asm_count_ge_3"),
                          source=source)


def _dicom_date(value: Any) -> dt.date | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def dicom_age_months(ds: Dataset) -> tuple[float, str]:
    """Age at imaging in months from DICOM, and its source, without a range check.

    Uses ``StudyDate`` (else ``AcquisitionDate``, ``SeriesDate``) minus
    ``PatientBirthDate``; else ``PatientAge`` (``nnnD``/``W``/``M``/``Y``).

    Raises:
        ClinicalDataError: Neither source is usable (the message never contains
            the dates themselves).
    """
    birth = _dicom_date(ds.get("PatientBirthDate"))
    exam = next((d for d in (_dicom_date(ds.get(k)) for k in ("StudyDate", "AcquisitionDate", "SeriesDate"))
                 if d is not None), None)
    if birth is not None and exam is not None:
        days = (exam - birth).days
        if days < 0:
            raise ClinicalDataError("PatientBirthDate is after the study date")
        months = days / DAYS_PER_MONTH
        source = "DICOM PatientBirthDate and StudyDate"
    else:
        text = str(ds.get("PatientAge") or "").strip().upper()
        m = _AGE.match(text)
        if not m:
            reason = "no PatientBirthDate/StudyDate and no PatientAge" if not text else "PatientAge is malformed"
            raise ClinicalDataError(f"age at imaging unknown: {reason}")
        n, unit = int(m.group(1)), m.group(2)
        months = {"D": n / DAYS_PER_MONTH, "W": n * 7 / DAYS_PER_MONTH, "M": float(n), "Y": n * 12.0}[unit]
        source = "DICOM PatientAge"
    return months, source


def age_at_imaging_months(ds: Dataset) -> ClinicalValue:
    """Age at imaging in months from DICOM (see :func:`dicom_age_months`), range-checked.

    Raises:
        ClinicalDataError: Neither source is usable, or the age is out of range
            (the message never contains the dates themselves).
    """
    months, source = dicom_age_months(ds)
    if months > MAX_AGE_MONTHS:
        raise ClinicalDataError(f"age at imaging {months:.0f} months is outside 0..{MAX_AGE_MONTHS:g} months")
    return ClinicalValue("age_at_imaging_months", round(months, 2), source)


def build_clinical_data(ds: Dataset | None, *, clinical_file: str | Path | None = None,
                        lookup: SiteLookupTable | None = None) -> ClinicalData:
    """Assemble and validate the clinical variables of one study; never raises for bad data.

    Args:
        ds: Any instance of the study (patient and study attributes), or None.
        clinical_file: The study's ``clinical.json``, if delivered.
        lookup: Site lookup table keyed by Accession Number, if configured.

    Returns:
        ``ClinicalData``; when the record is missing or invalid, ``missing_reason``
        says why (the clinical member is then left out) and the values that
        could be read are still reported.
    """
    age: ClinicalValue | None = None
    problems: list[str] = []
    try:
        if ds is None:
            raise ClinicalDataError("no DICOM instance to read the age at imaging from")
        age = age_at_imaging_months(ds)
    except ClinicalDataError as exc:
        problems.append(exc.reason)

    accession = str(ds.get("AccessionNumber") or "").strip() if ds is not None else ""
    record: ClinicalRecord | None = None
    try:
        if clinical_file is not None:
            record = load_clinical_file(clinical_file)
            if record.accession_number and accession and record.accession_number != accession:
                raise ClinicalDataError(f"{record.source}: accession number does not match the study's "
                                        "(record of another examination)")
        elif lookup is not None:
            record = lookup.get(accession)
            if record is None:
                raise ClinicalDataError(f"site lookup table {lookup.name}: no record for this accession number"
                                        if accession else "study has no AccessionNumber to look up")
        else:
            raise ClinicalDataError("no clinical data file with the study and no site lookup table configured")
    except ClinicalDataError as exc:
        problems.append(exc.reason)
        record = None

    if record is not None and age is not None and \
            record.age_at_onset_months > age.value + ONSET_TOLERANCE_MONTHS:  # type: ignore[operator]
        problems.append(f"{record.source}: age at seizure onset ({record.age_at_onset_months:g} months) is after "
                        f"the age at imaging ({age.value:g} months)")
        record = None

    def value(name: str, v: float | bool) -> ClinicalValue:
        return ClinicalValue(name, float(v), record.source)  # type: ignore[union-attr]

    data = ClinicalData(
        age_at_onset_months=value("age_at_onset_months", record.age_at_onset_months) if record else None,
        age_at_imaging_months=age,
        infantile_spasms=value("infantile_spasms", record.infantile_spasms) if record else None,
        asm_count_ge_3=value("asm_count_ge_3", record.asm_count_ge_3) if record else None,
        missing_reason="; ".join(problems) or None,
    )
    tag = short_hash(accession) if accession else "none"
    if data.missing_reason:
        logger.warning("clinical data for accession #%s not usable: %s", tag, data.missing_reason)
    else:
        logger.info("clinical data for accession #%s from %s and %s", tag, record.source,  # type: ignore[union-attr]
                    age.source)  # type: ignore[union-attr]
    return data


def _operator_class() -> type:
    from monai.deploy.core import Fragment, Operator, OperatorSpec

    class ClinicalDataOperator(Operator):
        """Reads the clinical variables for the study being analysed.

        Named input:
            study: ``operators.dicom_loading.LoadedStudy`` (its ``root`` folder is
                searched for ``clinical.json``; any instance gives the patient/study
                attributes).

        Named output:
            clinical: ``ClinicalData`` (``missing_reason`` set when unusable).
        """

        def __init__(self, fragment: Fragment, *args: Any, lookup_table: str | Path | None = None,
                     **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application.
                lookup_table: Optional site lookup CSV, loaded (and checked) here at start-up.
            """
            self.lookup = SiteLookupTable.from_csv(lookup_table) if lookup_table else None
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("study")
            spec.output("clinical")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            study = op_input.receive("study")
            op_output.emit(clinical_data_for_study(study, self.lookup), "clinical")

    return ClinicalDataOperator


def clinical_data_for_study(study: Any, lookup: SiteLookupTable | None = None) -> ClinicalData:
    """``build_clinical_data`` for a ``LoadedStudy`` (its folder's ``clinical.json``, else the lookup table)."""
    ds = study.first_dataset() if study is not None else None
    try:
        path = find_clinical_file(getattr(study, "root", None))
    except ClinicalDataError as exc:
        age = None
        try:
            age = age_at_imaging_months(ds) if ds is not None else None
        except ClinicalDataError:
            pass
        return ClinicalData(None, age, None, None, missing_reason=exc.reason)
    return build_clinical_data(ds, clinical_file=path, lookup=lookup)


__getattr__ = lazy_operator(globals(), "ClinicalDataOperator", _operator_class)
