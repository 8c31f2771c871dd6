"""Series selection on 200 synthetic studies with random decoys and descriptions.

Descriptions cycle through random (vendor, multilingual, blank and misleading
names mixed), blank and misleading; decoys are a random subset (or all) of
localizer, T1 (3D MPRAGE or 2D SE), derived FLAIR copy and DWI; encodings vary.
T2 and FLAIR must be chosen correctly every time. Studies without FLAIR (or
without T2) must raise the typed error for that role. Every tenth study's chosen
series are also converted and compared with the generator's own images.
Small matrices keep generation to about a second per study.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

synthetic = pytest.importorskip("synthetic", reason="synthetic study generator not importable")

from operators.dicom_loading import load_study  # noqa: E402
from operators.errors import NoSuitableSeriesError  # noqa: E402
from operators.series_selection import select_series  # noqa: E402
from operators.volume_conversion import convert_selected  # noqa: E402

N_STUDIES = 200
DESCRIPTION_MODES = ("random", "blank", "misleading", "random")
ENCODINGS = ("classic", "classic", "enhanced", "classic", "rle")


def options(seed: int, **kw: object) -> "synthetic.StudyOptions":
    base = dict(t2_matrix=(40, 40), flair_matrix=(32, 32), slices=10, slab_samples=1,
                descriptions=DESCRIPTION_MODES[seed % len(DESCRIPTION_MODES)],
                decoys=True if seed % 3 == 0 else "random",
                encoding=ENCODINGS[seed % len(ENCODINGS)])
    base.update(kw)
    return synthetic.StudyOptions(**base)


def assert_same_volume(ours: sitk.Image, truth: sitk.Image, what: str) -> None:
    assert ours.GetSize() == truth.GetSize(), what
    np.testing.assert_allclose(ours.GetSpacing(), truth.GetSpacing(), atol=1e-4, err_msg=what)
    np.testing.assert_allclose(ours.GetOrigin(), truth.GetOrigin(), atol=1e-3, err_msg=what)
    np.testing.assert_allclose(ours.GetDirection(), truth.GetDirection(), atol=1e-6, err_msg=what)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(truth),
                               rtol=1e-6, atol=1e-3, err_msg=what)


@pytest.mark.slow
def test_two_hundred_synthetic_studies(tmp_path: Path) -> None:
    wrong = []
    descriptions_seen: set[str] = set()
    for seed in range(N_STUDIES):
        study = synthetic.generate_study(tmp_path, seed, options(seed))
        loaded = load_study(study.input_dir)
        selection = select_series(loaded)
        got = (selection.t2.series_instance_uid, selection.flair.series_instance_uid)
        if got != (study.t2_series_uid, study.flair_series_uid):
            names = {uid: info.series_description for uid, info in loaded.series.items()}
            wrong.append(f"seed {seed}: T2 {names.get(got[0])!r} FLAIR {names.get(got[1])!r} "
                         f"(truth T2 {names.get(study.t2_series_uid)!r}, FLAIR {names.get(study.flair_series_uid)!r})")
        descriptions_seen.update(info.series_description for info in loaded.series.values())
        if seed % 10 == 0:
            assert_same_volume(convert_selected(selection.t2).image, study.t2_image, f"seed {seed} T2")
            assert_same_volume(convert_selected(selection.flair).image, study.flair_image, f"seed {seed} FLAIR")
        shutil.rmtree(study.input_dir.parent)
    assert not wrong, f"{len(wrong)}/{N_STUDIES} studies wrong:\n" + "\n".join(wrong)
    # the studies really did carry blank, misleading and non-English descriptions
    assert "" in descriptions_seen
    assert any(not d.isascii() for d in descriptions_seen)


@pytest.mark.parametrize("seed", [1001, 1002, 1003, 1004])
def test_study_without_flair_or_t2_gets_the_typed_error(tmp_path: Path, seed: int) -> None:
    missing = "FLAIR" if seed % 2 else "T2"
    opts = options(seed, include_flair=missing != "FLAIR", include_t2=missing != "T2", decoys=True)
    study = synthetic.generate_study(tmp_path, seed, opts)
    with pytest.raises(NoSuitableSeriesError) as info:
        select_series(load_study(study.input_dir))
    assert info.value.role == missing
    assert f"no suitable {missing} series" in info.value.reason
    assert len(info.value.candidates) >= 4  # the decoys (and the other contrast) are listed
