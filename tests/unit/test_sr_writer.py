"""Unit tests of the TID 1500 result SR and the not-analysable SR (operators.sr_writer)."""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage

from operators import private_codes as pc
from operators.datatypes import Role
from operators.errors import QualityCheckError, SeriesSelectionError
from operators.sr_reader import read_result_sr
from operators.sr_writer import (
    RESEARCH_USE_TEXT,
    SYNTHETIC_MODELS_TEXT,
    AppIdentity,
    build_not_analysable_sr,
    build_result_sr,
    device_observer_uid,
)
from tests.output_fixtures import (
    NON_ASCII_NAME,
    StudyHeader,
    make_prediction,
    make_preprocessed,
    make_selected,
)


def _round_trip(sr: pydicom.Dataset) -> pydicom.Dataset:
    buffer = BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _texts(ds: pydicom.Dataset) -> list[str]:
    out = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        out.extend(_texts(item))
    return out


@pytest.fixture(scope="module")
def analysed():
    study = StudyHeader(patient_name=NON_ASCII_NAME)
    selected = make_selected(study)
    prediction = make_prediction()
    preprocessed = make_preprocessed(selected)
    sr = build_result_sr(prediction, selected, preprocessed, app=AppIdentity(version="1.2.3"))
    return study, selected, prediction, preprocessed, _round_trip(sr)


def test_result_sr_reads_back_the_pipeline_values(analysed):
    _, selected, prediction, preprocessed, ds = analysed
    reported = read_result_sr(ds)

    assert reported.analysed
    # values are rounded to the precision the reports print (3 decimals)
    assert reported.ensemble_probabilities == {prediction.ensemble: round(prediction.fused_score, 3)}
    assert reported.threshold == pytest.approx(prediction.threshold)
    assert reported.member_spread == round(prediction.agreement["member_sd"], 3)
    assert reported.predicted_uncontrolled is prediction.predicted_uncontrolled
    used = [m for m in prediction.members if m.used]
    assert reported.member_probabilities == {m.name: round(m.score, 3) for m in used}
    assert reported.members_used == [m.name for m in used]
    assert reported.members_not_used == {m.name: m.reason_left_out
                                         for m in prediction.members if not m.used}
    assert reported.brain_volume_ml == round(preprocessed.brain_volume_ml)
    assert reported.brain_extraction_method == preprocessed.brain_extraction_method
    assert len(reported.quality_notes) == len(preprocessed.flags)
    assert reported.quality_notes[0].startswith("[warning]")  # most severe first
    assert all(f.code in " ".join(reported.quality_notes) for f in preprocessed.flags)
    assert any(n.startswith("Members left out, weights renormalised") for n in reported.degraded_modes)
    assert reported.confidence_category == "consistent"
    assert reported.result_summary.startswith("WAE-Net (primary ensemble): uncontrolled")
    assert "Fused probability 0.713" in reported.result_summary
    assert "calibration=platt slope 1.2 intercept 0.1" in _texts(ds)  # the member's algorithm parameters


def test_result_sr_references_exactly_the_analysed_instances(analysed):
    _, selected, _, _, ds = analysed
    reported = read_result_sr(ds)
    by_role = {s.role: s for s in selected}

    assert reported.t2_series_uid == by_role[Role.T2].series_instance_uid
    assert reported.flair_series_uid == by_role[Role.FLAIR].series_instance_uid
    assert reported.evidence_series_uids == {s.series_instance_uid for s in selected}
    expected_sops = [d.SOPInstanceUID for role in (Role.T2, Role.FLAIR)
                     for d in by_role[role].datasets]
    # the library names each analysed series once; the evidence lists every instance
    assert reported.image_library_sop_uids == [by_role[role].datasets[0].SOPInstanceUID
                                               for role in (Role.T2, Role.FLAIR)]
    evidence_sops = {sop.ReferencedSOPInstanceUID
                     for study in ds.CurrentRequestedProcedureEvidenceSequence
                     for series in study.ReferencedSeriesSequence
                     for sop in series.ReferencedSOPSequence}
    assert evidence_sops == set(expected_sops)


