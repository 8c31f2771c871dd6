"""T2/FLAIR series selection: physics first, names second, site rules, typed errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from operators.datatypes import Role
from operators.dicom_loading import load_study
from operators.errors import AmbiguousSeriesError, NoSuitableSeriesError, SeriesRulesError
from operators.series_selection import load_rules, name_signal, select_series, series_features
from tests.unit.mr_factory import dwi_spec, flair_spec, localizer_spec, t1_spec, t2_spec, write_study


def uid_of(study, number: int) -> str:  # noqa: ANN001
    return next(uid for uid, s in study.series.items() if s.series_number == number)


def full_study(tmp_path: Path, **descriptions: str) -> Path:
    """Localizer, T2 (#2), FLAIR (#3), T1, DWI and a derived FLAIR copy (#6)."""
    d = descriptions
    write_study(tmp_path, [
        localizer_spec(description=d.get("loc", "localizer")),
        t2_spec(description=d.get("t2", "t2_tse_tra")),
        flair_spec(description=d.get("flair", "t2_tirm_tra_dark-fluid")),
        t1_spec(description=d.get("t1", "t1_mprage_sag")),
        dwi_spec(description=d.get("dwi", "ep2d_diff_tra")),
        flair_spec(series_number=6, description=d.get("derived", "FLAIR ROI export"),
                   image_type="DERIVED\\SECONDARY\\M\\ND"),
    ])
    return tmp_path


@pytest.mark.parametrize("names", [
    {},
    {"t2": "", "flair": "", "loc": "", "t1": "", "dwi": "", "derived": ""},  # blank
    {"t2": "FLAIR", "flair": "T2 axial", "loc": "T2 axial", "t1": "FLAIR tra", "dwi": "AX T2 FSE",
     "derived": "t2_tirm_tra_dark-fluid"},  # misleading
    {"t2": "T2加权 轴位", "flair": "T2 水抑制", "t1": "T1 sagital", "dwi": "弥散加权"},
])
def test_physics_decides_whatever_the_names(tmp_path: Path, names: dict[str, str]) -> None:
    study = load_study(full_study(tmp_path, **names))
    selection = select_series(study)
    assert selection.t2 is not None and selection.flair is not None
    assert selection.t2.series_instance_uid == uid_of(study, 2)
    assert selection.flair.series_instance_uid == uid_of(study, 3)
    assert len(selection.t2.datasets) == 12 and len(selection.t2.files) == 12

    flair = selection.explanations[Role.FLAIR]
    assert flair.deciding_attributes["InversionTime"] == 2500.0
    assert flair.deciding_attributes["RepetitionTime"] == 9000.0
    assert "InversionTime 2500" in flair.rule
    assert len(flair.candidates) == 6
    refused = {c.series_number: c for c in flair.candidates if not c.eligible}
    assert set(refused) == {1, 2, 4, 5, 6}
    assert any("DERIVED" in r for r in refused[6].reasons)
    assert any("diffusion" in r for r in refused[5].reasons)
    assert any("orientations" in r for r in refused[1].reasons)
    assert any("InversionTime 900" in r for r in refused[4].reasons)


def test_no_flair_gives_a_typed_error_listing_the_series(tmp_path: Path) -> None:
    write_study(tmp_path, [localizer_spec(), t2_spec(), t1_spec(), dwi_spec()])
    study = load_study(tmp_path)
    with pytest.raises(NoSuitableSeriesError) as info:
        select_series(study)
    err = info.value
    assert err.role == "FLAIR" and err.stage == "series_selection"
    assert "no suitable FLAIR series among 4" in err.reason
    for text in ("'t2_tse_tra'", "TR 2790", "'t1_mprage_sag'", "TI 900", "'ep2d_diff_tra'"):
        assert text in err.reason
    assert "Test^Ingestion" not in err.reason and "ING-0001" not in err.reason
    assert len(err.candidates) == 4 and not any(c.eligible for c in err.candidates)
    # the T2 alone can still be had when FLAIR is not required
    selection = select_series(study, require=(Role.T2,))
    assert selection.flair is None and selection.t2 is not None
    assert selection.explanations[Role.FLAIR].rule == "no eligible series"


def test_two_equally_good_candidates_are_ambiguous(tmp_path: Path) -> None:
    write_study(tmp_path, [t2_spec(series_number=2), t2_spec(series_number=7), flair_spec()])
    study = load_study(tmp_path)
    with pytest.raises(AmbiguousSeriesError) as info:
        select_series(study)
    assert info.value.role == "T2"
    assert uid_of(study, 2) in info.value.reason and uid_of(study, 7) in info.value.reason
    # a site rule forcing one by description resolves it
    write_study(tmp_path / "b", [t2_spec(series_number=2, description="T2 tse"),
                                 t2_spec(series_number=7, description="T2 tse repeat"), flair_spec()])
    study = load_study(tmp_path / "b")
    rules = load_rules(overrides={"force": {"t2": r"repeat$"}})
    selection = select_series(study, rules)
    assert selection.t2.series_instance_uid == uid_of(study, 7)
    assert selection.explanations[Role.T2].rule.startswith("forced by site rule")


def test_preferences_axial_more_slices_and_names(tmp_path: Path) -> None:
    write_study(tmp_path, [
        t2_spec(series_number=2, description="t2_tse_cor", iop=(1, 0, 0, 0, 0, -1)),
        t2_spec(series_number=3, description="t2_tse_tra"),
        t2_spec(series_number=4, description="t2_tse_tra thin", n_slices=20, slice_step=3.0),
        flair_spec(series_number=5, description="", n_slices=10),
        flair_spec(series_number=6, description="FLAIR tra", n_slices=10),
    ])
    study = load_study(tmp_path)
    selection = select_series(study)
    assert selection.t2.series_instance_uid == uid_of(study, 4)  # axial and more slices
    assert selection.flair.series_instance_uid == uid_of(study, 6)  # equal physics, the name decides
    t2 = {c.series_number: c for c in selection.explanations[Role.T2].candidates}
    assert t2[3].score > t2[2].score  # axial beats coronal


def test_post_contrast_is_excluded_by_default_and_penalised_if_configured(tmp_path: Path) -> None:
    write_study(tmp_path, [t2_spec(series_number=2, contrast_agent="Gadovist"), flair_spec()])
    study = load_study(tmp_path)
    with pytest.raises(NoSuitableSeriesError, match="post-contrast"):
        select_series(study)
    rules = load_rules(overrides={"exclude": {"contrast": False}})
    selection = select_series(study, rules)
    assert any("post-contrast" in r for r in selection.t2.explanation.candidates[0].reasons)


def test_site_rules_file_changes_thresholds_and_names(tmp_path: Path) -> None:
    write_study(tmp_path / "s", [t2_spec(), flair_spec(description="Dunkelwasser tra", ti=1300.0)])
    study = load_study(tmp_path / "s")
    with pytest.raises(NoSuitableSeriesError, match="InversionTime 1300 ms outside FLAIR range"):
        select_series(study)
    rules_file = tmp_path / "site.yaml"
    rules_file.write_text(
        "version: 1\n"
        "thresholds:\n  flair:\n    ti_min_ms: 1200\n"
        "weights:\n  name_role: 25\n"
        "names:\n  flair: ['dunkelwasser']\n",
        encoding="utf-8")
    rules = load_rules(rules_file)
    selection = select_series(study, rules)
    assert selection.flair is not None
    assert any("+25 name" in r for r in selection.flair.explanation.candidates[0].reasons)
    assert rules.thresholds["flair"]["ti_max_ms"] == 3200.0  # untouched defaults stay


@pytest.mark.parametrize("text, message", [
    ("thresholds:\n  flair:\n    ti_minimum: 1200\n", "unknown key 'thresholds.flair.ti_minimum'"),
    ("weights:\n  axial: high\n", "must be a number"),
    ("names:\n  flair: ['(unclosed']\n", "invalid regular expression"),
    ("names:\n  pd: ['pd']\n", "unknown name list"),
    ("version: 2\n", "unsupported series rules version"),
    ("- a list\n", "must be a mapping"),
])
def test_invalid_rules_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SeriesRulesError, match=message):
        load_rules(path)


