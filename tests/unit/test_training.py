"""Training pipeline end to end on tiny cases: k-fold CV, resume, fusion, export, app-side loading, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.inference import EnsembleRunner, MemberInputs
from operators.model_manifest import load_model_set
from training.cases import Case, list_cases, load_case, save_case
from training.cli import main
from training.config import parse_config
from training.fusion import search_weights, weight_grid
from training.metrics import auc, auc_bootstrap_ci, calibration_plot, evaluate_scores
from training.trainer import stratified_folds, train

CONFIG = {
    "format": "tsc-training/1", "name": "tiny-test", "version": "0.0.1", "synthetic": True,
    "intended_use": "Unit tests only.", "folds": 2, "seed": 3, "calibration": "platt",
    "intended_population": {"age_years": {"min": 0, "max": 12}, "required_series": ["T2", "FLAIR"]},
    "grids": {"wae": {"shape": [16, 16, 16], "spacing_mm": [12.0, 12.0, 12.0]},
              "etsc": {"shape": [32, 32, 32], "spacing_mm": [6.0, 6.0, 6.0]}},
    "recipes": {"wae": {"loss": "focal", "lr": "1e-3", "batch_size": 4, "epochs": 2},
                "etsc": {"loss": "bce", "lr": 0.001, "batch_size": 4, "epochs": 1, "augment": True},
                # the clinical member learns the easy signal, so WAE-Net passes the has-learned test
                "clin": {"loss": "focal", "lr": 0.1, "batch_size": 4, "epochs": 4}},
    "members": {
        "flair_wae": {"architecture": "resnet3d-34", "hyperparameters": {"width_factor": 0.0625},
                      "input": "flair@wae", "recipe": "wae"},
        "clinical": {"architecture": "clinical-fcnn", "hyperparameters": {"hidden": [16, 8]},
                     "input": "clinical", "recipe": "clin"},
        "t2_etsc": {"architecture": "efficientnet3d-b0",
                    "hyperparameters": {"width_coefficient": 0.25, "depth_coefficient": 0.25},
                    "input": "t2@etsc", "recipe": "etsc"},
    },
    # EfficientNet-3D is slow on CPU: one such member, fused with the ResNet member by a weight search.
    "ensembles": {"WAE-Net": {"members": ["flair_wae", "clinical"], "weights": "equal"},
                  "eTSC-Net": {"members": ["t2_etsc", "flair_wae"], "weights": "search"}},
    "primary": "WAE-Net",
}


def _blob(shape, strength, rng):
    img = rng.random(shape, dtype=np.float32) * 0.3
    c = [s // 2 for s in shape]
    img[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, c[2] - 3:c[2] + 3] += strength
    return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    rng = np.random.default_rng(0)
    grids = {n: {"shape": g["shape"], "spacing_mm": g["spacing_mm"]} for n, g in CONFIG["grids"].items()}
    for i in range(12):
        label = i % 2
        strength = 0.6 if label else 0.1
        clinical = np.array([10 + 20 * (1 - label) + rng.normal(0, 3), 40.0, label, 1.0], np.float32)
        if i == 5:
            clinical[:] = np.nan  # a case without a usable clinical record
        images = {"flair@wae": _blob((16,) * 3, strength, rng), "t2@etsc": _blob((32,) * 3, strength, rng)}
        meta = {"grids": grids, "study_uid": f"1.2.3.{i}", "patient_key": f"p{i}"}
        save_case(folder, Case(f"case{i:02d}", label, images, clinical, meta))
    return folder


def _config():
    return parse_config(json.loads(json.dumps(CONFIG)), source="test")


def test_case_file_round_trip(cases_dir):
    files = list_cases(cases_dir)
    assert len(files) == 12
    case = load_case(files[1])
    assert case.label == 1 and case.images["flair@wae"].dtype == np.float32
    assert case.images["flair@wae"].shape == (16, 16, 16)
    assert load_case(files[5]).clinical_vector() is None


def test_stratified_folds_partition_and_balance():
    labels = [0] * 7 + [1] * 13
    folds = stratified_folds(labels, 5, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(20))
    assert all(sum(labels[i] for i in f) in (2, 3) for f in folds)
    assert folds == stratified_folds(labels, 5, seed=1)


def test_metrics_against_hand_computed_values(tmp_path):
    y = [0, 0, 1, 1, 1]
    s = [0.1, 0.6, 0.6, 0.8, 0.9]
    assert auc(y, s) == pytest.approx((1 + 1 + 1 + 1 + 1 + 0.5) / 6)  # one tie counts half
    m = evaluate_scores(y, s, threshold=0.5, n_boot=200)
    assert (m.accuracy, m.sensitivity, m.specificity) == pytest.approx((0.8, 1.0, 0.5))
    assert m.brier == pytest.approx(np.mean((np.array(s) - np.array(y)) ** 2))
    lo, hi = auc_bootstrap_ci(y, s, n_boot=200)
    assert 0 <= lo <= m.auc <= hi <= 1
    png = calibration_plot({"x": (y, s)}, tmp_path / "cal.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weight_search_grid_and_choice():
    grid = weight_grid(2)
    assert grid[0] == (0.1, 0.9) and grid[-1] == (0.9, 0.1) and len(grid) == 9
    assert all(abs(sum(w) - 1) < 1e-9 for w in weight_grid(4))
    y = [0, 0, 0, 1, 1, 1]
    good = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    bad = [0.9, 0.1, 0.5, 0.2, 0.6, 0.3]
    weights, best = search_weights(y, {"good": good, "bad": bad})
    assert weights["good"] > weights["bad"] and best == pytest.approx(1.0)


@pytest.mark.slow
def test_train_resume_fuse_export_load_evaluate(cases_dir, tmp_path):
    config = _config()
    # Interrupted after one epoch, then resumed: must equal an uninterrupted run exactly.
    work = tmp_path / "work"
    first = train(config, cases_dir, work, members=["flair_wae"], progress=False, stop_after_epochs=1)
    assert first["flair_wae"][0] == {"interrupted_after_epoch": 1}
    assert (work / "members/flair_wae/fold0.state.pt").is_file()
    assert not (work / "members/flair_wae/fold0.best.pt").exists()
    assert main(["train", "--config", "no-such-preset", "--cases", "y", "--workdir", "z",
                 "--no-progress"]) == 1  # unknown config: a configuration error, exit code 1
    resumed = train(config, cases_dir, work, members=["flair_wae"], progress=False)
    straight = train(config, cases_dir, tmp_path / "straight", members=["flair_wae"], progress=False)
    for k in range(2):
        a = torch.load(work / f"members/flair_wae/fold{k}.best.pt", weights_only=True)
        b = torch.load(tmp_path / f"straight/members/flair_wae/fold{k}.best.pt", weights_only=True)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert [f["best_epoch"] for f in resumed["flair_wae"]] == [f["best_epoch"] for f in straight["flair_wae"]]

    cfg_path = tmp_path / "cfg.yaml"
    import yaml
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "modelset"
    assert main(["all", "--config", str(cfg_path), "--cases", str(cases_dir), "--workdir", str(work),
                 "--out", str(out), "--no-progress", "--data-description", "8 random test cases"]) == 0
    fusion = json.loads((work / "fusion.json").read_text())
    # equal weights over the members that passed the has-learned test: the 2-epoch image member did not
    wae = fusion["ensembles"]["WAE-Net"]
    assert wae["weights"] == {"flair_wae": 0.0, "clinical": 1.0} and list(wae["excluded"]) == ["flair_wae"]
    assert fusion["members"]["clinical"]["learned"] and not fusion["members"]["flair_wae"]["learned"]
    # no eTSC-Net member learned: the ensemble is withheld, and the app will say "no prediction"
    assert fusion["ensembles"]["eTSC-Net"]["withheld"].startswith("not shown to have learned")
    assert fusion["members"]["clinical"]["n"] == 11  # case05 has no clinical record
    assert (work / "oof_calibration.png").is_file()

    ms = load_model_set(out)  # checksums verified
    assert ms.synthetic and len(ms.members["flair_wae"].folds) == 2
    assert ms.intended_population.age_range == "0-12 years"  # the gate survives a re-export
    for name, member in ms.members.items():  # what fuse fitted is what the app applies
        fitted = fusion["members"][name]["calibration"]
        assert (member.calibration.as_dict() if member.calibration else None) == fitted
    card = (out / "MODEL_CARD.md").read_text()
    assert "SYNTHETIC" in card and "not a clinical model" in card
    runner = EnsembleRunner(ms)
    case = load_case(list_cases(cases_dir)[0])
    pred = runner.predict(MemberInputs(images=case.images, clinical=case.clinical_vector()))
    assert 0 < pred.fused_score < 1 and pred.model_set_synthetic
    assert pred.other_ensembles == {} and pred.withheld_ensembles["eTSC-Net"] == ms.ensembles["eTSC-Net"].withheld

    ev = tmp_path / "eval"
    assert main(["evaluate", "--model-set", str(out), "--cases", str(cases_dir), "--out", str(ev),
                 "--no-progress"]) == 0
    report = json.loads((ev / "evaluation.json").read_text())
    # case05 has no clinical record, and WAE-Net rests on the clinical member: not analysable, as in the app
    assert report["n_cases"] == 11 and list(report["not_analysed"]) == ["case05"]
    assert set(report["ensembles"]) == {"WAE-Net", "eTSC-Net"}
    assert report["ensembles"]["eTSC-Net"] == {"withheld": ms.ensembles["eTSC-Net"].withheld}
    assert (ev / "calibration.png").is_file() and (ev / "predictions.csv").is_file()
    assert main(["card", "--config", str(cfg_path), "--workdir", str(work), "--model-set", str(out),
                 "--evaluation", str(ev / "evaluation.json")]) == 0
    card = (out / "MODEL_CARD.md").read_text()
    # the evaluation used the training cases: the card must say so, not call them held out
    assert "Evaluation (11 cases; NOT shown to be held out)" in card and "11 same case id" in card
    assert (out / "figures" / "heldout_calibration.png").is_file() and (out / "figures" / "oof_roc.png").is_file()
    load_model_set(out)  # rewriting the card keeps the set loadable


def test_resume_with_a_different_config_is_refused(cases_dir, tmp_path):
    from training.trainer import TrainingError

    config = _config()
    train(config, cases_dir, tmp_path / "w", members=["clinical"], progress=False)
    changed = json.loads(json.dumps(CONFIG))
    changed["seed"] = 4
    with pytest.raises(TrainingError, match="different config"):
        train(parse_config(changed), cases_dir, tmp_path / "w", members=["clinical"], progress=False)


def test_prepare_runs_the_app_stages_on_a_generated_study(tmp_path):
    synthetic = pytest.importorskip("synthetic")
    from training.config import load_config
    from training.prepare import prepare_studies

    study = synthetic.generate_study(tmp_path / "studies", seed=21, options=synthetic.StudyOptions(decoys=False))
    (tmp_path / "studies" / "not-a-study").mkdir()  # no DICOM: reported as failed, others go on
    config = load_config("demo")
    from app.config import AppConfig

    res = prepare_studies(tmp_path / "studies", tmp_path / "cases", config.grids, progress=False,
                          app_config=AppConfig(brain_extraction="fallback"))
    assert res.done == 1 and set(res.failed) == {"not-a-study"} and not res.clinical_missing
    case = load_case(tmp_path / "cases" / f"{study.sid}.npz")
    truth = json.loads((study.truth_dir / "truth.json").read_text())
    assert case.label == truth["label"]
    assert case.clinical_vector()[0] == pytest.approx(truth["clinical"]["age_at_seizure_onset_months"])
    for key in ("t2@wae", "flair@wae", "flair3@wae", "t2@etsc", "flair@etsc"):
        img = case.images[key]
        assert img.shape == tuple(config.grids[key.split("@")[1]].shape)
        assert img.min() >= 0 and img.max() <= 1.0 + 1e-3 and (img > 0).mean() > 0.05  # a brain is in the grid
    assert case.meta["brain_extraction_method"] == "fallback-morphology"
    assert case.meta["study_uid"] == study.study_uid if hasattr(study, "study_uid") else case.meta["study_uid"]
    assert len(case.meta["patient_key"]) == 16  # pseudonymous: the patient ID itself is not stored
