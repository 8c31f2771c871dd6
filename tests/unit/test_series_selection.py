"""T2/FLAIR series selection: physics first, names second, site rules, typed errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from operators.datatypes import Role
from operators.dicom_loading import load_study
from operators.errors import AmbiguousSeriesError, NoSuitableSeriesError, SeriesRulesError
from operators.series_selection import (decoy_words, load_rules, name_signal, score_candidate, select_series,
                                       series_features, uid_root)
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


def test_equal_candidates_are_ambiguous_only_when_the_tie_rule_cannot_tell(tmp_path: Path) -> None:
    # same series number, no series or acquisition time, different pixel data: nothing tells them apart
    write_study(tmp_path, [t2_spec(series_number=2),
                           t2_spec(series_number=8, value_offset=1, header={"SeriesNumber": 2}), flair_spec()])
    study = load_study(tmp_path)
    with pytest.raises(AmbiguousSeriesError) as info:
        select_series(study)
    assert info.value.role == "T2" and "tie rule" in info.value.reason
    assert all(uid in info.value.reason for uid in study.series if study.series[uid].series_description == "t2_tse_tra")
    # a site rule forcing one by description resolves it
    write_study(tmp_path / "b", [t2_spec(series_number=2, description="T2 tse"),
                                 t2_spec(series_number=7, description="T2 tse repeat", value_offset=1), flair_spec()])
    study = load_study(tmp_path / "b")
    rules = load_rules(overrides={"force": {"t2": r"repeat$"}})
    selection = select_series(study, rules)
    assert selection.t2.series_instance_uid == uid_of(study, 7)
    assert selection.explanations[Role.T2].rule.startswith("forced by site rule")


@pytest.mark.parametrize("times, expected", [
    ({2: "101500", 7: "093000"}, 7),  # earliest SeriesTime wins over the lower number
    ({2: None, 7: None}, 2),  # no times: lowest SeriesNumber
])
def test_equal_candidates_take_the_original_by_the_tie_rule(tmp_path: Path, times: dict, expected: int) -> None:
    header = {n: ({"SeriesDate": "20240105", "SeriesTime": t} if t else {}) for n, t in times.items()}
    write_study(tmp_path, [t2_spec(series_number=2, header=header[2]),
                           t2_spec(series_number=7, value_offset=1, header=header[7]), flair_spec()])
    study = load_study(tmp_path)
    selection = select_series(study)
    assert selection.t2.series_instance_uid == uid_of(study, expected)
    explanation = selection.t2.explanation
    other = 2 if expected == 7 else 7
    assert f"tied with series {other}: taken as the original acquisition by the tie rule" in explanation.rule
    assert "earliest SeriesDate/SeriesTime" in explanation.rule
    (flag,) = explanation.flags
    assert flag.code == "SERIES_TIE_BROKEN" and flag.severity == "warning"


def test_a_copy_with_the_same_pixel_data_is_not_chosen(tmp_path: Path) -> None:
    """A re-sent copy (same pixel data, later series) loses to the acquisition, with an info note."""
    write_study(tmp_path, [t2_spec(series_number=2),
                           flair_spec(series_number=3, header={"SeriesTime": "101500", "SeriesDate": "20240105"}),
                           flair_spec(series_number=4, header={"SeriesTime": "235900", "SeriesDate": "20240105"})])
    study = load_study(tmp_path)
    selection = select_series(study)
    assert selection.flair.series_instance_uid == uid_of(study, 3)
    candidates = {c.series_number: c for c in selection.flair.explanation.candidates}
    assert any("same pixel data as series 3" in r for r in candidates[4].reasons)
    assert [f.code for f in selection.flair.explanation.flags] == ["SERIES_COPY_IGNORED"]


def test_preferences_axial_more_slices_and_names(tmp_path: Path) -> None:
    write_study(tmp_path, [
        t2_spec(series_number=2, description="t2_tse_cor", iop=(1, 0, 0, 0, 0, -1)),
        t2_spec(series_number=3, description="t2_tse_tra", value_offset=1),
        t2_spec(series_number=4, description="t2_tse_tra thin", n_slices=20, slice_step=3.0),
        flair_spec(series_number=5, description="", n_slices=10),
        flair_spec(series_number=6, description="FLAIR tra", n_slices=10, value_offset=1),
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


@pytest.mark.parametrize("description, decoys", [
    ("FLAIR_ROI", ["ROI"]), ("sT2W/FLAIR copy", ["copy"]), ("Key Images FLAIR", ["Key Im"]),
    ("Screen Save T2", ["Screen Save"]), ("T2 FLAIR MPR cor", ["MPR"]), ("FLAIR subtraction", ["subtract"]),
    ("t2_tirm_tra_dark-fluid", []), ("sT2W/FLAIR", []), ("AX T2 FLAIR", []), ("t2_tse_tra", []),
    ("AX T2 FSE", []), ("T2W_TSE", []), ("Potenciada en T2", []), ("T2 tra (Schädel)", []),
])
def test_decoy_words_count_beside_role_words(tmp_path: Path, description: str, decoys: list[str]) -> None:
    write_study(tmp_path, [flair_spec(description=description, n_slices=2)])
    (info,) = load_study(tmp_path).series.values()
    features = series_features(info)
    assert decoy_words(features, load_rules()) == decoys
    reasons = score_candidate(features, Role.FLAIR, load_rules()).reasons
    assert any(r.startswith("-20 name") for r in reasons) == bool(decoys)


def test_a_roi_copy_no_longer_ties_with_the_flair(tmp_path: Path) -> None:
    """Same physics and pixel size, distinct pixel data: the decoy word 'ROI' alone separates them."""
    write_study(tmp_path, [t2_spec(series_number=2), flair_spec(series_number=3, description="sT2W/FLAIR"),
                           flair_spec(series_number=4, description="FLAIR_ROI", value_offset=7)])
    study = load_study(tmp_path)
    selection = select_series(study)
    assert selection.flair.series_instance_uid == uid_of(study, 3)
    assert "20 ahead of series 4" in selection.flair.explanation.rule


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


def _flair_with_a_workstation_copy(tmp_path: Path, copy_header: dict) -> Path:
    """A real Siemens XA30 series (dcm_qa_xa30i, 96 classic instances) and a copy of it with the same pixel data.

    The public set holds no FLAIR, so both get the acquisition attributes of the issue's
    FLAIR (TR 9000, TE 120, TI 2500, SE/IR, named 'sT2W/FLAIR'); everything else, pixel data
    included, is as the scanner wrote it. The copy gets new UIDs and ``copy_header``.
    """
    import gzip

    import pydicom
    from pydicom.uid import generate_uid

    source = _variety() / "dcm_qa_xa30i" / "In" / "6001_anat-T1w_acq-tfl"
    series_uid = generate_uid(prefix=copy_header.pop("uid_prefix", None))
    prefix = series_uid.rsplit(".", 1)[0] + "."
    for path in sorted(source.glob("*.dcm.gz")):
        with gzip.open(path, "rb") as fh:
            ds = pydicom.dcmread(fh)
        ds.SeriesDescription = ds.ProtocolName = "sT2W/FLAIR"
        ds.SequenceName = "*tir2d1_16"
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime = 9000.0, 120.0, 2500.0
        ds.ScanningSequence = ["SE", "IR"]
        (tmp_path / "orig").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "orig" / path.name[:-3])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix=prefix)
        for keyword, value in copy_header.items():
            setattr(ds, keyword, value)
        (tmp_path / "copy").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "copy" / path.name[:-3])
    return tmp_path


@pytest.mark.skipif(_variety() is None, reason="shared dicom-variety data not found (set TSC_SHARED_DIR)")
def test_a_workstation_copy_of_a_real_series_is_seen_through() -> None:
    """The issue's case: an OsiriX 'FLAIR_ROI' copy, another UID root, same pixel data and physics."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = _flair_with_a_workstation_copy(Path(tmp), {
            "uid_prefix": "1.3.6.1.4.1.19291.2.1.", "SeriesDescription": "FLAIR_ROI", "SeriesNumber": 5339,
            "ManufacturerModelName": "OsiriX", "SoftwareVersions": "OsiriX 14.0.1", "SeriesDate": "20230120",
            "SeriesTime": "101010"})
        study = load_study(root)
        selection = select_series(study, require=(Role.FLAIR,))
    original = uid_of(study, 6001)
    assert selection.flair.series_instance_uid == original
    candidates = {c.series_number: c for c in selection.flair.explanation.candidates}
    assert candidates[6001].eligible and candidates[5339].eligible  # same physics, ImageType ORIGINAL
    reasons = " | ".join(candidates[5339].reasons)
    for sign in ("suggests another kind of series (ROI)", "written by a workstation", "UID root 1.3.6.1.4.1.19291",
                 "same pixel data as series 6001"):
        assert sign in reasons
    assert candidates[6001].score - candidates[5339].score == pytest.approx(20 + 30 + 15 + 30)
    assert [f.code for f in selection.flair.explanation.flags] == ["SERIES_COPY_IGNORED"]