@pytest.mark.parametrize("description, expected", [
    ("t2_tirm_tra_dark-fluid", "flair"), ("T2W_FLAIR", "flair"), ("AX T2 FLAIR", "flair"),
    ("Ax T2 FLAIR", "flair"), ("T2-FLAIR tra", "flair"), ("轴位FLAIR", "flair"), ("T2 水抑制", "flair"),
    ("dark fluid tra", "flair"),
    ("t2_tse_tra", "t2"), ("AX T2 FSE", "t2"), ("T2W_TSE", "t2"), ("T2 tra (Schädel)", "t2"),
    ("轴位T2加权", "t2"), ("T2 axial cerebro", "t2"), ("Potenciada en T2", "t2"),
    ("ep2d_diff_3scan_trace", "decoy"), ("t1_mprage_sag", "decoy"), ("AAHead_Scout", "decoy"),
    ("3-plane loc", "decoy"), ("AX T2* GRE", "decoy"), ("SWI", "decoy"), ("定位像", "decoy"),
    ("t1_se_tra", "decoy"), ("AX T1 SE", "decoy"), ("T1W_3D_TFE", "decoy"), ("弥散加权", "decoy"),
    ("DWI_SSh", "decoy"), ("Diffusion axial", "decoy"), ("FLAIR ROI export", "flair"),
    ("", None), ("Series 7", None),
])
def test_name_patterns(tmp_path: Path, description: str, expected: str | None) -> None:
    write_study(tmp_path, [t2_spec(description=description, n_slices=2)])
    (info,) = load_study(tmp_path).series.values()
    assert name_signal(series_features(info), load_rules()) == expected


