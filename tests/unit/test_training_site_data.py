"""Training end to end from study folders plus the site's clinical lookup CSV (no clinical.json)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from training.cases import list_cases, load_case
from training.cli import main
from training.config import parse_config
from training.model_card import render_model_card

# Seeds of the demo training range whose generated label is 0 and 1 (five each, so that two nested folds
# have both classes everywhere).
CONTROLLED = (100002, 100005, 100006, 100009, 100013)
UNCONTROLLED = (100000, 100001, 100003, 100004, 100007)

CONFIG = {
    "format": "tsc-training/1", "name": "site-csv-test", "version": "0.0.1", "synthetic": True,
    "intended_use": "Unit tests only.", "folds": 2, "seed": 0, "calibration": "platt",
    "grids": {"wae": {"shape": [64, 64, 64], "spacing_mm": [3.0, 3.0, 3.0]},
              "etsc": {"shape": [64, 64, 32], "spacing_mm": [3.0, 3.0, 6.0]}},
    "recipes": {"img": {"loss": "focal", "lr": 0.001, "batch_size": 4, "epochs": 1},
                "clin": {"loss": "focal", "lr": 0.001, "batch_size": 4, "epochs": 3}},
    "members": {
        "flair_wae": {"architecture": "resnet3d-34", "hyperparameters": {"width_factor": 0.0625},
                      "input": "flair@wae", "recipe": "img"},
        "clinical": {"architecture": "clinical-fcnn", "hyperparameters": {"log_ages": True},
                     "input": "clinical", "recipe": "clin"},
    },
    "ensembles": {"WAE-Net": {"members": ["flair_wae", "clinical"], "weights": "equal", "threshold": "youden"}},
    "primary": "WAE-Net",
}


@pytest.mark.slow
def test_prepare_train_export_with_the_site_lookup_table(tmp_path, capsys):
    synthetic = pytest.importorskip("synthetic")
    studies = tmp_path / "studies"
    rows = []
    for seed in CONTROLLED + UNCONTROLLED:
        study = synthetic.generate_study(studies, seed=seed, options=synthetic.StudyOptions(decoys=False))
        record_file = study.input_dir / "clinical.json" if hasattr(study, "input_dir") else \
            studies / study.sid / "input" / "clinical.json"
        record = json.loads(record_file.read_text())
        record_file.unlink()  # the site keeps clinical records in its lookup table, not beside the images
        if seed == CONTROLLED[0]:
            continue  # one study has no record at all: counted and reported before training
        rows.append({k: record[k] for k in ("accession_number", "age_at_seizure_onset_months", "infantile_spasms",
                                            "asm_count_ge_3")})
    lookup = tmp_path / "site-clinical.csv"
    with open(lookup, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    app_config = tmp_path / "site.yaml"
    app_config.write_text(yaml.safe_dump({"clinical_lookup": lookup.name, "brain_extraction": "fallback"}))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))

    cases = tmp_path / "cases"
    assert main(["prepare", "-c", str(app_config), "--studies", str(studies), "--out", str(cases),
                 "--config", str(cfg), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 10 case(s) (5 uncontrolled, 5 controlled); 0 failed; 1 without a usable clinical record" \
        in printed
    assert f"no clinical record SYN-{CONTROLLED[0]:06d}" in printed
    first = load_case(list_cases(cases)[1])
    assert first.clinical_vector() is not None and first.meta["clinical_sources"] == [f"{lookup.name}"] or \
        any(lookup.name in s for s in first.meta["clinical_sources"])

    # Ten studies and 1-3 epochs: nothing learns, so the set is refused at export, with the reason, after
    # training and fusion have run on the site's records.
    out = tmp_path / "modelset"
    assert main(["all", "--config", str(cfg), "--cases", str(cases), "--workdir", str(tmp_path / "work"),
                 "--out", str(out), "--no-progress"]) == 2
    assert "primary ensemble WAE-Net is not shown to have learned" in capsys.readouterr().err
    assert not out.exists()
    fusion = json.loads((tmp_path / "work" / "fusion.json").read_text())
    assert fusion["members"]["clinical"]["n"] == 9  # the study without a record is left out of that member only
    assert fusion["members"]["flair_wae"]["n"] == 10
    assert fusion["ensembles"]["WAE-Net"]["threshold_rule"] == {"rule": "youden"}
    card = render_model_card(parse_config(CONFIG), {}, fusion, None, None, "ten synthetic studies")
    assert "1 case(s) had no usable clinical record" in card
