"""A study that fails after selection gets a not-analysable SR that still names the series chosen."""

from __future__ import annotations

from pathlib import Path

import pydicom

from app.config import AppConfig
from app.pipeline import write_not_analysable
from operators.dicom_loading import scan_folder, study_from_folder
from operators.errors import PreprocessingError
from operators.series_selection import select_series
from operators.sr_reader import read_result_sr
from synthetic import StudyOptions, generate_study


def test_not_analysable_sr_of_the_command_line_names_the_selected_series(tmp_path: Path) -> None:
    study = generate_study(tmp_path / "studies", 4244, StudyOptions(flair_matrix=(96, 96), t2_matrix=(96, 96),
                                                                    decoys=False))
    folder = scan_folder(study.input_dir)
    selection = select_series(study_from_folder(folder))
    error = PreprocessingError("registration did not converge")
    (sr_path,) = write_not_analysable(study.input_dir, tmp_path / "out", error, AppConfig(), folder=folder,
                                      selected_series=[selection.t2, selection.flair])
    outcome = read_result_sr(pydicom.dcmread(sr_path))
    assert not outcome.analysed and outcome.failed_stage == "preprocessing"
    assert outcome.t2_series_uid == selection.t2.series_instance_uid
    assert outcome.flair_series_uid == selection.flair.series_instance_uid
