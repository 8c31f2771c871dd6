"""Check the patient, study and equipment values that written objects copy from the source study.

Scanners and workstations export values that break the DICOM rules of their value
representation: PatientSex ``0000``, PatientBirthDate ``***``, a time of day
``256199``, a name component longer than 64 characters, a backslash (the value
separator) inside a single-valued LO. Copied unchanged, such a value makes
highdicom or pydicom refuse to build the result SR, and a validator reject the
object. Each value is therefore checked against its value representation, value
multiplicity and (for a few attributes) enumerated values before it is copied; a
valid value is copied unchanged, an invalid one is written empty.

Pure core: :func:`value_problem` judges one element, :func:`header_problems` all the
copied attributes of a dataset, :func:`clear_invalid` empties the invalid ones in a
copy, :func:`copy_valid` copies the valid ones into a new object and
:func:`log_header_problems` says in the log what was left empty. Problems name the
attribute and what is wrong with its value, never the value itself (it may be
patient data).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VM, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

logger = logging.getLogger(__name__)

#: Equipment attributes of the source that highdicom copies into Contributing Equipment.
EQUIPMENT_KEYWORDS = (
    "Manufacturer", "InstitutionName", "InstitutionAddress", "StationName", "InstitutionalDepartmentName",
    "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions",
)

#: Attributes with enumerated values (PS3.3) among the copied ones.
ENUMERATED_VALUES: dict[str, frozenset[str]] = {
    "PatientSex": frozenset({"M", "F", "O"}),
    "PatientIdentityRemoved": frozenset({"YES", "NO"}),
    "QualityControlSubject": frozenset({"YES", "NO"}),
}

_VR_RULE = {
    "AS": "not an age (nnnD, nnnW, nnnM or nnnY)",
    "DA": "not a date (YYYYMMDD)",
    "DT": "not a date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)",
    "TM": "not a time of day (HHMMSS.FFFFFF)",
    "DS": "not a decimal string of at most 16 characters",
    "IS": "not an integer string of at most 12 characters",
    "UI": "not a UID (digits and dots, at most 64 characters)",
    "PN": "not a person name (at most 5 components of at most 64 characters each)",
}
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})
_MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "UR": None}


@dataclass(frozen=True)
class HeaderProblem:
    """An invalid value in a source header (the value itself is never kept).

    Attributes:
        keyword: DICOM keyword of the attribute.
        problem: What is wrong, e.g. ``"not a date (YYYYMMDD)"``.
    """

    keyword: str
    problem: str

    def __str__(self) -> str:
        return f"{self.keyword} ({self.problem})"


@lru_cache(maxsize=1)
def copied_keywords() -> frozenset[str]:
    """Keywords of the root-level attributes of the Patient and Study modules, plus the equipment.

    These are the attributes highdicom copies from the first evidence instance into
    an SR (its :meth:`copy_patient_and_study_information`), taken from the same
    module tables highdicom uses, so that the check covers exactly what is copied.
    """
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

    iod = get_iod_module_map()[get_sop_class_iod_map()["1.2.840.10008.5.1.4.1.1.88.34"]]
    attributes = get_module_attribute_map()
    keywords = {item["keyword"] for module in iod if module["ie"] in ("Patient", "Study")
                for item in attributes[module["key"]] if not item["path"]}
    return frozenset(keywords) | frozenset(EQUIPMENT_KEYWORDS)


def _problem_of_text(vr: str, text: str) -> str | None:
    try:
        validate_value(vr, text, pydicom_config.RAISE)
    except (ValueError, TypeError):
        if vr in _VR_RULE:
            return _VR_RULE[vr]
        limit = _MAX_LENGTH.get(vr)
        if limit is not None and len(text) > limit:
            return f"longer than the {limit} characters {vr} allows"
        return f"characters that {vr} does not allow"
    if vr in ("SH", "LO", "PN", "CS", "ST", "LT", "UC") and any(ord(c) < 32 and c not in "\x1b\r\n\t\f"
                                                                  for c in text):
        return f"control characters that {vr} does not allow"
    return None


def value_problem(element: DataElement) -> str | None:
    """What is wrong with an element's value, or None when it may be copied as it is.

    Args:
        element: A (converted) data element of the source dataset.

    Returns:
        A short description of the problem (never quoting the value), or None.
    """
    vr = str(element.VR)
    value = element.value
    if value is None or value == "" or vr == "SQ":
        return None
    if isinstance(value, bytes) and vr not in ("OB", "OW", "UN"):
        return "value could not be decoded"
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        vm = dictionary_VM(element.tag)
    except KeyError:
        vm = ""
    if vm == "1" and len(values) > 1:
        return "several values (a backslash) where one is allowed"
    keyword = element.keyword
    for item in values:
        text = str(item) if not isinstance(item, bytes) else ""
        if vr in _TEXT_VRS:
            problem = _problem_of_text(vr, text)
            if problem is not None:
                return problem
        allowed = ENUMERATED_VALUES.get(keyword)
        if allowed is not None and text.strip() not in allowed:
            return f"not one of {', '.join(sorted(allowed))}"
    return None


def _sequence_problem(element: DataElement) -> str | None:
    for item in element.value or ():
        for child in item:
            if child.VR == "SQ":
                if _sequence_problem(child) is not None:
                    return "an item holds an invalid value"
            elif value_problem(child) is not None:
                return f"an item holds an invalid {child.keyword or child.tag}"
    return None


def _element(dataset: Dataset, keyword: str) -> DataElement | str | None:
    """The converted element, None when absent, or a problem when it cannot even be converted."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in dataset:
        return None
    with warnings.catch_warnings():
        # pydicom's warnings on invalid values quote them (patient data)
        warnings.simplefilter("ignore")
        previous = logging.getLogger("pydicom").disabled
        logging.getLogger("pydicom").disabled = True
        try:
            return dataset[tag]
        except Exception:  # noqa: BLE001 - any conversion failure means "unusable value"
            return "value could not be decoded"
        finally:
            logging.getLogger("pydicom").disabled = previous


