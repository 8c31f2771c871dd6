"""The training CLI's errors, interruption, overrides and stop/resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from training.cases import Case, LabelsError, read_labels_csv, save_case
from training.cli import main
from training.config import TrainingConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "format": "tsc-training/1", "name": "cli-test", "version": "0.0.1", "synthetic": True,
    "intended_use": "Unit tests only.", "folds": 2, "seed": 0,
    "grids": {"wae": {"shape": [16, 16, 16], "spacing_mm": [12.0, 12.0, 12.0]}},
    # a high learning rate so that the member learns the (easy) signal in a few epochs: a set whose
    # primary ensemble has not learned is not exported
    "recipes": {"clin": {"loss": "focal", "lr": 0.1, "batch_size": 4, "epochs": 3}},
    "members": {"clinical": {"architecture": "clinical-fcnn", "hyperparameters": {"hidden": [8]},
                             "input": "clinical", "recipe": "clin"}},
    "ensembles": {"C": {"members": ["clinical"], "weights": "equal", "threshold": "youden"}},
    "primary": "C",
}


def _cases(folder: Path, n: int = 16, grid_shape=(16, 16, 16)) -> Path:
    rng = np.random.default_rng(0)
    grids = {"wae": {"shape": list(grid_shape), "spacing_mm": [12.0, 12.0, 12.0]}}
    for i in range(n):
        label = i % 2
        clinical = np.array([5 + 25 * (1 - label) + rng.normal(0, 4), 40.0, label, 1.0], np.float32)
        save_case(folder, Case(f"c{i:02d}", label, {}, clinical, {"grids": grids, "patient_key": f"p{i}"}))
    return folder


def _config_file(tmp_path: Path, **changes) -> Path:
    cfg = json.loads(json.dumps(CONFIG))
    cfg.update(changes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("text,message", [
    ("case_id,label\na,1\nb,2\n", "labels.csv row 3 (case b): label must be 0 or 1, got '2'"),
    ("case_id,label\na,1\n,0\n", "labels.csv row 3: case_id is empty"),
    ("case_id,label\na,1\na,0\n", "labels.csv row 3: case a is listed twice"),
    ("case,label\na,1\n", "labels.csv: missing column(s) case_id"),
])
def test_bad_labels_csv_names_file_row_and_field(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelsError) as err:
        read_labels_csv(path)
    assert message in str(err.value)


def test_bad_labels_row_stops_prepare_with_exit_2(tmp_path, capsys):
    (tmp_path / "studies" / "s1").mkdir(parents=True)
    (tmp_path / "labels.csv").write_text("case_id,label\ns1,yes\n")
    assert main(["prepare", "--studies", str(tmp_path / "studies"), "--out", str(tmp_path / "c"),
                 "--labels", str(tmp_path / "labels.csv"), "--config", "demo", "--no-progress"]) == 2
    assert "labels.csv row 2 (case s1): label must be 0 or 1, got 'yes'" in capsys.readouterr().err


def test_config_without_name_names_the_field(tmp_path, capsys):
    raw = json.loads(json.dumps(CONFIG))
    del raw["name"]
    with pytest.raises(TrainingConfigError, match=r"name: missing"):
        parse_config(raw, source="site.yaml")
    cfg = tmp_path / "noname.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    # a configuration error exits 1, as in the app and the node; bad data exits 2
    assert main(["train", "--config", str(cfg), "--cases", str(tmp_path), "--workdir", str(tmp_path / "w")]) == 1
    assert "noname.yaml: name: missing" in capsys.readouterr().err
    raw["name"], raw["members"]["clinical"]["recipie"] = "site", "clin"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(cfg), "--cases", str(tmp_path), "--workdir", str(tmp_path / "w")]) == 1
    assert "unknown setting(s) in members.clinical: members.clinical.recipie" in capsys.readouterr().err


def test_cases_from_another_grid_give_a_clear_error(tmp_path, capsys):
    cases = _cases(tmp_path / "cases", grid_shape=(32, 32, 32))
    assert main(["train", "--config", str(_config_file(tmp_path)), "--cases", str(cases),
                 "--workdir", str(tmp_path / "w"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "c00.npz: prepared for grid wae" in err and "expected shape [16, 16, 16]" in err
    assert "Traceback" not in err


def test_folds_and_epochs_overrides_stop_resume_and_card(tmp_path, capsys):
    cases = _cases(tmp_path / "cases")
    cfg = _config_file(tmp_path)
    common = ["--config", str(cfg), "--cases", str(cases), "--workdir", str(tmp_path / "w"), "--out",
              str(tmp_path / "set"), "--no-progress", "--folds", "3", "--epochs", "clin=4"]
    assert main(["all", *common, "--stop-after-epochs", "2"]) == 0
    assert "stopped early" in capsys.readouterr().out
    assert not (tmp_path / "set").exists()
    assert main(["all", *common, "--stop-after-epochs", "2"]) == 0  # epochs 3-4: every fold finishes
    assert (tmp_path / "set" / "manifest.yaml").is_file()
    summary = json.loads((tmp_path / "w" / "members" / "clinical" / "fold2.oof.json").read_text())["summary"]
    assert summary["epochs"] == 4
    card = (tmp_path / "set" / "MODEL_CARD.md").read_text()
    assert "overrides of the config: {'folds': 3, 'epochs': {'clin': 4}}" in card
    assert "| clinical | 2 |" in card  # three folds
    # a changed override on the same work folder is refused
    assert main(["train", "--config", str(cfg), "--cases", str(cases), "--workdir", str(tmp_path / "w"),
                 "--epochs", "5", "--no-progress"]) == 2
    assert "different config" in capsys.readouterr().err


def test_folds_trained_in_separate_runs_equal_one_run(tmp_path):
    import torch

    cases = _cases(tmp_path / "cases")
    cfg = _config_file(tmp_path)
    base = ["train", "--config", str(cfg), "--cases", str(cases), "--no-progress"]
    assert main([*base, "--workdir", str(tmp_path / "one")]) == 0
    for k in (1, 0):  # one run per fold, as parallel processes would do
        assert main([*base, "--workdir", str(tmp_path / "apart"), "--fold", str(k)]) == 0
    for k in (0, 1):
        a = torch.load(tmp_path / f"one/members/clinical/fold{k}.best.pt", weights_only=True)
        b = torch.load(tmp_path / f"apart/members/clinical/fold{k}.best.pt", weights_only=True)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert main([*base, "--workdir", str(tmp_path / "bad"), "--fold", "2"]) == 2


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path):
    cases = _cases(tmp_path / "cases", n=40)
    cfg = _config_file(tmp_path, recipes={"clin": {"loss": "focal", "lr": 0.01, "batch_size": 2, "epochs": 400}})
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "training", "train", "--config", str(cfg), "--cases", str(cases), "--workdir",
           str(work), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = work / "members" / "clinical" / "fold0.state.pt"
    deadline = time.monotonic() + 120
    while not state.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err and "run the same command again" in err
    assert not list(work.rglob("*.tmp"))
    saved = __import__("torch").load(state, weights_only=False)["progress"]["epoch"]
    assert 0 < saved < 400


def test_scoring_differences_between_manifests(tmp_path):
    from training.provenance import held_out_check, scoring_differences

    base = {"name": "x", "members": {"m": {"folds": [{"sha256": "a"}]}}, "ensembles": {"E": {"threshold": 0.4}}}
    for name, extra in (("a", {}), ("b", {"intended_population": {"age_years": {"min": 0, "max": 18}}}),
                        ("c", {"ensembles": {"E": {"threshold": 0.5}}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.yaml").write_text(yaml.safe_dump({**base, **extra}))
    assert scoring_differences(tmp_path / "a", tmp_path / "b") == (True, ["intended_population"])
    assert scoring_differences(tmp_path / "a", tmp_path / "c") == (False, ["ensembles"])
    training = {"t1": {"study_uid": "1.2.1", "patient_key": "p1"}, "t2": {"study_uid": "1.2.2", "patient_key": "p2"}}
    assert held_out_check([{"case_id": "e1", "study_uid": "1.2.9", "patient_key": "p9"}], training)["held_out"]
    leaked = held_out_check([{"case_id": "e1", "study_uid": "1.2.2", "patient_key": "p9"},
                             {"case_id": "e2", "study_uid": None, "patient_key": "p1"}], training)
    assert not leaked["held_out"] and leaked["same_study_uid"] == ["e1"] and leaked["same_patient"] == ["e2"]
    assert leaked["without_study_uid"] == 1


def test_repetitions_average_out_of_fold_predictions_and_can_be_added_later(tmp_path, capsys):
    import torch

    from training.trainer import load_oof

    cases = _cases(tmp_path / "cases", n=24)
    work = tmp_path / "w"

    def cfg(repeats: int) -> str:  # enough epochs for the member to learn, so the set can be exported
        recipe = {"loss": "focal", "lr": 0.01, "batch_size": 4, "epochs": 20}
        return str(_config_file(tmp_path, repeats=repeats, recipes={"clin": recipe}))

    common = ["--cases", str(cases), "--workdir", str(work), "--no-progress"]
    assert main(["train", "--config", cfg(1), *common]) == 0
    first = torch.load(work / "members/clinical/fold0.best.pt", weights_only=True)
    single = load_oof(work, "clinical", 2)
    # two more repetitions on the finished folder: repetition 0 is kept as it was
    assert main(["train", "--config", cfg(3), *common]) == 0
    again = torch.load(work / "members/clinical/fold0.best.pt", weights_only=True)
    assert all(torch.equal(first[n], again[n]) for n in first)
    split = json.loads((work / "split.json").read_text())
    assert len(split["repeats"]) == 2 and split["repeats"][0]["folds"] != split["folds"]
    per_repeat = []
    for r, stem in enumerate(("fold{k}", "repeat1.fold{k}", "repeat2.fold{k}")):
        scores = {}
        for k in range(2):
            d = json.loads((work / "members/clinical" / f"{stem.format(k=k)}.oof.json").read_text())
            assert d["summary"]["repeat"] == r
            scores.update(zip(d["case_ids"], d["scores"]))
        per_repeat.append(scores)
    averaged = load_oof(work, "clinical", 2, repeats=3)
    assert set(averaged) == set(single) and len(averaged) == 24
    for c, (label, p) in averaged.items():
        assert p == pytest.approx(np.mean([s[c] for s in per_repeat]))
        assert label == single[c][0]
    # fuse, export and card read the repetitions from the work folder's config
    assert main(["fuse", "--config", cfg(3), "--workdir", str(work)]) == 0
    assert "3 times with different seeds" in json.loads((work / "fusion.json").read_text())["scheme"]
    assert main(["export", "--config", cfg(3), "--workdir", str(work),
                 "--out", str(tmp_path / "set")]) == 0
    card = (tmp_path / "set" / "MODEL_CARD.md").read_text()
    assert "2 outer folds, 3 repetitions of the nested split" in card and "| clinical | 1 (repetition 2) |" in card
    assert len(list((tmp_path / "set").rglob("*.pt"))) == 2  # only repetition 0 is exported
    # fewer repetitions than the folder has: refused
    assert main(["train", "--config", cfg(2), *common]) == 2
    assert "has 3 repetitions" in capsys.readouterr().err
