"""The intended-use gate: age range, unknown age, site widening, manifest and configuration forms."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from app.config import ConfigurationError, app_config_from_dict
from operators.intended_use import (
    IntendedPopulation,
    IntendedUseError,
    SiteIntendedUse,
    check_intended_use,
    format_age_years,
)


def study(*, birth: str | None = "20200102", date: str | None = "20240105", age: str | None = None) -> Dataset:
    ds = Dataset()
    if birth:
        ds.PatientBirthDate = birth
    if date:
        ds.StudyDate = date
    if age:
        ds.PatientAge = age
    return ds


def test_child_within_the_range_passes_and_says_so():
    check = check_intended_use(study(), IntendedPopulation())
    assert check.age_years == pytest.approx(4.0, abs=0.01)
    assert check.age_source == "DICOM PatientBirthDate and StudyDate"
    (line,) = check.statements()
    assert "age at imaging 0-18 years; needs T2 and FLAIR MRI" in line and "age 4.0 years" in line


def test_adult_is_refused_with_the_age_and_the_range():
    with pytest.raises(IntendedUseError) as info:
        check_intended_use(study(birth="19680105"), IntendedPopulation())
    assert info.value.reason == "age 56 years is outside the intended use, 0-18 years"
    assert info.value.stage == "intended_use"


def test_patient_age_is_used_without_dates_and_the_upper_bound_is_inclusive():
    assert check_intended_use(study(birth=None, age="018Y"), IntendedPopulation()).age_years == 18
    with pytest.raises(IntendedUseError, match="age 19 years"):
        check_intended_use(study(birth=None, age="019Y"), IntendedPopulation())


def test_unknown_age_is_refused_unless_the_site_allows_it():
    with pytest.raises(IntendedUseError, match="age at imaging unknown"):
        check_intended_use(study(birth=None), IntendedPopulation())
    site = SiteIntendedUse(allow_unknown_age=True, reason="de-identified research archive")
    check = check_intended_use(study(birth=None), IntendedPopulation(), site)
    assert check.age_years is None
    assert any("studies of unknown age allowed" in s and "de-identified research archive" in s
               for s in check.statements())


def test_site_widening_is_reported_and_cannot_narrow():
    site = SiteIntendedUse(max_age_years=25, reason="young-adult follow-up study")
    check = check_intended_use(study(birth="20040105"), IntendedPopulation(), site)
    statements = " ".join(check.statements())
    assert "age range widened to 0-25 years" in statements and "young-adult follow-up study" in statements
    assert "analysed only because the site widened" in statements
    with pytest.raises(IntendedUseError, match=r"site-widened from 0-18 years"):
        check_intended_use(study(birth="19900105"), IntendedPopulation(), site)
    with pytest.raises(ValueError, match="may only widen"):
        SiteIntendedUse(max_age_years=12, reason="x").apply(IntendedPopulation())


def test_configuration_form_needs_a_reason_and_known_keys():
    config = app_config_from_dict({"intended_use": {"max_age_years": 21, "reason": "protocol 7"}})
    assert config.intended_use == SiteIntendedUse(max_age_years=21.0, reason="protocol 7")
    with pytest.raises(ConfigurationError, match="needs a 'reason'"):
        app_config_from_dict({"intended_use": {"max_age_years": 21}})
    with pytest.raises(ConfigurationError, match="unknown key"):
        app_config_from_dict({"intended_use": {"max_age": 21, "reason": "x"}})


def test_manifest_form_round_trips_and_is_validated():
    population = IntendedPopulation(0, 18, ("T2", "FLAIR"))
    assert IntendedPopulation.from_dict(population.as_dict()) == population
    with pytest.raises(ValueError, match="age_years"):
        IntendedPopulation.from_dict({"age_years": [0, 18]})
    with pytest.raises(ValueError, match="required_series"):
        IntendedPopulation.from_dict({"age_years": {"min": 0, "max": 18}, "required_series": ["DWI"]})
    with pytest.raises(ValueError, match="0 <= min <= max"):
        IntendedPopulation(10, 5)


def test_demo_model_set_declares_its_population():
    from pathlib import Path

    from operators.model_manifest import load_model_set

    models = Path(__file__).resolve().parents[2] / "models"
    population = load_model_set(models, verify_checksums=False).intended_population
    assert population.declared and population.age_range == "0-18 years"


@pytest.mark.parametrize("years, text", [(56.2, "56 years"), (3.46, "3.5 years"), (0.6, "7 months"),
                                         (0.01, "4 days")])
def test_ages_read_naturally(years, text):
    assert format_age_years(years) == text


def test_not_analysable_sr_also_says_the_site_widened_the_gate(tmp_path):
    import pydicom

    from operators.errors import SeriesSelectionError
    from operators.sr_reader import read_result_sr
    from operators.study_outputs import write_not_analysable_outputs
    from tests.output_fixtures import StudyHeader, make_selected

    site = SiteIntendedUse(max_age_years=21, allow_unknown_age=True, reason="protocol 7")
    assert site.statement() == ("Site configuration widens the intended use (maximum age 21 years; "
                                "studies of unknown age allowed): protocol 7")
    assert SiteIntendedUse().statement() == ""
    datasets = make_selected(StudyHeader(), slices=1)[0].datasets
    written = write_not_analysable_outputs(tmp_path, SeriesSelectionError("No FLAIR series"), datasets,
                                           intended_use_statements=[site.statement()])
    reported = read_result_sr(pydicom.dcmread(written.not_analysable_sr))
    assert reported.intended_use_checks == [site.statement()]
