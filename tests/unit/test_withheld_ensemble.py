"""An ensemble that has not learned is reported as "no prediction", never as a probability.

Training marks it (no member passed the has-learned test), the export writes ``withheld`` into
the manifest, the runner skips it, and every report says "no prediction" with the reason.
"""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from operators.errors import ModelConfigurationError
from operators.inference import EnsembleRunner, RunnerOptions
from operators.model_manifest import load_model_set
from operators.report_wording import other_ensemble_lines
from tests.unit._model_sets import make_model_set
from tests.unit.test_inference import _inputs
from training.config import parse_config
from training.fusion import fit_fusion

PROBS = {"t2_wae": [0.2, 0.4], "clinical": [0.3, 0.5], "t2_etsc": [0.4, 0.4], "flair_etsc": [0.9, 0.7]}
REASON = "not shown to have learned: no member's out-of-fold AUC 95% CI excluded chance"


def test_fusion_withholds_an_ensemble_with_no_learned_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    informative = np.clip(y * 0.6 + rng.normal(0.2, 0.15, y.size), 0.01, 0.99)
    preds = {m: {f"c{i}": (int(y[i]), float(informative[i] if m in ("t2_wae", "clinical") else rng.random()))
                 for i in range(y.size)} for m in PROBS}
    config = parse_config({
        "format": "tsc-training/1", "name": "t", "folds": 2,
        "grids": {"wae": {"shape": [16, 16, 16], "spacing_mm": [12, 12, 12]},
                  "etsc": {"shape": [32, 32, 32], "spacing_mm": [6, 6, 6]}},
        "recipes": {"r": {}},
        "members": {"t2_wae": {"architecture": "clinical-fcnn", "input": "clinical", "recipe": "r"},
                    "clinical": {"architecture": "clinical-fcnn", "input": "clinical", "recipe": "r"},
                    "t2_etsc": {"architecture": "clinical-fcnn", "input": "clinical", "recipe": "r"},
                    "flair_etsc": {"architecture": "clinical-fcnn", "input": "clinical", "recipe": "r"}},
        "ensembles": {"WAE-Net": {"members": ["t2_wae", "clinical"], "weights": "equal"},
                      "eTSC-Net": {"members": ["t2_etsc", "flair_etsc"], "weights": "equal"}},
        "primary": "WAE-Net"})
    fit = fit_fusion(config, preds, n_boot=500)
    assert fit.ensembles["WAE-Net"].withheld == ""
    withheld = fit.ensembles["eTSC-Net"].withheld
    assert withheld.startswith(REASON) and "t2_etsc 0." in withheld and "flair_etsc 0." in withheld


def test_the_app_reports_no_prediction_for_a_withheld_ensemble(tmp_path) -> None:
    ms = make_model_set(tmp_path, PROBS, withheld={"eTSC-Net": REASON})
    manifest = yaml.safe_load((ms.root / "manifest.yaml").read_text())
    assert manifest["ensembles"]["eTSC-Net"]["withheld"] == REASON
    assert "withheld" not in manifest["ensembles"]["WAE-Net"]
    pred = EnsembleRunner(ms, RunnerOptions(device="cpu", engine="pytorch")).predict(
        _inputs(np.random.default_rng(1)))
    assert pred.ensemble == "WAE-Net" and pred.fused_score == pytest.approx((0.3 + 0.4) / 2, abs=1e-3)
    assert pred.other_ensembles == {} and pred.withheld_ensembles == {"eTSC-Net": REASON}
    assert other_ensemble_lines(pred) == [f"eTSC-Net: no prediction ({REASON})"]


def test_a_model_set_whose_primary_is_withheld_does_not_load(tmp_path) -> None:
    ms = make_model_set(tmp_path, PROBS, withheld={"eTSC-Net": REASON})
    manifest = yaml.safe_load((ms.root / "manifest.yaml").read_text())
    manifest["primary"] = "eTSC-Net"
    (ms.root / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelConfigurationError, match="primary ensemble eTSC-Net is withheld"):
        load_model_set(ms.root)
    manifest["primary"], manifest["ensembles"]["eTSC-Net"]["withheld"] = "WAE-Net", 3
    (ms.root / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelConfigurationError, match="withheld: must be the reason as text"):
        load_model_set(ms.root)


def test_the_shipped_demo_set_withholds_its_unlearned_ensemble() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    ms = load_model_set(repo / "models")
    card = (repo / "models" / "MODEL_CARD.md").read_text()
    for name, ens in ms.ensembles.items():
        if "no member of " + name + " passed the has-learned test" in card:
            assert ens.withheld.startswith("not shown to have learned"), name
    assert not ms.primary_ensemble.withheld


def test_sr_and_pdf_say_no_prediction_for_a_withheld_ensemble(tmp_path) -> None:
    import pydicom

    from operators.output_config import OutputConfig
    from operators.study_outputs import write_study_outputs
    from tests.output_fixtures import StudyHeader, make_prediction, make_selected
    from tests.unit.test_pdf_report import _pdf_text

    prediction = make_prediction()
    prediction.withheld_ensembles = {"eTSC-Net": REASON}
    written = write_study_outputs(tmp_path / "out", prediction, make_selected(StudyHeader(), slices=3), None,
                                  config=OutputConfig(result_page=False))
    sr_text = " ".join(str(e.value) for e in pydicom.dcmread(written.sr).iterall() if e.keyword == "TextValue")
    assert f"eTSC-Net: no prediction ({REASON})" in sr_text
    pdf = bytes(pydicom.dcmread(written.pdf).EncapsulatedDocument).rstrip(b"\0")
    assert "eTSC-Net: no prediction (not shown to have learned" in " ".join(_pdf_text(pdf, tmp_path).split())
