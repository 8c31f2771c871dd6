"""Helpers shared by the writers of new DICOM objects in the source study."""

from __future__ import annotations

from pydicom.dataset import Dataset

from operators.header_values import copy_valid

#: Patient and study attributes copied from a source instance (Patient, General
#: Study and Patient Study modules), including the Specific Character Set so that
#: non-ASCII names survive unchanged.
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
    "PatientSex", "PatientAge", "PatientWeight", "PatientSize", "OtherPatientIDsSequence",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "IssuerOfAccessionNumberSequence",
)
#: Type 2 attributes of those modules, written empty when the source lacks them.
PATIENT_STUDY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName",
)


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the valid patient and study values of ``source`` into ``target`` (invalid ones left empty)."""
    copy_valid(source, target, PATIENT_STUDY_KEYWORDS, empty_when_invalid=PATIENT_STUDY_TYPE2)
    for keyword in PATIENT_STUDY_TYPE2:
        if keyword not in target:
            setattr(target, keyword, None)


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
