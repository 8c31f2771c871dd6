"""A member trained on shuffled labels: its out-of-fold AUC must be within chance and it must get no weight.

Shuffling one member's labels is done by shuffling its input across cases (the image that carries
the label's signal goes to a random case), which is the same thing for that member while the
other member keeps its true signal.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.cases import Case, save_case
from training.config import parse_config
from training.evaluation import fuse_oof
from training.trainer import train

CONFIG = {
    "format": "tsc-training/1", "name": "shuffle-test", "version": "0.0.1", "synthetic": True,
    "intended_use": "Unit tests only.", "folds": 3, "seed": 1, "calibration": "platt",
    "grids": {"wae": {"shape": [16, 16, 16], "spacing_mm": [12.0, 12.0, 12.0]}},
    "recipes": {"img": {"loss": "focal", "lr": 0.001, "batch_size": 6, "epochs": 4},
                "clin": {"loss": "focal", "lr": 0.01, "batch_size": 6, "epochs": 25}},
    "members": {
        "flair_wae": {"architecture": "resnet3d-34", "hyperparameters": {"width_factor": 0.0625},
                      "input": "flair@wae", "recipe": "img"},
        "clinical": {"architecture": "clinical-fcnn", "hyperparameters": {"hidden": [16, 8]},
                     "input": "clinical", "recipe": "clin"},
    },
    "ensembles": {"WAE-Net": {"members": ["flair_wae", "clinical"], "weights": "equal", "threshold": "youden"}},
    "primary": "WAE-Net",
}


@pytest.mark.slow
def test_member_with_shuffled_labels_is_within_chance_and_gets_no_weight(tmp_path):
    rng = np.random.default_rng(0)
    n = 48
    labels = np.array([i % 2 for i in range(n)])
    images = []
    for lab in labels:
        img = rng.random((16, 16, 16), dtype=np.float32) * 0.3
        img[5:11, 5:11, 5:11] += 0.6 if lab else 0.05
        images.append(np.clip(img, 0, 1))
    shuffled = rng.permutation(n)  # flair_wae sees another case's image: its labels are shuffled
    grids = {"wae": {"shape": [16, 16, 16], "spacing_mm": [12.0, 12.0, 12.0]}}
    for i, lab in enumerate(labels):
        onset = rng.normal(6.0, 2.0) if lab else rng.normal(30.0, 5.0)
        clinical = np.array([onset, 40.0, float(lab and rng.random() < 0.7), 1.0], np.float32)
        save_case(tmp_path / "cases", Case(f"c{i:02d}", int(lab), {"flair@wae": images[shuffled[i]]}, clinical,
                                           {"grids": grids, "patient_key": f"p{i}", "study_uid": f"1.2.{i}"}))
    config = parse_config(json.loads(json.dumps(CONFIG)))
    train(config, tmp_path / "cases", tmp_path / "work", progress=False)
    fusion = fuse_oof(config, tmp_path / "work", n_boot=1000)

    shuffled_member = fusion["members"]["flair_wae"]
    lo, hi = shuffled_member["auc_uncalibrated_ci"]
    assert lo <= 0.5 <= hi and not shuffled_member["learned"]
    assert "does not exclude chance" in shuffled_member["not_learned_reason"]
    assert fusion["members"]["clinical"]["learned"]
    ens = fusion["ensembles"]["WAE-Net"]
    assert ens["weights"] == {"flair_wae": 0.0, "clinical": 1.0}
    assert "flair_wae" in ens["excluded"]
    # the reported out-of-fold predictions were never used to choose an epoch: each fold's chosen
    # model predicted only cases outside its inner training and validation parts
    split = json.loads((tmp_path / "work" / "split.json").read_text())
    for k, outer in enumerate(split["folds"]):
        assert not set(outer) & set(split["inner_validation"][k])
        oof = json.loads((tmp_path / "work" / "members" / "flair_wae" / f"fold{k}.oof.json").read_text())
        assert sorted(oof["case_ids"]) == sorted(outer) and oof["summary"]["selection"] == "inner validation"
