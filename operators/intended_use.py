"""The intended-use gate: is this study within the population the model set was made for?

The model set's manifest declares its intended population
(:class:`IntendedPopulation`: an age range in years and the series it needs).
:func:`check_intended_use` reads the age at imaging from the study's DICOM
headers (``StudyDate - PatientBirthDate``, else ``PatientAge``) and raises
:class:`IntendedUseError` (a not-analysable result, exit code 2) for a study
outside it, with a reason a reader understands, e.g. "age 56 years is outside
the intended use, 0-18 years".

Rules (also in docs/outputs.md):

* The age range is inclusive and in exact years (days / 365.25 or the
  ``PatientAge`` value): a child of 18 years and 3 months is outside 0-18.
* **Unknown age is refused** by default: the gate exists to keep the models away
  from patients they were not made for, and an age that cannot be read cannot
  be checked; a paediatric model run on an unverified adult would still give a
  confident-looking number. A site whose de-identification strips both birth
  date and age may allow it in configuration (``intended_use.allow_unknown_age``).
* A site may **widen** the gate only in its configuration
  (:class:`SiteIntendedUse`, ``intended_use:`` in ``app/config.py``), with a
  stated reason; it can never narrow the required series. Every report of a
  study analysed under a widened gate says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from operators.errors import ClinicalDataError, PipelineError
from operators.lazy_operator import lazy_operator

logger = logging.getLogger(__name__)

DAYS_PER_YEAR = 365.25
SERIES_ROLES = ("T2", "FLAIR")


class IntendedUseError(PipelineError):
    """The study is outside the model set's intended use."""

    stage = "intended_use"


