"""Unit tests of the output configuration and the study-outputs writer."""

from __future__ import annotations

import pydicom
import pytest

from operators.errors import QualityCheckError, SeriesSelectionError
from operators.output_config import OutputConfig, load_output_config, output_config_from_dict
from operators.study_outputs import write_not_analysable_outputs, write_study_outputs
from tests.output_fixtures import StudyHeader, make_prediction, make_preprocessed, make_selected


def test_defaults_and_flat_or_nested_mappings():
    assert output_config_from_dict(None) == OutputConfig()
    default = OutputConfig()
    assert (default.sr, default.not_analysable_sr, default.flair3_series, default.pdf) == (
        True, True, False, True)
    nested = output_config_from_dict({"outputs": {"flair3_series": True, "pdf": False}})
    assert nested.flair3_series and not nested.pdf and nested.sr
    assert output_config_from_dict({"sr_series_number": 7001}).sr_series_number == 7001


@pytest.mark.parametrize("values, message", [
    ({"pfd": False}, "Unknown output setting"),
    ({"sr": "yes"}, "must be true or false"),
    ({"pdf_series_number": 0}, "positive integer"),
    ({"pdf_series_number": 9001}, "must differ"),
])
def test_invalid_settings_are_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        output_config_from_dict(values)


def test_yaml_file_and_relative_model_card(tmp_path):
    (tmp_path / "card.md").write_text("Synthetic demo models.\n", encoding="utf-8")
    path = tmp_path / "outputs.yaml"
    path.write_text("outputs:\n  flair3_series: true\n  model_card_summary_file: card.md\n",
                    encoding="utf-8")
    config = load_output_config(path)
    assert config.flair3_series
    assert config.model_card_text() == "Synthetic demo models."
    assert load_output_config(None) == OutputConfig()


def test_all_outputs_written_when_enabled(tmp_path):
    selected = make_selected(StudyHeader(), slices=3)
    config = OutputConfig(flair3_series=True, pdf=True)
    written = write_study_outputs(tmp_path, make_prediction(), selected,
                                  make_preprocessed(selected), config=config)
    assert written.failures == {}
    assert len(written.flair3_series) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.paths())
    modalities = sorted(pydicom.dcmread(p).Modality for p in written.paths())
    assert modalities == ["DOC", "MR", "MR", "MR", "OT", "SR"]
    numbers = {pydicom.dcmread(p).Modality: pydicom.dcmread(p).SeriesNumber for p in written.paths()}
    assert numbers == {"SR": 9001, "MR": 9002, "DOC": 9003, "OT": 9004}
    for path in written.paths():  # every written object is listed by date in a PACS
        ds = pydicom.dcmread(path)
        assert ds.SeriesDate and ds.SeriesTime, ds.Modality


def test_only_sr_when_optional_outputs_off(tmp_path):
    selected = make_selected(StudyHeader(), slices=2)
    written = write_study_outputs(tmp_path, make_prediction(), selected, None,
                                  config=OutputConfig(pdf=False, flair3_series=False, result_page=False))
    assert written.paths() == [written.sr]
    assert written.failures == {}


def test_result_page_is_on_by_default_and_needs_no_images(tmp_path):
    selected = make_selected(StudyHeader(), slices=2)
    written = write_study_outputs(tmp_path, make_prediction(), selected, None,
                                  config=OutputConfig(pdf=False))
    assert OutputConfig().result_page
    assert written.failures == {}
    assert pydicom.dcmread(written.result_page).SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"


def test_optional_output_failure_keeps_the_sr(tmp_path):
    selected = make_selected(StudyHeader(), slices=2)
    written = write_study_outputs(tmp_path, make_prediction(), [selected[0]],  # no FLAIR
                                  make_preprocessed(selected),
                                  config=OutputConfig(flair3_series=True, pdf=False))
    assert written.sr is not None and written.sr.exists()
    assert "No FLAIR" in written.failures["flair3_series"]


def test_not_analysable_output_follows_config(tmp_path):
    datasets = make_selected(StudyHeader(), slices=1)[0].datasets
    error = SeriesSelectionError("No FLAIR series")
    written = write_not_analysable_outputs(tmp_path / "on", error, datasets)
    assert written.not_analysable_sr is not None
    assert pydicom.dcmread(written.not_analysable_sr).Modality == "SR"
    off = write_not_analysable_outputs(tmp_path / "off", QualityCheckError("x"), datasets,
                                       config=OutputConfig(not_analysable_sr=False))
    assert off.paths() == [] and not (tmp_path / "off").exists()
