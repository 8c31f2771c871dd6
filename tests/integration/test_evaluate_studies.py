"""``python -m training evaluate --studies``: held-out studies scored through the deployed pipeline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from synthetic import StudyOptions, generate_study
from tests.unit._model_sets import make_model_set
from app.config import AppConfig
from training.evaluation import evaluate_studies

pytestmark = pytest.mark.slow

# Coarser pixels than a scanner's, same field of view and slices: the real pipeline stays quick.
SIZE = dict(t2_matrix=(192, 192), t2_pixel_mm=1.2, flair_matrix=(160, 160), flair_pixel_mm=1.4)


def test_studies_scored_through_the_app_with_unanalysable_ones_listed(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for seed in (7001, 7002, 7003):
        generate_study(studies, seed, StudyOptions(decoys="random", descriptions="random", **SIZE))
    generate_study(studies, 7004, StudyOptions(include_flair=False, **SIZE))
    # member t2_wae separates nothing (constant), flair_wae differs by fold: scores are known exactly
    make_model_set(tmp_path / "models", {"t2_wae": [0.6, 0.6], "flair_wae": [0.2, 0.4], "flair3_wae": [0.5, 0.5],
                                         "clinical": [0.7, 0.7], "t2_etsc": [0.4, 0.4], "flair_etsc": [0.9, 0.7]})
    report = evaluate_studies(tmp_path / "models" / "set", studies, tmp_path / "eval",
                              app_config=AppConfig(brain_extraction="fallback"), n_boot=50, progress=False, jobs=2)
    assert report["through"] == "app.pipeline.StudyPipeline"
    assert report["n_cases"] == 3
    assert list(report["not_analysed"]) == ["SYN-007004"]
    assert "FLAIR" in report["not_analysed"]["SYN-007004"]
    rows = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
    labels = {r["case_id"]: int(r["label"]) for r in rows}
    for sid, label in labels.items():
        truth = json.loads((studies / sid / "truth" / "truth.json").read_text())
        assert truth["label"] == label
    for r in rows:
        assert float(r["flair_wae"]) == pytest.approx(0.3, abs=1e-6)
        assert float(r["WAE-Net"]) == pytest.approx((0.6 + 0.3 + 0.5 + 0.7) / 4, abs=1e-6)
        assert float(r["flair_etsc"]) == pytest.approx(0.8, abs=1e-6)  # members of every ensemble, not only the primary
        assert float(r["eTSC-Net"]) == pytest.approx(0.6 * 0.4 + 0.4 * 0.8, abs=1e-6)
    assert set(report["members"]) == {"t2_wae", "flair_wae", "flair3_wae", "clinical", "t2_etsc", "flair_etsc"}
    assert (tmp_path / "eval" / "calibration.png").stat().st_size > 0
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 0
    # identifiers for the held-out check: the study's UID and a pseudonymous patient key, never the PatientID
    by_id = {c["case_id"]: c for c in report["cases"]}
    for sid in labels:
        truth_uid = json.loads((studies / sid / "truth" / "truth.json").read_text()).get("study_instance_uid")
        assert by_id[sid]["study_uid"] and (truth_uid is None or by_id[sid]["study_uid"] == truth_uid)
        assert by_id[sid]["patient_key"] and sid not in by_id[sid]["patient_key"]
    assert len(list((tmp_path / "eval" / "outputs").rglob("*.dcm"))) == 4  # 3 result SRs + 1 not-analysable SR