def _check(dataset: Dataset, keyword: str) -> tuple[DataElement | None, str | None]:
    element = _element(dataset, keyword)
    if element is None or isinstance(element, str):
        return None, element
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem = _sequence_problem(element) if element.VR == "SQ" else value_problem(element)
    return element, problem


def header_problems(dataset: Dataset, keywords: Iterable[str] | None = None) -> list[HeaderProblem]:
    """The invalid values among the copied attributes of ``dataset``.

    Args:
        dataset: A source instance.
        keywords: Attributes to check; default :func:`copied_keywords`.

    Returns:
        One :class:`HeaderProblem` per invalid attribute, in keyword order.
    """
    problems = []
    for keyword in sorted(keywords if keywords is not None else copied_keywords()):
        _, problem = _check(dataset, keyword)
        if problem is not None:
            problems.append(HeaderProblem(keyword, problem))
    return problems


def clear_invalid(dataset: Dataset, keywords: Iterable[str] | None = None) -> list[HeaderProblem]:
    """Empty, in place, every invalid copied value of ``dataset`` (a sequence is removed).

    Args:
        dataset: A copy of a source instance (it is changed).
        keywords: Attributes to check; default :func:`copied_keywords`.

    Returns:
        The problems found (and cleared).
    """
    problems = header_problems(dataset, keywords)
    for found in problems:
        tag = tag_for_keyword(found.keyword)
        if dataset[tag].VR == "SQ":
            del dataset[tag]
        else:
            dataset[tag].value = None
    return problems


def copy_valid(source: Dataset, target: Dataset, keywords: Iterable[str],
               empty_when_invalid: Iterable[str] = ()) -> list[HeaderProblem]:
    """Copy the valid values of ``keywords`` from ``source`` into ``target``.

    Args:
        source: The source instance.
        target: The object being written.
        keywords: Attributes to copy when present and valid.
        empty_when_invalid: Attributes written empty (Type 2) when invalid; others are left out.

    Returns:
        The problems found (those attributes were not copied).
    """
    type2 = set(empty_when_invalid)
    problems = []
    for keyword in keywords:
        element, problem = _check(source, keyword)
        if problem is not None:
            problems.append(HeaderProblem(keyword, problem))
            if keyword in type2:
                setattr(target, keyword, None)
        elif element is not None:
            target[element.tag] = element
    return problems


def log_header_problems(dataset: Dataset, what: str = "the objects written") -> list[HeaderProblem]:
    """Log once, as a warning, which copied values of ``dataset`` are invalid and left empty.

    Args:
        dataset: The source instance the patient and study values come from.
        what: The objects concerned, for the message.

    Returns:
        The problems found.
    """
    problems = header_problems(dataset)
    if problems:
        logger.warning("%d invalid patient/study value(s) in the source header, left empty in %s: %s",
                       len(problems), what, "; ".join(str(p) for p in problems))
    return problems


#: What a minimal object keeps of its source: the identifiers that file it with the study.
IDENTIFYING_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)


def identifying_copy(dataset: Dataset) -> Dataset:
    """A bare copy of ``dataset``: its SOP, series and study UIDs and its valid identifying values.

    The source of a last-resort object (a minimal not-analysable SR) when building one
    from the whole header failed.
    """
    bare = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        element = _element(dataset, keyword)
        if isinstance(element, DataElement):
            bare[element.tag] = element
    copy_valid(dataset, bare, [k for k in IDENTIFYING_KEYWORDS if k != "StudyInstanceUID"],
               empty_when_invalid=IDENTIFYING_KEYWORDS)
    for keyword in IDENTIFYING_KEYWORDS:
        if keyword not in bare and keyword != "SpecificCharacterSet":
            setattr(bare, keyword, None)
    return bare
