"""The hand-written numpy metrics and Platt fit that training used before scikit-learn (commit 069bb9b).

Kept only as the reference that ``test_training_sklearn.py`` compares scikit-learn's results
against on fixed inputs. Not used by the product.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(y, s) -> float:
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_metrics(y, s, threshold=0.5):
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    return (tp + tn) / y.size, tp / n_pos, tn / n_neg


def brier(y, s) -> float:
    return float(np.mean((np.asarray(s, dtype=float) - np.asarray(y)) ** 2))


def log_loss(y, p) -> float:
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    return float(np.mean(-(y * np.log(np.clip(p, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1)))))


def calibration_bins(y, s, n_bins=10):
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append((float(s[sel].mean()), float(y[sel].mean()), int(sel.sum())))
    return out


def fit_platt(labels, probabilities, max_iter=100):
    """Newton's method on Platt's smoothed targets; returns (slope, intercept) or None."""
    y = np.asarray(labels, dtype=np.float64)
    q0 = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    x = np.log(q0 / (1 - q0))
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0 or np.ptp(x) == 0:
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
    return (float(theta[0]), float(theta[1])) if theta[0] > 0 else None


def stratified_folds(labels, k, seed):
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(k)]
    offset = 0
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(int(i))
        offset += len(idx)
    return [sorted(f) for f in folds]