def _variety() -> Path | None:
    base = os.environ.get("TSC_SHARED_DIR")
    root = Path(base) if base else Path(__file__).resolve().parents[2] / ".." / "shared"
    path = root / "data" / "dicom-variety"
    return path if path.is_dir() else None


@pytest.mark.skipif(_variety() is None, reason="shared dicom-variety data not found (set TSC_SHARED_DIR)")
def test_enhanced_mr_attributes_come_from_functional_groups() -> None:
    """Real Siemens XA30 Enhanced MR (MPRAGE): TR/TE/TI/IR read from the shared/per-frame groups."""
    from operators.dicom_loading import scan_folder

    folder = scan_folder(_variety() / "dcm_qa_xa30" / "In")
    infos = [s for st in folder.studies.values() for s in st.series.values()]
    assert infos
    for info in infos:
        f = series_features(info)
        assert f.enhanced and f.repetition_time == 1800.0 and f.echo_time == pytest.approx(2.41)
        assert f.inversion_time == 900.0 and f.inversion_recovery is True
        assert f.acquisition_type == "3D" and f.n_slices == 96 and f.orientation == "sagittal"
    study = next(iter(folder.studies.values()))
    with pytest.raises(NoSuitableSeriesError, match="TI 900"):
        select_series(study)


def test_dual_echo_pd_t2_series_gives_its_t2_echo(tmp_path: Path) -> None:
    from operators.volume_conversion import convert_selected
    from tests.unit.mr_factory import slice_positions

    base = t2_spec(n_slices=12)
    positions = [p for p in slice_positions(base) for _ in range(2)]
    write_study(tmp_path, [
        t2_spec(description="PD/T2 tse tra", n_slices=24, positions=positions, echo_times=[12.0, 96.0] * 12),
        flair_spec(),
    ])
    selection = select_series(load_study(tmp_path))
    assert selection.t2.explanation.deciding_attributes["EchoTime"] == 96.0
    assert len(selection.t2.datasets) == 12
    assert {float(ds.EchoTime) for ds in selection.t2.datasets} == {96.0}
    assert convert_selected(selection.t2).image.GetSize() == (10, 12, 12)