def test_result_sr_header_flags_study_and_equipment(analysed):
    study, selected, prediction, _, ds = analysed
    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert ds.Modality == "SR"
    assert ds.StudyInstanceUID == study.study_uid
    assert ds.SeriesInstanceUID not in {s.series_instance_uid for s in selected}
    assert (ds.PreliminaryFlag, ds.VerificationFlag, ds.CompletionFlag) == (
        "PRELIMINARY", "UNVERIFIED", "COMPLETE")
    assert ds.AccessionNumber == "ACC001"
    app_items = [i for i in ds.ContributingEquipmentSequence
                 if i.Manufacturer == AppIdentity().manufacturer]
    assert len(app_items) == 1
    assert app_items[0].SoftwareVersions == "1.2.3"
    assert app_items[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    schemes = {i.CodingSchemeDesignator: i for i in ds.CodingSchemeIdentificationSequence}
    assert schemes[pc.SCHEME_DESIGNATOR].CodingSchemeName == pc.SCHEME_NAME
    assert read_result_sr(ds).device_observer_uid == device_observer_uid(prediction)


def test_non_ascii_patient_name_round_trips_unchanged(analysed):
    _, _, _, _, ds = analysed
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == NON_ASCII_NAME
    again = _round_trip(ds)
    assert str(again.PatientName) == NON_ASCII_NAME


def test_usage_statements_depend_on_synthetic_models():
    study = StudyHeader()
    selected = make_selected(study)
    synthetic = read_result_sr(_round_trip(build_result_sr(make_prediction(synthetic=True), selected)))
    clinical = read_result_sr(_round_trip(build_result_sr(make_prediction(synthetic=False), selected)))
    assert synthetic.usage_statements == [RESEARCH_USE_TEXT, SYNTHETIC_MODELS_TEXT]
    assert clinical.usage_statements == [RESEARCH_USE_TEXT]


def test_controlled_class_below_threshold():
    selected = make_selected(StudyHeader())
    prediction = make_prediction(fused=0.31, left_out=False)
    reported = read_result_sr(_round_trip(build_result_sr(prediction, selected)))
    assert reported.predicted_uncontrolled is False
    assert reported.members_not_used == {}
    assert reported.ensemble_probabilities["WAE-Net"] == pytest.approx(0.31)


def test_other_ensembles_are_reported():
    selected = make_selected(StudyHeader())
    prediction = make_prediction()
    other = replace(make_prediction(fused=0.42), ensemble="eTSC-Net")
    prediction.other_ensembles = {"eTSC-Net": other}
    reported = read_result_sr(_round_trip(build_result_sr(prediction, selected)))
    assert reported.ensemble_probabilities == {"WAE-Net": round(prediction.fused_score, 3),
                                               "eTSC-Net": pytest.approx(0.42)}


def test_device_uid_changes_with_the_model_set():
    prediction = make_prediction()
    assert device_observer_uid(prediction) == device_observer_uid(make_prediction())
    changed = replace(prediction, model_set_version="demo-0.2.0")
    assert device_observer_uid(changed) != device_observer_uid(prediction)
    assert device_observer_uid(prediction).startswith("2.25.")
    hashed = replace(prediction, model_set_identity="a" * 64)
    assert device_observer_uid(hashed) != device_observer_uid(prediction)
    assert device_observer_uid(replace(hashed, model_set_version="other")) == device_observer_uid(hashed)


def test_not_analysable_without_selection_states_why():
    study = StudyHeader(patient_name=NON_ASCII_NAME)
    t2_only = make_selected(study)[0].datasets
    error = SeriesSelectionError("No FLAIR series among 1 series (series 3: no inversion time)")
    ds = _round_trip(build_not_analysable_sr(error, t2_only))
    reported = read_result_sr(ds)

    assert reported.analysed is False
    assert reported.reason == error.reason
    assert reported.failed_stage == "series_selection"
    assert reported.image_library_sop_uids == []
    assert reported.t2_series_uid is None and reported.flair_series_uid is None
    assert reported.evidence_series_uids == {t2_only[0].SeriesInstanceUID}
    assert reported.usage_statements == [RESEARCH_USE_TEXT]
    assert str(ds.PatientName) == NON_ASCII_NAME
    assert ds.StudyInstanceUID == study.study_uid
    assert (ds.PreliminaryFlag, ds.VerificationFlag) == ("PRELIMINARY", "UNVERIFIED")


def test_not_analysable_after_selection_names_the_series():
    study = StudyHeader()
    selected = make_selected(study)
    flags = make_preprocessed(selected).flags
    error = QualityCheckError("Brain volume 120 ml outside 400-2000 ml")
    reported = read_result_sr(_round_trip(build_not_analysable_sr(
        error, [], selected_series=selected, quality_flags=flags)))
    assert reported.failed_stage == "quality_check"
    assert reported.t2_series_uid == selected[0].series_instance_uid
    assert reported.flair_series_uid == selected[1].series_instance_uid
    assert reported.image_library_sop_uids == [s.datasets[0].SOPInstanceUID for s in selected]
    assert len(reported.quality_notes) == len(flags)


def test_not_analysable_needs_a_source_instance():
    with pytest.raises(ValueError, match="No source instance"):
        build_not_analysable_sr(SeriesSelectionError("empty study"), [])


def test_private_codes_are_unique_and_fit_dicom_lengths():
    values = [c.value for c in pc.ALL_CODES]
    assert len(values) == len(set(values))
    assert all(len(c.value) <= 16 and len(c.meaning) <= 64 for c in pc.ALL_CODES)
    assert pc.SCHEME_DESIGNATOR.startswith("99") and len(pc.SCHEME_DESIGNATOR) <= 16


def test_every_container_is_separate_and_series_are_named(analysed):
    _, selected, _, _, ds = analysed

    def containers(items):
        for item in items:
            if item.ValueType == "CONTAINER":
                yield item
            yield from containers(item.get("ContentSequence", []))

    assert ds.ContinuityOfContent == "SEPARATE"
    assert {c.ContinuityOfContent for c in containers(ds.ContentSequence)} == {"SEPARATE"}
    texts = _texts(ds)
    t2 = selected[0].datasets[0]
    assert f'series {t2.SeriesNumber} "{t2.SeriesDescription}" ({len(selected[0].datasets)} images), ' \
        f'UID {t2.SeriesInstanceUID}' in texts
    assert ds.SeriesDate == ds.ContentDate and ds.SeriesTime == ds.ContentTime
    assert "RESEARCH" in ds.SeriesDescription and len(ds.SeriesDescription) <= 64


def test_statements_carry_intended_use_and_clinical_inputs():
    from operators.datatypes import ClinicalData, ClinicalValue
    from operators.intended_use import IntendedPopulation, SiteIntendedUse, check_intended_use

    selected = make_selected(StudyHeader())
    site = SiteIntendedUse(max_age_years=21, reason="local research protocol 42")
    check = check_intended_use(selected[0].datasets[0], IntendedPopulation(), site)
    clinical = ClinicalData(ClinicalValue("age_at_onset_months", 5.0, "clinical.json"),
                            ClinicalValue("age_at_imaging_months", 48.0, "DICOM PatientAge"),
                            ClinicalValue("infantile_spasms", 1.0, "clinical.json"),
                            ClinicalValue("asm_count_ge_3", 0.0, "clinical.json"))
    reported = read_result_sr(_round_trip(build_result_sr(make_prediction(), selected, clinical=clinical,
                                                          intended_use=check)))
    assert any("0-18 years" in line and "age 4.0 years" in line for line in reported.intended_use_checks)
    assert any("widened" in line and "local research protocol 42" in line
               for line in reported.intended_use_checks)
    assert "Infantile spasms: yes (source: clinical.json)" in reported.clinical_inputs
