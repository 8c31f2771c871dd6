"""Series -> volume: geometry from positions/orientation, voxel placement, and inconsistent series refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from operators.datatypes import Role, SelectedSeries, SelectionExplanation
from operators.dicom_loading import load_study, read_dicom
from operators.errors import VolumeConversionError
from operators.volume_conversion import list_stacks, series_to_volume
from tests.unit.mr_factory import ROOT, SeriesSpec, slice_positions, stored_values, t2_spec, write_series


def write(tmp_path: Path, spec: SeriesSpec, **kw: object) -> list[Path]:
    return write_series(tmp_path / f"s{spec.series_number}", spec, study_uid=generate_uid(prefix=ROOT),
                        frame_uid=generate_uid(prefix=ROOT), **kw)  # type: ignore[arg-type]


def convert(tmp_path: Path, spec: SeriesSpec, **kw: object) -> sitk.Image:
    paths = write(tmp_path, spec)
    return series_to_volume([read_dicom(p) for p in paths], paths, **kw).image  # type: ignore[arg-type]


def rotation(ax: float, az: float) -> np.ndarray:
    a, b = np.radians(ax), np.radians(az)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def assert_voxels_at_dicom_positions(image: sitk.Image, spec: SeriesSpec) -> None:
    """Every stored pixel sits where its slice's IPP/IOP/PixelSpacing put it, with its value."""
    positions = slice_positions(spec)
    iop = np.asarray(spec.iop, dtype=float)
    row_cos, col_cos = iop[:3], iop[3:]
    values = stored_values(len(positions), spec.rows, spec.cols) * spec.slope + spec.intercept
    array = sitk.GetArrayViewFromImage(image)
    for k in range(len(positions)):
        for r, c in [(0, 0), (spec.rows - 1, 0), (0, spec.cols - 1), (spec.rows - 1, spec.cols - 1), (3, 2)]:
            point = positions[k] + c * spec.pixel_spacing[1] * row_cos + r * spec.pixel_spacing[0] * col_cos
            index = image.TransformPhysicalPointToContinuousIndex(tuple(point))
            ijk = np.round(index).astype(int)
            np.testing.assert_allclose(index, ijk, atol=1e-6)
            assert array[ijk[2], ijk[1], ijk[0]] == pytest.approx(values[k, r, c], rel=1e-6)


def test_axial_geometry_and_values(tmp_path: Path) -> None:
    spec = t2_spec()
    image = convert(tmp_path, spec)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == (10, 12, 12)
    assert image.GetSpacing() == pytest.approx((0.6, 0.6, 6.0))  # 6 mm steps, not SliceThickness 5
    assert image.GetOrigin() == pytest.approx(spec.origin)
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert_voxels_at_dicom_positions(image, spec)


def test_non_square_pixels(tmp_path: Path) -> None:
    spec = t2_spec(pixel_spacing=(0.5, 0.8), rows=9, cols=14)  # 0.5 mm between rows, 0.8 between columns
    image = convert(tmp_path, spec)
    assert image.GetSize() == (14, 9, 12)
    assert image.GetSpacing() == pytest.approx((0.8, 0.5, 6.0))
    assert_voxels_at_dicom_positions(image, spec)


def test_oblique_stack_written_in_reverse_order(tmp_path: Path) -> None:
    r = rotation(17.0, -8.0)
    iop = tuple(r[:, 0]) + tuple(r[:, 1])
    spec = t2_spec(iop=iop, origin=(12.0, -30.5, 41.2), slice_step=4.4)
    order = list(range(spec.n_slices))[::-1]  # instance numbers run against the normal
    paths = write(tmp_path, spec, order=order)
    study = load_study(tmp_path)
    info = next(iter(study.series.values()))
    assert Path(info.files[0]) == paths[-1]
    image = series_to_volume(info.datasets, info.files).image
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), r, atol=1e-9)
    assert image.GetOrigin() == pytest.approx(spec.origin)
    assert image.GetSpacing()[2] == pytest.approx(4.4)
    assert_voxels_at_dicom_positions(image, spec)


def test_rescale_slope_and_intercept(tmp_path: Path) -> None:
    spec = t2_spec(slope=2.5, intercept=-100.0)
    image = convert(tmp_path, spec)
    assert_voxels_at_dicom_positions(image, spec)
    assert sitk.GetArrayViewFromImage(image).min() == pytest.approx(1 * 2.5 - 100)


def test_compressed_transfer_syntaxes_decode_identically(tmp_path: Path) -> None:
    spec = t2_spec(n_slices=3, rows=64, cols=48)  # JPEG 2000 needs tiles larger than a few pixels
    paths = write(tmp_path, spec)
    reference = sitk.GetArrayFromImage(series_to_volume([read_dicom(p) for p in paths]).image)
    for syntax in (RLELossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian):  # big endian: real data test
        datasets = []
        for p in paths:
            ds = pydicom.dcmread(p)
            if syntax.is_compressed:
                ds.compress(syntax)
            else:
                ds.file_meta.TransferSyntaxUID = syntax
            out = tmp_path / syntax.name.replace(" ", "_") / p.name
            out.parent.mkdir(exist_ok=True)
            ds.save_as(out)
            datasets.append(read_dicom(out))
        assert str(datasets[0].file_meta.TransferSyntaxUID) == syntax
        np.testing.assert_array_equal(sitk.GetArrayFromImage(series_to_volume(datasets).image), reference)


def test_single_slice_uses_spacing_between_slices(tmp_path: Path) -> None:
    image = convert(tmp_path, t2_spec(n_slices=1, slice_step=6.0, slice_thickness=5.0))
    assert image.GetSize() == (10, 12, 1) and image.GetSpacing()[2] == pytest.approx(6.0)