def _years(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class IntendedPopulation:
    """Who the model set is for.

    Attributes:
        min_age_years / max_age_years: Inclusive age range at imaging, in years.
        required_series: Series roles the analysis needs (``"T2"``, ``"FLAIR"``).
        declared: False when the manifest declares no population and these are
            the app's defaults (the reports then say so).
    """

    min_age_years: float = 0.0
    max_age_years: float = 18.0
    required_series: tuple[str, ...] = SERIES_ROLES
    declared: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_age_years) and math.isfinite(self.max_age_years)
                and 0 <= self.min_age_years <= self.max_age_years):
            raise ValueError(f"age range must satisfy 0 <= min <= max, got "
                             f"{self.min_age_years}..{self.max_age_years}")
        unknown = [r for r in self.required_series if r not in SERIES_ROLES]
        if unknown or not self.required_series:
            raise ValueError(f"required_series must be a non-empty subset of {list(SERIES_ROLES)}, "
                             f"got {list(self.required_series)}")

    @property
    def age_range(self) -> str:
        """E.g. ``"0-18 years"``."""
        return f"{_years(self.min_age_years)}-{_years(self.max_age_years)} years"

    def describe(self) -> str:
        """One line for reports."""
        series = " and ".join(self.required_series)
        text = f"age at imaging {self.age_range}; needs {series} MRI"
        return text if self.declared else text + " (app default: the model set declares no population)"

    def as_dict(self) -> dict[str, Any]:
        """The manifest form (``intended_population``)."""
        return {"age_years": {"min": self.min_age_years, "max": self.max_age_years},
                "required_series": list(self.required_series)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IntendedPopulation":
        """Parse the manifest form.

        Raises:
            ValueError: Missing or invalid field (the message names it).
        """
        if not isinstance(data, Mapping):
            raise ValueError("must be a mapping with age_years and required_series")
        unknown = sorted(set(data) - {"age_years", "required_series"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}")
        ages = data.get("age_years")
        if not isinstance(ages, Mapping) or set(ages) != {"min", "max"}:
            raise ValueError("age_years must be a mapping {min: <years>, max: <years>}")
        for key in ("min", "max"):
            if isinstance(ages[key], bool) or not isinstance(ages[key], (int, float)):
                raise ValueError(f"age_years.{key} must be a number, got {ages[key]!r}")
        series = data.get("required_series", list(SERIES_ROLES))
        if not isinstance(series, Sequence) or isinstance(series, str):
            raise ValueError(f"required_series must be a list, got {series!r}")
        return cls(float(ages["min"]), float(ages["max"]), tuple(str(s) for s in series))


@dataclass(frozen=True)
class SiteIntendedUse:
    """A site's widening of the gate (configuration ``intended_use:``).

    Attributes:
        min_age_years / max_age_years: Widened age bounds (None: the manifest's).
        allow_unknown_age: Analyse studies whose age cannot be read.
        reason: Why the site widened the gate (required; printed in every report).
    """

    min_age_years: float | None = None
    max_age_years: float | None = None
    allow_unknown_age: bool = False
    reason: str = ""

    def statement(self) -> str:
        """What the widening is, for reports that do not know the model set's population ("" if none)."""
        if not self.widens:
            return ""
        changes = [f"{label} {_years(value)} years" for label, value in
                   (("minimum age", self.min_age_years), ("maximum age", self.max_age_years)) if value is not None]
        if self.allow_unknown_age:
            changes.append("studies of unknown age allowed")
        return f"Site configuration widens the intended use ({'; '.join(changes)}): {self.reason}"

    @property
    def widens(self) -> bool:
        return (self.min_age_years is not None or self.max_age_years is not None
                or self.allow_unknown_age)

    def apply(self, population: IntendedPopulation) -> IntendedPopulation:
        """The population after widening.

        Raises:
            ValueError: The configuration would narrow the manifest's range.
        """
        low = population.min_age_years if self.min_age_years is None else self.min_age_years
        high = population.max_age_years if self.max_age_years is None else self.max_age_years
        if low > population.min_age_years or high < population.max_age_years:
            raise ValueError(f"intended_use may only widen the model set's age range "
                             f"{population.age_range}, got {_years(low)}-{_years(high)} years")
        return IntendedPopulation(low, high, population.required_series, population.declared)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SiteIntendedUse":
        """Parse the configuration form.

        Raises:
            ValueError: Unknown key, wrong type, or widening without a reason.
        """
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("must be a mapping")
        known = {"min_age_years", "max_age_years", "allow_unknown_age", "reason"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for key in ("min_age_years", "max_age_years"):
            value = data.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{key} must be a non-negative number of years, got {value!r}")
                kwargs[key] = float(value)
        if "allow_unknown_age" in data:
            if not isinstance(data["allow_unknown_age"], bool):
                raise ValueError(f"allow_unknown_age must be true or false, got {data['allow_unknown_age']!r}")
            kwargs["allow_unknown_age"] = data["allow_unknown_age"]
        kwargs["reason"] = str(data.get("reason") or "").strip()
        site = cls(**kwargs)
        if site.widens and not site.reason:
            raise ValueError("a widened intended use needs a 'reason' (it is printed in every report)")
        return site


@dataclass(frozen=True)
class IntendedUseCheck:
    """The gate's decision for one analysed study (for the reports).

    Attributes:
        population: The model set's declared population.
        applied: The population the study was checked against (after site widening).
        age_years: Age at imaging, None when unknown.
        age_source: Where the age came from (DICOM attribute names; no values).
        site_statements: What the site's configuration changed, for every report.
    """

    population: IntendedPopulation
    applied: IntendedPopulation
    age_years: float | None
    age_source: str
    site_statements: tuple[str, ...] = field(default_factory=tuple)

    def statements(self) -> list[str]:
        """Lines for the reports: the population, the age checked, any site widening."""
        age = ("age unknown" if self.age_years is None
               else f"age {format_age_years(self.age_years)} ({self.age_source})")
        return [f"Intended population: {self.population.describe()}; this study: {age}.",
                *self.site_statements]


def format_age_years(years: float) -> str:
    """A reader's age: ``"56 years"``, ``"3.5 years"``, ``"7 months"``."""
    if years < 2:
        months = years * 12
        return f"{months:.0f} months" if months >= 1 else f"{years * DAYS_PER_YEAR:.0f} days"
    return f"{years:.0f} years" if years >= 10 else f"{years:.1f} years"


def _study_age_years(dataset: Dataset | None) -> tuple[float | None, str]:
    from operators.clinical_data import DAYS_PER_MONTH, dicom_age_months

    if dataset is None:
        return None, "no DICOM instance to read it from"
    try:
        months, source = dicom_age_months(dataset)
    except ClinicalDataError as exc:
        return None, exc.reason
    return months * DAYS_PER_MONTH / DAYS_PER_YEAR, source


def check_intended_use(dataset: Dataset | None, population: IntendedPopulation,
                       site: SiteIntendedUse | None = None) -> IntendedUseCheck:
    """Check one study against the intended population.

    Args:
        dataset: Any instance of the study (patient and study attributes).
        population: The model set's declared population.
        site: The site's widening, if configured.

    Returns:
        The decision, with the statements every report carries.

    Raises:
        IntendedUseError: Age outside the range, or unknown and not allowed.
        ValueError: ``site`` would narrow the range.
    """
    site = site or SiteIntendedUse()
    applied = site.apply(population)
    statements: list[str] = []
    if site.widens:
        changes = []
        if (applied.min_age_years, applied.max_age_years) != (population.min_age_years,
                                                               population.max_age_years):
            changes.append(f"age range widened to {applied.age_range}")
        if site.allow_unknown_age:
            changes.append("studies of unknown age allowed")
        statements.append(f"Site configuration widened the intended use ({'; '.join(changes)}) "
                          f"beyond the model set's {population.age_range}: {site.reason}")
    age, source = _study_age_years(dataset)
    if age is None:
        if not site.allow_unknown_age:
            raise IntendedUseError(
                f"age at imaging unknown ({source}); the intended use is {population.age_range} "
                "and a study whose age cannot be checked is not analysed")
        logger.warning("intended-use gate: age unknown, allowed by site configuration")
    else:
        rounded = round(age, 6)
        if not applied.min_age_years <= rounded <= applied.max_age_years:
            raise IntendedUseError(
                f"age {format_age_years(age)} is outside the intended use, {applied.age_range}"
                + ("" if applied == population else f" (site-widened from {population.age_range})"))
        if not population.min_age_years <= rounded <= population.max_age_years:
            statements.append(f"This study's age is outside the model set's {population.age_range} and "
                              "was analysed only because the site widened the intended use.")
    logger.info("intended-use gate passed (age %s, site widened: %s)",
                "unknown" if age is None else "known", site.widens)
    return IntendedUseCheck(population, applied, age, source if age is not None else "unknown",
                            tuple(statements))


def _operator_class() -> type:
    from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec

    class IntendedUseGateOperator(Operator):
        """Stops a study outside the model set's intended use before any heavy stage.

        Named input:
            study: ``operators.dicom_loading.LoadedStudy``.

        Named outputs:
            study: the same study, passed on when it is within the intended use.
            intended_use: :class:`IntendedUseCheck` (for the reports).

        Raises :class:`IntendedUseError` (the study is not analysable) otherwise.
        """

        def __init__(self, fragment: Fragment, *args: Any, population: IntendedPopulation,
                     site: SiteIntendedUse | None = None, **kwargs: Any) -> None:
            """Create the operator.

            Args:
                fragment: The application.
                population: The model set's intended population.
                site: The site's widening from the configuration.
            """
            self.population = population
            self.site = site or SiteIntendedUse()
            self.site.apply(population)  # a narrowing configuration fails at start-up
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("study")
            spec.output("study")
            spec.output("intended_use").condition(ConditionType.NONE)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            study = op_input.receive("study")
            check = check_intended_use(study.first_dataset(), self.population, self.site)
            op_output.emit(study, "study")
            op_output.emit(check, "intended_use")

    return IntendedUseGateOperator


__getattr__ = lazy_operator(globals(), "IntendedUseGateOperator", _operator_class)