@pytest.mark.skipif(_variety() is None, reason="shared dicom-variety data not found (set TSC_SHARED_DIR)")
def test_a_copy_without_provenance_signs_loses_to_the_earlier_acquisition() -> None:
    """A bare re-send (same UID root, equipment and name; only later and re-numbered): pixel identity decides."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = _flair_with_a_workstation_copy(Path(tmp), {
            "uid_prefix": "1.3.12.2.1107.5.2.43.67093.", "SeriesNumber": 6002, "SeriesTime": "200000"})
        study = load_study(root)
        selection = select_series(study, require=(Role.FLAIR,))
    assert selection.flair.series_instance_uid == uid_of(study, 6001)
    assert "same pixel data as series 6001" in " ".join(
        next(c for c in selection.flair.explanation.candidates if c.series_number == 6002).reasons)


@pytest.mark.parametrize("manufacturer, model, software, workstation", [
    ("Siemens Healthineers", "MAGNETOM Prisma Fit", "syngo MR XA30", False),
    ("Philips Medical Systems", "Ingenia", "5.4.1\\5.4.1.0", False),
    ("GE MEDICAL SYSTEMS", "SIGNA Premier", "28\\LX\\MR Software release:RX28.0_R04", False),
    ("Canon_Medical_Systems", "Vantage Orian", "V6.0", False),
    ("UIH", "uMR 780", "R004", False),
    ("Philips Medical Systems", "OsiriX", "OsiriX 14.0.1", True),
    ("Siemens Healthineers", "syngo.via", "VB60A", True),
    ("Philips", "IntelliSpace Portal", "12.1", True),
    ("Vital Images", "Vitrea", "7.14", True),
    ("Pixmeo", "Horos", "4.0", True),
])
def test_workstation_equipment_is_a_sign_of_a_copy(tmp_path: Path, manufacturer: str, model: str, software: str,
                                                   workstation: bool) -> None:
    write_study(tmp_path, [flair_spec(header={"Manufacturer": manufacturer, "ManufacturerModelName": model,
                                              "SoftwareVersions": software.split("\\")})])
    (info,) = load_study(tmp_path).series.values()
    reasons = score_candidate(series_features(info), Role.FLAIR, load_rules()).reasons
    assert any("written by a workstation" in r for r in reasons) == workstation


@pytest.mark.parametrize("uid, root", [
    ("1.3.12.2.1107.5.2.43.67093.30000023011319484937100000491", "1.3.12.2"),  # Siemens
    ("1.3.46.670589.11.42151.5.0.7404.2023011309", "1.3.46.670589"),  # Philips
    ("1.2.840.113619.2.408.5282380.1234", "1.2.840.113619"),  # GE
    ("1.3.6.1.4.1.19291.2.1.3.2145.1234", "1.3.6.1.4.1.19291"),  # OsiriX
    ("2.25.123456789012345678901234567890", "2.25"),
])
def test_uid_roots(uid: str, root: str) -> None:
    assert uid_root(uid) == root
