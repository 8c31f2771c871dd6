"""Platt scaling of member probabilities, fitted on out-of-fold predictions.

Late fusion averages member probabilities, so a member whose outputs are
squeezed near 0.5 (focal loss does this: it down-weights confident cases)
carries less weight in the average than its accuracy deserves. Platt scaling
(Platt 1999) fits ``sigmoid(a * logit(p) + b)`` to the labels by maximum
likelihood, using Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and
``1 / (N- + 2)`` against over-fitting. The slope is positive for any member
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


def fit_platt(labels: Sequence[int], probabilities: Sequence[float], max_iter: int = 100) -> PlattCalibration | None:
    """Fit Platt scaling by Newton's method.

    Args:
        labels: 0/1 labels.
        probabilities: The member's uncalibrated probabilities, same order.
        max_iter: Newton iterations at most.

    Returns:
        The calibration, or None when it cannot be fitted (one class only, constant scores, or a slope that
        is not positive, i.e. the member ranks no better than chance); the reason is logged.
    """
    y = np.asarray(labels, dtype=np.float64)
    x = logit(probabilities)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0 or np.ptp(x) == 0:
        logger.warning("Platt scaling not fitted: needs both classes and varying scores")
        return None
    t = np.where(y > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    design = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.array([1.0, 0.0])
    for _ in range(max_iter):
        q = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (q - t)
        hess = design.T @ (design * (q * (1.0 - q))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    slope, intercept = float(theta[0]), float(theta[1])
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope <= 0:
        logger.warning("Platt scaling not fitted: slope %.3g (the member ranks no better than chance)", slope)
        return None
    return PlattCalibration(slope=slope, intercept=intercept)
