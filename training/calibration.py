"""Platt scaling of member probabilities, fitted on out-of-fold predictions.

Late fusion averages member probabilities, so a member whose outputs are
squeezed near 0.5 (focal loss does this: it down-weights confident cases)
carries less weight in the average than its accuracy deserves. Platt scaling
(Platt 1999) fits ``sigmoid(a * logit(p) + b)`` to the labels by maximum
likelihood (scikit-learn's ``LogisticRegression`` on the log-odds). The slope is positive for any member
that ranks better than chance, so calibration never changes a member's AUC;
it changes how much each member moves the fused score.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from operators.model_manifest import PlattCalibration

logger = logging.getLogger(__name__)

_EPS = 1e-7


def logit(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Log-odds of probabilities clipped to [1e-7, 1 - 1e-7]."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q / (1.0 - q))


def fit_platt(labels: Sequence[int], probabilities: Sequence[float]) -> PlattCalibration | None:
    """Fit Platt scaling: an unpenalised scikit-learn logistic regression of the labels on logit(p).

    Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` (as scikit-learn's
    ``CalibratedClassifierCV(method="sigmoid")`` uses them) are fitted exactly by giving each
    case twice, as a positive with weight t and as a negative with weight 1 - t. A unit test
    compares the result with the previous hand-written Newton fit.

    Args:
        labels: 0/1 labels.
        probabilities: The member's uncalibrated probabilities, same order.

    Returns:
        The calibration, or None when it cannot be fitted (one class only, constant scores, or a slope that
        is not positive, i.e. the member ranks no better than chance); the reason is logged.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels, dtype=np.int64)
    x = logit(probabilities)
    if len(set(y.tolist())) < 2 or np.ptp(x) < 1e-9:
        logger.warning("Platt scaling not fitted: needs both classes and varying scores")
        return None
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(
        np.concatenate([x, x])[:, None], np.r_[np.ones_like(y), np.zeros_like(y)], sample_weight=np.r_[t, 1.0 - t])
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope <= 0:
        logger.warning("Platt scaling not fitted: slope %.3g (the member ranks no better than chance)", slope)
        return None
    return PlattCalibration(slope=slope, intercept=intercept)
