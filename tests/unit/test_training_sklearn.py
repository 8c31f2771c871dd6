"""scikit-learn metrics, calibration and splits against the previous hand-written implementation, fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from tests.unit import _previous_training_metrics as previous
from training import metrics
from training.calibration import fit_platt, logit
from training.trainer import TrainingError, grouped_folds


def _fixed(n=240, seed=7, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.65).astype(int)
    s = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.5, n))))
    if ties:
        s = np.round(s, 2)  # ties, as a member with few distinct outputs has
    return y, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_threshold_metrics_brier_log_loss_match_previous(seed):
    y, s = _fixed(seed=seed)
    assert metrics.auc(y, s) == pytest.approx(previous.auc(y, s), abs=1e-12)
    for t in (0.3, 0.5, 0.71):
        assert metrics.threshold_metrics(y, s, t) == pytest.approx(previous.threshold_metrics(y, s, t), abs=1e-12)
    assert metrics.brier(y, s) == pytest.approx(previous.brier(y, s), abs=1e-12)
    assert metrics.log_loss(y, s) == pytest.approx(previous.log_loss(y, s), abs=1e-6)  # clipping of 0/1 differs in the last digits


def test_bootstrap_rank_statistic_equals_roc_auc_score():
    y, s = _fixed(n=60, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(20):  # the vectorised Mann-Whitney formula in auc_bootstrap_ci is roc_auc_score
        idx = rng.choice(len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            pos = idx[y[idx] == 1]
            ranks = rankdata(s[idx])
            mw = (ranks[y[idx] == 1].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * (len(idx) - pos.size))
            assert mw == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    lo, hi = metrics.auc_bootstrap_ci(y, s, n_boot=500)
    assert lo < metrics.auc(y, s) < hi


def test_calibration_bins_match_previous_off_the_bin_edges():
    y, s = _fixed(seed=5, ties=False)
    np.testing.assert_allclose(np.array(metrics.calibration_bins(y, s)), np.array(previous.calibration_bins(y, s)),
                               atol=1e-12)


@pytest.mark.parametrize("slope,intercept", [(0.5, 0.3), (2.0, -0.4), (4.7, -0.2)])
def test_platt_logistic_regression_matches_previous_newton_fit(slope, intercept):
    """Same smoothed-target maximum-likelihood fit, two solvers: same parameters and probabilities."""
    rng = np.random.default_rng(11)
    raw = rng.uniform(0.05, 0.95, 400)
    truth = 1 / (1 + np.exp(-(slope * logit(raw) + intercept)))
    y = (rng.random(400) < truth).astype(int)
    new = fit_platt(y, raw)
    old_slope, old_intercept = previous.fit_platt(y, raw)
    assert new.slope == pytest.approx(old_slope, rel=1e-4)
    assert new.intercept == pytest.approx(old_intercept, abs=1e-4)
    old_p = 1 / (1 + np.exp(-(old_slope * logit(raw) + old_intercept)))
    assert np.max(np.abs(np.array([new.apply(p) for p in raw]) - old_p)) < 1e-5


def test_grouped_folds_keep_patients_together_and_stratify():
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(60)]
    groups, labels = [], []
    for p in patients:  # a third of the children have a repeat scan
        label = int(rng.random() < 0.6)
        for _ in range(1 + (rng.random() < 0.33)):
            groups.append(p)
            labels.append(label)
    folds = grouped_folds(labels, groups, 5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(len(labels)))
    for f in folds:
        other = set(range(len(labels))) - set(f)
        assert not {groups[i] for i in f} & {groups[i] for i in other}  # no child on both sides
        frac = np.mean([labels[i] for i in f])
        assert abs(frac - np.mean(labels)) < 0.15
    # the previous split put repeat scans of one child on both sides
    old = previous.stratified_folds(labels, 5, seed=0)
    assert any({groups[i] for i in f} & {groups[i] for i in set(range(len(labels))) - set(f)} for f in old)


def test_grouped_folds_name_the_class_that_is_too_small():
    with pytest.raises(TrainingError, match="class 0: 2 patient"):
        grouped_folds([0, 0, 1, 1, 1, 1, 1], list("abcdefg"), 3, seed=0)


def test_threshold_rules_and_intervals():
    y, s = _fixed(seed=9, ties=False)
    t = metrics.choose_threshold(y, s, {"rule": "youden"})
    _, sen, spe = metrics.threshold_metrics(y, s, t)
    # no other candidate threshold has a larger Youden's J
    assert all(sum(metrics.threshold_metrics(y, s, c)[1:]) <= sen + spe + 1e-12 for c in np.unique(s))
    t90 = metrics.choose_threshold(y, s, {"rule": "sensitivity", "target": 0.9})
    assert metrics.threshold_metrics(y, s, t90)[1] >= 0.9
    assert metrics.threshold_metrics(y, s, np.nextafter(t90, 1))[1] < 0.9  # the highest such threshold
    m = metrics.evaluate_scores(y, s, threshold=t)
    assert m.sensitivity_ci_low < m.sensitivity < m.sensitivity_ci_high
    assert metrics.proportion_ci(0, 10)[0] == 0.0 and 0 < metrics.proportion_ci(0, 10)[1] < 0.35
    tiny = metrics.evaluate_scores([0, 0, 1, 1, 1], [0.2, 0.6, 0.5, 0.7, 0.9]).as_dict()
    assert "small evaluation (3 uncontrolled, 2 controlled)" in tiny["warnings"][0]
    one = metrics.evaluate_scores([1, 1, 1], [0.2, 0.6, 0.5]).as_dict()
    assert "one class only" in one["warnings"][0] and np.isnan(one["auc"])