def test_missing_slice_is_an_error_naming_the_gap(tmp_path: Path) -> None:
    spec = t2_spec()
    paths = write(tmp_path, spec)
    del paths[5]
    with pytest.raises(VolumeConversionError, match=r"uneven slice spacing: gap of 12\.000 mm between"):
        series_to_volume([read_dicom(p) for p in paths], paths)


def test_duplicate_positions_are_an_error(tmp_path: Path) -> None:
    spec = t2_spec(n_slices=4)
    paths = write(tmp_path, spec)
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = generate_uid(prefix=ROOT)
    ds.InstanceNumber = 9
    copy = paths[0].parent / "copy.dcm"
    ds.save_as(copy)
    with pytest.raises(VolumeConversionError, match="2 frames share the slice position"):
        series_to_volume([read_dicom(p) for p in paths + [copy]], paths + [copy])


def test_varying_orientation_matrix_and_shear_are_errors(tmp_path: Path) -> None:
    spec = t2_spec(n_slices=3)
    paths = write(tmp_path, spec)
    datasets = [read_dicom(p) for p in paths]
    datasets[1].ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]
    with pytest.raises(VolumeConversionError, match="varying orientation"):
        series_to_volume(datasets)
    datasets = [read_dicom(p) for p in paths]
    datasets[2].Rows = 11
    with pytest.raises(VolumeConversionError, match="varying matrix"):
        series_to_volume(datasets)
    datasets = [read_dicom(p) for p in paths]
    datasets[2].ImagePositionPatient = [-1.0, -4.0, -18.0]  # 2 mm off the normal through slice 0
    with pytest.raises(VolumeConversionError, match="off the slice normal"):
        series_to_volume(datasets)
    datasets = [read_dicom(p) for p in paths]
    del datasets[1].ImagePositionPatient
    with pytest.raises(VolumeConversionError, match=f"{paths[1].name}: no ImagePositionPatient"):
        series_to_volume(datasets, paths)


def test_mixed_echoes_are_separate_stacks(tmp_path: Path) -> None:
    base = t2_spec(n_slices=4)
    positions = [p for p in slice_positions(base) for _ in range(2)]  # each position twice
    spec = t2_spec(n_slices=8, positions=positions, echo_times=[15.0, 90.0] * 4)
    paths = write(tmp_path, spec)
    datasets = [read_dicom(p) for p in paths]
    with pytest.raises(VolumeConversionError, match="mixes 2 stacks.*echo_time=15 .*echo_time=90 "):
        series_to_volume(datasets)
    stacks = list_stacks(datasets)
    assert [len(s.frames) for s in stacks] == [4, 4]
    second = series_to_volume(datasets, stack_index=1).image
    assert second.GetSize() == (10, 12, 4) and second.GetSpacing()[2] == pytest.approx(6.0)
    values = stored_values(8, 12, 10)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(second), values[1::2])


def test_convert_selected_keeps_role_and_references(tmp_path: Path) -> None:
    from operators.volume_conversion import convert_selected

    spec = t2_spec(n_slices=3)
    paths = write(tmp_path, spec)
    datasets = [read_dicom(p) for p in paths]
    selected = SelectedSeries(role=Role.T2, series_instance_uid=spec.series_uid, datasets=datasets, files=paths,
                              explanation=SelectionExplanation(role=Role.T2, rule="test", deciding_attributes={}))
    volume = convert_selected(selected)
    assert volume.role is Role.T2 and volume.series_instance_uid == spec.series_uid
    assert volume.sop_instance_uids == tuple(str(ds.SOPInstanceUID) for ds in datasets)
    assert volume.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4"


def test_ingestion_operators_run_in_a_monai_deploy_graph(tmp_path: Path) -> None:
    """Loader -> selector -> two converters as a real MONAI Deploy (Holoscan) application."""
    pytest.importorskip("holoscan", reason="MONAI Deploy App SDK runtime (holoscan) not installed")
    from holoscan.conditions import CountCondition
    from monai.deploy.core import Application, Operator, OperatorSpec

    import operators.dicom_loading as loading
    import operators.series_selection as selection
    import operators.volume_conversion as conversion
    from tests.unit.mr_factory import flair_spec, write_study

    write_study(tmp_path / "in", [t2_spec(), flair_spec()])
    received: dict[str, object] = {}

    class Sink(Operator):
        def setup(self, spec: OperatorSpec) -> None:
            for name in ("t2", "flair", "selection"):
                spec.input(name)

        def compute(self, op_input, op_output, context) -> None:  # noqa: ANN001
            for name in ("t2", "flair", "selection"):
                received[name] = op_input.receive(name)

    class IngestionApp(Application):
        def compose(self) -> None:
            loader = loading.DicomStudyLoaderOperator(self, CountCondition(self, 1), input_folder=tmp_path / "in",
                                                      name="loader")
            selector = selection.SeriesSelectorOperator(self, name="selector")
            t2 = conversion.VolumeConverterOperator(self, name="t2_volume")
            flair = conversion.VolumeConverterOperator(self, name="flair_volume")
            sink = Sink(self, name="sink")
            self.add_flow(loader, selector, {("study", "study")})
            self.add_flow(selector, t2, {("t2_series", "series")})
            self.add_flow(selector, flair, {("flair_series", "series")})
            self.add_flow(selector, sink, {("selection", "selection")})
            self.add_flow(t2, sink, {("volume", "t2")})
            self.add_flow(flair, sink, {("volume", "flair")})

    IngestionApp().run()
    assert received["t2"].role is Role.T2 and received["t2"].image.GetSize() == (10, 12, 12)  # type: ignore[union-attr]
    assert received["flair"].role is Role.FLAIR  # type: ignore[union-attr]
    assert received["selection"].t2.explanation.role is Role.T2  # type: ignore[union-attr]
