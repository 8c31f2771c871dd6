"""Classification metrics for model sets: AUC with bootstrap CI, threshold metrics, Brier, calibration.

Plain numpy (no scikit-learn dependency). The positive class (label 1) is
"uncontrolled at one year".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

logger = logging.getLogger(__name__)


def _arrays(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class is absent."""
    y, s = _arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_bootstrap_ci(labels: Sequence[int], scores: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC (stratified resampling within each class)."""
    y, s = _arrays(labels, scores)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos.size == 0 or neg.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Resampled positives first, then negatives: every row has the same class counts.
    idx = np.concatenate([rng.choice(pos, (n_boot, pos.size)), rng.choice(neg, (n_boot, neg.size))], axis=1)
    ranks = rankdata(s[idx], axis=1)
    values = (ranks[:, :pos.size].sum(axis=1) - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one scorer on one labelled set."""

    n: int
    n_positive: int
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    accuracy: float
    sensitivity: float
    specificity: float
    brier: float
    threshold: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def threshold_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5
                      ) -> tuple[float, float, float]:
    """(accuracy, sensitivity, specificity) with positive = score >= threshold."""
    y, s = _arrays(labels, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    acc = (tp + tn) / y.size if y.size else float("nan")
    sen = tp / n_pos if n_pos else float("nan")
    spe = tn / n_neg if n_neg else float("nan")
    return float(acc), float(sen), float(spe)


def log_loss(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Mean binary cross-entropy (scikit-learn ``log_loss``; probabilities clipped to [1e-7, 1 - 1e-7])."""
    from sklearn.metrics import log_loss as sk_log_loss

    y, s = _arrays(labels, scores)
    return float(sk_log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), labels=[0, 1]))


def brier(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Mean squared error of the probabilities."""
    y, s = _arrays(labels, scores)
    return float(np.mean((s - y) ** 2))


def evaluate_scores(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5, n_boot: int = 2000,
                    seed: int = 0) -> BinaryMetrics:
    """All metrics of one scorer."""
    y, s = _arrays(labels, scores)
    lo, hi = auc_bootstrap_ci(y, s, n_boot=n_boot, seed=seed)
    acc, sen, spe = threshold_metrics(y, s, threshold)
    return BinaryMetrics(n=int(y.size), n_positive=int(y.sum()), auc=auc(y, s), auc_ci_low=lo, auc_ci_high=hi,
                         accuracy=acc, sensitivity=sen, specificity=spe, brier=brier(y, s), threshold=threshold)


def calibration_bins(labels: Sequence[int], scores: Sequence[float], n_bins: int = 10
                     ) -> list[tuple[float, float, int]]:
    """Equal-width bins over [0, 1]: (mean predicted, observed positive fraction, count) for non-empty bins."""
    y, s = _arrays(labels, scores)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append((float(s[sel].mean()), float(y[sel].mean()), int(sel.sum())))
    return out


def calibration_plot(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: str | Path,
                     title: str = "Calibration", n_bins: int = 10) -> Path:
    """Write a reliability diagram (PNG) with one curve per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    for name, (labels, scores) in curves.items():
        bins = calibration_bins(labels, scores, n_bins)
        if bins:
            xs, ys, ns = zip(*bins)
            ax.plot(xs, ys, marker="o", label=f"{name} (Brier {brier(labels, scores):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of uncontrolled epilepsy")
    ax.set_ylabel("observed fraction uncontrolled")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
