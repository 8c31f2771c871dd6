"""The words shared by the SR, the result page and the PDF: categories, threshold, precision, summaries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from operators.datatypes import MemberResult, Prediction, Preprocessed, QualityFlag
from operators import report_wording as words
from tests.output_fixtures import make_prediction


def prediction_with(members: list[tuple[float, tuple[float, ...]]], fused: float, threshold: float = 0.5) -> Prediction:
    results = [MemberResult(f"m{i}", True, folds, score, None, 1 / len(members), calibration="platt")
               for i, (score, folds) in enumerate(members)]
    return Prediction("WAE-Net", results, fused, threshold, fused >= threshold)


def test_members_on_both_sides_are_borderline():
    # the example: fused 0.57, members 0.496 .. 0.696, folds 0.26 .. 0.78
    p = prediction_with([(0.496, (0.26, 0.7)), (0.569, (0.5, 0.6)), (0.510, (0.4, 0.78)), (0.696, (0.6, 0.75))], 0.568)
    c = words.confidence(p)
    assert c.category == "borderline" and "0.496-0.696" in c.explanation


def test_fused_close_to_the_threshold_is_borderline():
    p = prediction_with([(0.53, (0.52, 0.54)), (0.54, (0.53, 0.55))], 0.535)
    assert words.confidence(p).category == "borderline"


def test_folds_across_the_threshold_are_leaning_and_all_on_one_side_consistent():
    leaning = prediction_with([(0.7, (0.45, 0.95)), (0.75, (0.7, 0.8))], 0.72)
    assert words.confidence(leaning).category == "leaning"
    consistent = prediction_with([(0.2, (0.1, 0.3)), (0.25, (0.2, 0.3))], 0.22)
    c = words.confidence(consistent)
    assert c.category == "consistent" and "all 4 fold models" in c.explanation
    assert words.outcome(consistent) == words.OUTCOME_CONTROLLED


def test_precision_keeps_the_side_of_the_threshold_visible():
    assert words.prob(0.496) == "0.496" and words.prob(0.5) == "0.500"
    assert words.rounded(0.56790964342007) == 0.568


def test_threshold_statement_with_and_without_a_recorded_rule():
    p = make_prediction()
    assert "records no rule" in words.threshold_statement(p)
    ruled = replace(p, threshold=0.62, threshold_rule={
        "rule": "youden", "description": "Youden's J", "fitted_on": "out-of-fold predictions of 200 cases",
        "sensitivity": 0.81, "sensitivity_ci": [0.74, 0.87], "specificity": 0.7})
    text = words.threshold_statement(ruled)
    assert "0.620" in text and "Youden's J, on out-of-fold predictions of 200 cases" in text
    assert "sensitivity 0.81 (95% CI 0.74-0.87), specificity 0.70" in text


def test_fallback_brain_extraction_is_a_degraded_mode():
    p = make_prediction(left_out=False)
    pre = Preprocessed(None, None, None, None, None, None, None, 0.0, 1000.0, "fallback-morphology")
    notes = words.degraded_modes(p, pre)
    assert len(notes) == 1 and "weight-free fallback" in notes[0]
    assert words.degraded_modes(p, replace(pre, brain_extraction_method="hd-bet")) == []
    flagged = replace(pre, flags=[QualityFlag("BRAIN_EXTRACTION_FALLBACK", "brain mask from the fallback", "warning")])
    assert words.degraded_modes(p, flagged) == ["WARNING: brain mask from the fallback"]  # said once


def test_reader_dates():
    assert words.reader_date("20190924") == "24 Sep 2019"
    assert words.reader_date("") == "-"


def test_model_card_summary_of_the_demo_card():
    card = Path(__file__).resolve().parents[2] / "models" / "MODEL_CARD.md"
    summary = words.model_card_summary_from(card)
    assert summary.startswith("Trained on SYNTHETIC data.")
    assert "Held-out WAE-Net: AUC" in summary and "Limitations:" in summary
    assert len(summary) <= 900
    assert words.model_card_summary_from(None) == ""
