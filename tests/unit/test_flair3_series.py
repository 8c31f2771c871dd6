"""Unit tests of the FLAIR3 derived MR series (operators.flair3_series)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from operators.datatypes import Role
from operators.errors import OutputError
from operators.flair3_series import PIXEL_SCALE, build_flair3_series
from tests.output_fixtures import NON_ASCII_NAME, StudyHeader, make_preprocessed, make_selected


def _round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.fixture(scope="module")
def built():
    study = StudyHeader(patient_name=NON_ASCII_NAME)
    selected = make_selected(study, slices=5)
    preprocessed = make_preprocessed(selected)
    instances = [_round_trip(ds) for ds in build_flair3_series(preprocessed, selected)]
    return study, {s.role: s for s in selected}, preprocessed, instances


def test_one_instance_per_flair_slice_on_the_flair_grid(built):
    _, by_role, _, instances = built
    flair = by_role[Role.FLAIR].datasets
    assert len(instances) == len(flair)
    for ds, source in zip(instances, flair):
        assert np.allclose(ds.ImagePositionPatient, source.ImagePositionPatient, atol=1e-4)
        assert np.allclose(ds.ImageOrientationPatient, source.ImageOrientationPatient)
        assert np.allclose(ds.PixelSpacing, source.PixelSpacing)
        assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert [ds.InstanceNumber for ds in instances] == list(range(1, len(flair) + 1))


def test_pixels_are_flair3_scaled(built):
    _, _, preprocessed, instances = built
    expected = sitk.GetArrayFromImage(preprocessed.flair3)
    stored = np.stack([ds.pixel_array for ds in instances]).astype(float) / PIXEL_SCALE
    assert np.allclose(stored, expected, atol=0.5 / PIXEL_SCALE)
    brain = stored[sitk.GetArrayFromImage(preprocessed.brain_mask) > 0] * PIXEL_SCALE
    for ds in instances:
        assert brain.min() <= ds.WindowCenter <= brain.max()
        assert 0 < ds.WindowWidth <= brain.max() - brain.min() + 1


def test_derived_marking_and_source_references(built):
    _, by_role, _, instances = built
    flair_uids = [d.SOPInstanceUID for d in by_role[Role.FLAIR].datasets]
    t2_uids = [d.SOPInstanceUID for d in by_role[Role.T2].datasets]
    for index, ds in enumerate(instances):
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert "FLAIR^1.55" in ds.DerivationDescription
        assert {c.CodeValue for c in ds.DerivationCodeSequence} == {"113053", "113085", "113047"}
        referenced = [r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence]
        # Identity registration and T2 slices at the FLAIR positions: one of each.
        assert referenced == [flair_uids[index], t2_uids[index]]
        assert ds.get("EchoTime") is None and ds.get("RepetitionTime") is None


def test_same_study_new_series_and_non_ascii_name(built):
    study, by_role, _, instances = built
    series_uids = {ds.SeriesInstanceUID for ds in instances}
    assert len(series_uids) == 1
    assert series_uids.isdisjoint({s.series_instance_uid for s in by_role.values()})
    assert len({ds.SOPInstanceUID for ds in instances}) == len(instances)
    for ds in instances:
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == NON_ASCII_NAME


def test_t2_references_follow_the_registration():
    selected = make_selected(StudyHeader(), slices=5)
    preprocessed = make_preprocessed(selected)
    shifted = sitk.TranslationTransform(3, (0.0, 0.0, 6.0))  # FLAIR point -> T2 point 6 mm higher
    preprocessed.t2_to_flair = shifted
    instances = build_flair3_series(preprocessed, selected)
    t2_uids = [d.SOPInstanceUID for d in selected[0].datasets]
    for index, ds in enumerate(instances[:-1]):
        assert [r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence][1:] == [t2_uids[index + 1]]
    assert len(instances[-1].SourceImageSequence) == 1  # maps above the T2 stack


def test_refuses_flair3_off_the_flair_grid():
    selected = make_selected(StudyHeader())
    preprocessed = make_preprocessed(selected)
    rotated = sitk.Image(preprocessed.flair3)
    rotated.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    preprocessed.flair3 = rotated
    with pytest.raises(OutputError, match="orientation"):
        build_flair3_series(preprocessed, selected)
    with pytest.raises(OutputError, match="No FLAIR"):
        build_flair3_series(make_preprocessed(selected), [selected[0]])
