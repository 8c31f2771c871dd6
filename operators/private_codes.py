"""Private coded concepts used in the app's DICOM Structured Reports.

No standard code (DCM, SCT, LOINC) in the DICOM dictionaries shipped with
pydicom/highdicom names "uncontrolled epilepsy after one year of antiseizure
medication" or the other concepts below, so they are private codes under the
scheme designator :data:`SCHEME_DESIGNATOR`. Following PS3.16 section 8.2
(private coding schemes begin with ``99``), every SR that uses them declares the
scheme in its Coding Scheme Identification Sequence
(:func:`coding_scheme_identification_item`).

Code values are stable: never renumber or reuse them; add new ones at the end.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

SCHEME_DESIGNATOR = "99TSCEO"
SCHEME_NAME = "TSC Epilepsy Outcome private concepts"
SCHEME_VERSION = "1"
SCHEME_RESPONSIBLE_ORGANIZATION = "tsc-epilepsy-outcome open-source project"


def _code(value: str, meaning: str) -> Code:
    return Code(value=value, scheme_designator=SCHEME_DESIGNATOR, meaning=meaning)


#: Finding type of the prediction measurement groups.
ASM_OUTCOME_PROGNOSIS = _code("TSCEO001", "One-year antiseizure medication outcome prognosis")
#: Concept name of the probability measurements (value in [0, 1], UCUM "1").
PROBABILITY_UNCONTROLLED = _code("TSCEO002", "Probability of uncontrolled epilepsy at one year")
#: Concept name of the predicted class (a qualitative evaluation).
PREDICTED_OUTCOME = _code("TSCEO003", "Predicted one-year seizure outcome")
#: Values of :data:`PREDICTED_OUTCOME`.
UNCONTROLLED = _code("TSCEO004", "Seizures uncontrolled after one year of antiseizure medication")
CONTROLLED = _code("TSCEO005", "Seizures controlled after one year of antiseizure medication")
#: Text items naming ensemble members used / left out.
ENSEMBLE_MEMBER_USED = _code("TSCEO006", "Ensemble member used")
ENSEMBLE_MEMBER_NOT_USED = _code("TSCEO007", "Ensemble member not used")
#: Text items: preprocessing quality notes and method.
QUALITY_NOTE = _code("TSCEO008", "Image analysis quality note")
BRAIN_EXTRACTION_METHOD = _code("TSCEO009", "Brain extraction method")
REGISTRATION_METRIC = _code("TSCEO010", "T2 to FLAIR registration metric")
#: Text items: the Series Instance UIDs analysed, by role.
ANALYSED_T2_SERIES = _code("TSCEO011", "Analysed T2-weighted series")
ANALYSED_FLAIR_SERIES = _code("TSCEO012", "Analysed FLAIR series")
#: Not-analysable report.
ANALYSIS_STATUS = _code("TSCEO013", "Analysis status")
NOT_ANALYSABLE = _code("TSCEO014", "Study could not be analysed")
REASON_NOT_ANALYSABLE = _code("TSCEO015", "Reason study could not be analysed")
FAILED_STAGE = _code("TSCEO016", "Processing stage that failed")
#: Text item: intended-use and model provenance statements.
USAGE_STATEMENT = _code("TSCEO017", "Usage statement")
#: Spread of the member probabilities (standard deviation).
MEMBER_AGREEMENT = _code("TSCEO018", "Spread of ensemble member probabilities")
#: Decision threshold applied to the fused probability.
DECISION_THRESHOLD = _code("TSCEO019", "Decision threshold")
#: Text items for readers (operators.report_wording): the result in one sentence,
#: the verbal confidence category, what the threshold and calibration mean, the
#: other ensembles, the intended-use check, degraded modes and clinical inputs.
RESULT_SUMMARY = _code("TSCEO020", "Result summary")
CONFIDENCE_CATEGORY = _code("TSCEO021", "Confidence category")
THRESHOLD_MEANING = _code("TSCEO022", "Meaning of the decision threshold")
CALIBRATION_STATEMENT = _code("TSCEO023", "Calibration of the probabilities")
OTHER_ENSEMBLE_RESULT = _code("TSCEO024", "Result of another ensemble")
INTENDED_USE_CHECK = _code("TSCEO025", "Intended-use check")
DEGRADED_MODE = _code("TSCEO026", "Degraded analysis mode")
CLINICAL_INPUT = _code("TSCEO027", "Clinical input used")

ALL_CODES: tuple[Code, ...] = (
    ASM_OUTCOME_PROGNOSIS, PROBABILITY_UNCONTROLLED, PREDICTED_OUTCOME, UNCONTROLLED,
    CONTROLLED, ENSEMBLE_MEMBER_USED, ENSEMBLE_MEMBER_NOT_USED, QUALITY_NOTE,
    BRAIN_EXTRACTION_METHOD, REGISTRATION_METRIC, ANALYSED_T2_SERIES, ANALYSED_FLAIR_SERIES,
    ANALYSIS_STATUS, NOT_ANALYSABLE, REASON_NOT_ANALYSABLE, FAILED_STAGE, USAGE_STATEMENT,
    MEMBER_AGREEMENT, DECISION_THRESHOLD, RESULT_SUMMARY, CONFIDENCE_CATEGORY, THRESHOLD_MEANING,
    CALIBRATION_STATEMENT, OTHER_ENSEMBLE_RESULT, INTENDED_USE_CHECK, DEGRADED_MODE, CLINICAL_INPUT,
)


def coding_scheme_identification_item() -> Dataset:
    """One item of the Coding Scheme Identification Sequence (0008,0110) for this scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME_DESIGNATOR
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeVersion = SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = SCHEME_RESPONSIBLE_ORGANIZATION
    return item


def declare_private_scheme(dataset: Dataset) -> None:
    """Add this scheme to ``dataset``'s Coding Scheme Identification Sequence (idempotent)."""
    sequence = list(dataset.get("CodingSchemeIdentificationSequence", []))
    if not any(i.get("CodingSchemeDesignator") == SCHEME_DESIGNATOR for i in sequence):
        sequence.append(coding_scheme_identification_item())
    dataset.CodingSchemeIdentificationSequence = sequence
