"""Clinical variables: DICOM age at imaging, clinical.json v1, site lookup CSV, validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydicom import Dataset

from operators.clinical_data import (SiteLookupTable, age_at_imaging_months, build_clinical_data,
                                     find_clinical_file, load_clinical_file, parse_clinical_json)
from operators.errors import ClinicalDataError

GOOD = {"format": "tsc-clinical/1", "accession_number": "ACC123", "age_at_seizure_onset_months": 14.0,
        "infantile_spasms": True, "asm_count_ge_3": False}


def _ds(birth="20200115", study="20230115", age=None, accession="ACC123") -> Dataset:
    ds = Dataset()
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "PID-SECRET-42"
    if birth is not None:
        ds.PatientBirthDate = birth
    if study is not None:
        ds.StudyDate = study
    if age is not None:
        ds.PatientAge = age
    ds.AccessionNumber = accession
    return ds


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "clinical.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_age_from_birth_and_study_dates_takes_precedence_over_patient_age():
    v = age_at_imaging_months(_ds(age="010Y"))
    assert v.value == pytest.approx(36.0, abs=0.05)  # 3 years = 1096 days
    assert "PatientBirthDate" in v.source


@pytest.mark.parametrize("age,months", [("018M", 18.0), ("004Y", 48.0), ("026W", 26 * 7 / 30.4375),
                                        ("045D", 45 / 30.4375)])
def test_age_from_patient_age_when_dates_absent(age, months):
    v = age_at_imaging_months(_ds(birth=None, age=age))
    assert v.value == pytest.approx(months, abs=0.01) and v.source == "DICOM PatientAge"


@pytest.mark.parametrize("kwargs,match", [
    ({"birth": None, "study": None}, "no PatientBirthDate/StudyDate and no PatientAge"),
    ({"birth": None, "age": "4 years"}, "malformed"),
    ({"birth": "20240101", "study": "20230101"}, "after the study date"),
    ({"birth": "19900101", "study": "20230101"}, "outside 0..216"),
])
def test_unusable_age_is_an_error_without_the_dates(kwargs, match):
    with pytest.raises(ClinicalDataError, match=match) as err:
        age_at_imaging_months(_ds(**kwargs))
    assert "2024" not in str(err.value) and "1990" not in str(err.value)


def test_valid_clinical_json_gives_complete_vector(tmp_path):
    data = build_clinical_data(_ds(), clinical_file=_write(tmp_path, GOOD))
    assert data.missing_reason is None
    assert data.as_vector() == pytest.approx([14.0, 36.0, 1.0, 0.0], abs=0.05)
    assert data.infantile_spasms.source == "clinical.json"


@pytest.mark.parametrize("change,match", [
    ({"format": "tsc-clinical/2"}, "format"),
    ({"age_at_seizure_onset_months": None}, "missing age_at_seizure_onset_months"),
    ({"age_at_seizure_onset_months": "14"}, "must be a number"),
    ({"age_at_seizure_onset_months": -1}, "outside 0..216"),
    ({"infantile_spasms": "yes"}, "infantile_spasms must be true or false"),
    ({"asm_count_ge_3": 1}, "asm_count_ge_3 must be true or false"),
    ({"age_at_seizure_onset_months": 40.0}, "after the age at imaging"),
    ({"accession_number": "OTHER9"}, "does not match"),
])
def test_invalid_record_leaves_clinical_member_out_with_reason(tmp_path, change, match):
    record = {**GOOD, **change}
    data = build_clinical_data(_ds(), clinical_file=_write(tmp_path, record))
    assert data.as_vector() is None
    assert data.missing_reason and match in data.missing_reason
    assert data.age_at_imaging_months is not None  # what could be read is still reported


def test_not_json_and_missing_sources(tmp_path):
    data = build_clinical_data(_ds(), clinical_file=_write(tmp_path, "{not json"))
    assert "cannot be read as JSON" in data.missing_reason
    data = build_clinical_data(_ds())
    assert "no clinical data file" in data.missing_reason
    data = build_clinical_data(None, clinical_file=_write(tmp_path, GOOD))
    assert "no DICOM instance" in data.missing_reason and data.as_vector() is None


def test_onset_equal_to_imaging_age_is_accepted(tmp_path):
    data = build_clinical_data(_ds(), clinical_file=_write(tmp_path, {**GOOD, "age_at_seizure_onset_months": 36.0}))
    assert data.missing_reason is None


def test_site_lookup_table_keyed_by_accession(tmp_path):
    csv_path = tmp_path / "site.csv"
    csv_path.write_text(
        "accession_number,age_at_seizure_onset_months,infantile_spasms,asm_count_ge_3,note\n"
        "ACC123,6,yes,No,first\n"
        "ACC555,abc,yes,no,typo\n"
        "ACC777,3,maybe,no,bad flag\n"
        "ACC888,3,1,0,dup\n"
        "ACC888,4,1,0,dup\n")
    table = SiteLookupTable.from_csv(csv_path)
    assert len(table) == 4
    data = build_clinical_data(_ds(), lookup=table)
    assert data.missing_reason is None and data.as_vector() == pytest.approx([6.0, 36.0, 1.0, 0.0], abs=0.05)
    assert data.age_at_onset_months.source == "site.csv line 2"
    for acc, match in [("ACC555", "must be a number"), ("ACC777", "yes/no"), ("ACC888", "more than once"),
                       ("ACC000", "no record")]:
        data = build_clinical_data(_ds(accession=acc), lookup=table)
        assert data.as_vector() is None and match in data.missing_reason


def test_lookup_table_missing_column_is_a_configuration_error(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("accession_number,infantile_spasms\nA,1\n")
    with pytest.raises(ClinicalDataError, match="missing column"):
        SiteLookupTable.from_csv(p)


def test_clinical_file_is_preferred_over_lookup(tmp_path):
    csv_path = tmp_path / "site.csv"
    csv_path.write_text("accession_number,age_at_seizure_onset_months,infantile_spasms,asm_count_ge_3\n"
                        "ACC123,2,no,no\n")
    data = build_clinical_data(_ds(), clinical_file=_write(tmp_path, GOOD), lookup=SiteLookupTable.from_csv(csv_path))
    assert data.age_at_onset_months.value == 14.0


def test_find_clinical_file_top_level_or_single_nested(tmp_path):
    assert find_clinical_file(tmp_path) is None
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "clinical.json").write_text("{}")
    assert find_clinical_file(tmp_path) == nested / "clinical.json"
    (tmp_path / "a" / "clinical.json").write_text("{}")
    with pytest.raises(ClinicalDataError, match="2 clinical.json"):
        find_clinical_file(tmp_path)
    (tmp_path / "clinical.json").write_text("{}")
    assert find_clinical_file(tmp_path) == tmp_path / "clinical.json"


def test_logs_hold_no_patient_identifiers(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="operators.clinical_data")
    build_clinical_data(_ds(), clinical_file=_write(tmp_path, GOOD))
    build_clinical_data(_ds(), clinical_file=_write(tmp_path, {**GOOD, "age_at_seizure_onset_months": 99.0}))
    text = caplog.text
    assert caplog.records
    for secret in ("Müller", "PID-SECRET-42", "20200115", "ACC123"):
        assert secret not in text


def test_generated_study_clinical_file_parses(tmp_path):
    synthetic = pytest.importorskip("synthetic")
    if not hasattr(synthetic, "generate_study"):
        pytest.skip("synthetic.generate_study not available yet")
    import pydicom

    options = synthetic.StudyOptions(decoys=False, t2_matrix=(64, 64), flair_matrix=(64, 64), slices=8)
    study = synthetic.generate_study(tmp_path, seed=11, options=options)
    record = load_clinical_file(study.input_dir / "clinical.json")
    first = next(p for p in sorted(study.input_dir.rglob("*")) if p.is_file() and p.name != "clinical.json")
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    data = build_clinical_data(ds, clinical_file=study.input_dir / "clinical.json")
    assert data.missing_reason is None
    assert data.age_at_onset_months.value == pytest.approx(record.age_at_onset_months)
    truth = json.loads((study.truth_dir / "truth.json").read_text())
    assert data.age_at_imaging_months.value == pytest.approx(truth["clinical"]["age_at_imaging_days"] / 30.4375,
                                                             abs=0.01)
    assert parse_clinical_json(json.loads((study.input_dir / "clinical.json").read_text())) == record
