"""Classification metrics for model sets: AUC with bootstrap CI, threshold metrics with CIs, Brier, ROC, calibration.

scikit-learn computes the metrics (``roc_auc_score``, ``roc_curve``,
``confusion_matrix``, ``brier_score_loss``, ``log_loss``, ``calibration_curve``);
this module adds what it lacks: a stratified bootstrap CI of the AUC, Wilson
CIs of sensitivity and specificity, threshold rules, and the plots. The
positive class (label 1) is "uncontrolled at one year".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import binomtest, rankdata
from sklearn import metrics as skm

logger = logging.getLogger(__name__)

# Evaluations smaller than this (per class) get a warning in reports and the model card.
SMALL_CLASS = 10


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


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); NaN if one class is absent."""
    y, s = _arrays(labels, scores)
    return float(skm.roc_auc_score(y, s)) if _both_classes(y) else float("nan")


def auc_bootstrap_ci(labels: Sequence[int], scores: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC (stratified resampling within each class).

    The AUC of each resample is the Mann-Whitney statistic with mid-ranks, which equals
    ``roc_auc_score`` (a unit test checks this); computing it on all resamples at once keeps
    2000 resamples fast.
    """
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


def proportion_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (``scipy.stats.binomtest``); NaN when ``n`` is 0."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one scorer on one labelled set (sensitivity/specificity at ``threshold``)."""

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
    sensitivity_ci_low: float = float("nan")
    sensitivity_ci_high: float = float("nan")
    specificity_ci_low: float = float("nan")
    specificity_ci_high: float = float("nan")

    @property
    def n_negative(self) -> int:
        return self.n - self.n_positive

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_negative": self.n_negative, "warnings": evaluation_warnings(self)}


def evaluation_warnings(m: BinaryMetrics) -> list[str]:
    """Plain-language warnings for evaluations too small (or one-sided) to mean much."""
    out = []
    if m.n_positive == 0 or m.n_negative == 0:
        out.append(f"one class only ({m.n_positive} uncontrolled, {m.n_negative} controlled): AUC, sensitivity "
                   "or specificity cannot be estimated")
    elif min(m.n_positive, m.n_negative) < SMALL_CLASS:
        out.append(f"small evaluation ({m.n_positive} uncontrolled, {m.n_negative} controlled): the intervals are "
                   "wide and the point estimates unreliable")
    return out


def confusion(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) with positive = score >= threshold (``sklearn.metrics.confusion_matrix``)."""
    y, s = _arrays(labels, scores)
    tn, fp, fn, tp = skm.confusion_matrix(y, (s >= threshold).astype(int), labels=[0, 1]).ravel()
    return int(tn), int(fp), int(fn), int(tp)


def threshold_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5
                      ) -> tuple[float, float, float]:
    """(accuracy, sensitivity, specificity) with positive = score >= threshold."""
    tn, fp, fn, tp = confusion(labels, scores, threshold)
    n = tn + fp + fn + tp
    return ((tp + tn) / n if n else float("nan"), tp / (tp + fn) if tp + fn else float("nan"),
            tn / (tn + fp) if tn + fp else float("nan"))


def log_loss(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Mean binary cross-entropy (``sklearn.metrics.log_loss``; probabilities clipped to [1e-7, 1 - 1e-7])."""
    y, s = _arrays(labels, scores)
    return float(skm.log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), labels=[0, 1]))


def brier(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Mean squared error of the probabilities (``sklearn.metrics.brier_score_loss``)."""
    y, s = _arrays(labels, scores)
    return float(skm.brier_score_loss(y, s, pos_label=1))


def metrics_from_predictions(labels: Sequence[int], scores: Sequence[float], predicted: Sequence[int],
                             threshold: float, n_boot: int = 2000, seed: int = 0) -> BinaryMetrics:
    """Metrics where the binary calls are given (e.g. cross-fitted thresholds differing per fold)."""
    y, s = _arrays(labels, scores)
    pred = np.asarray(predicted, dtype=np.int64).ravel()
    tn, fp, fn, tp = (int(v) for v in skm.confusion_matrix(y, pred, labels=[0, 1]).ravel())
    lo, hi = auc_bootstrap_ci(y, s, n_boot=n_boot, seed=seed)
    se_lo, se_hi = proportion_ci(tp, tp + fn)
    sp_lo, sp_hi = proportion_ci(tn, tn + fp)
    n = int(y.size)
    return BinaryMetrics(n=n, n_positive=int(y.sum()), auc=auc(y, s), auc_ci_low=lo, auc_ci_high=hi,
                         accuracy=(tp + tn) / n if n else float("nan"),
                         sensitivity=tp / (tp + fn) if tp + fn else float("nan"),
                         specificity=tn / (tn + fp) if tn + fp else float("nan"),
                         brier=brier(y, s), threshold=float(threshold), sensitivity_ci_low=se_lo,
                         sensitivity_ci_high=se_hi, specificity_ci_low=sp_lo, specificity_ci_high=sp_hi)


def evaluate_scores(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5, n_boot: int = 2000,
                    seed: int = 0) -> BinaryMetrics:
    """All metrics of one scorer at one threshold (positive = score >= threshold)."""
    y, s = _arrays(labels, scores)
    return metrics_from_predictions(y, s, (s >= threshold).astype(int), threshold, n_boot=n_boot, seed=seed)


def choose_threshold(labels: Sequence[int], scores: Sequence[float], rule: Mapping[str, Any]) -> float:
    """A decision threshold on ``scores`` by a stated rule (positive = score >= threshold).

    Rules: ``{"rule": "youden"}`` maximises sensitivity + specificity - 1 (ties: the higher
    threshold); ``{"rule": "sensitivity", "target": t}`` is the highest threshold whose
    sensitivity is at least t; ``{"rule": "specificity", "target": t}`` the lowest threshold
    whose specificity is at least t. The candidates are ``sklearn.metrics.roc_curve``'s.

    Raises:
        ValueError: One class only, or an unknown rule.
    """
    y, s = _arrays(labels, scores)
    if not _both_classes(y):
        raise ValueError("a threshold rule needs both classes")
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], np.clip(thr[finite], 0.0, 1.0)
    name = rule.get("rule")
    if name == "youden":
        i = int(np.argmax(tpr - fpr))  # thresholds decrease: argmax takes the first = highest threshold
    elif name == "sensitivity":
        i = int(np.flatnonzero(tpr >= float(rule["target"]) - 1e-12)[0])
    elif name == "specificity":
        i = int(np.flatnonzero(1.0 - fpr >= float(rule["target"]) - 1e-12)[-1])
    else:
        raise ValueError(f"unknown threshold rule {name!r}")
    return float(thr[i])


def describe_rule(rule: Mapping[str, Any] | None) -> str:
    """Words for a threshold rule, as the card and manifest state it."""
    if not rule:
        return "fixed"
    if rule.get("rule") == "youden":
        return "Youden's J (maximum sensitivity + specificity - 1)"
    return f"highest threshold with {rule['rule']} >= {float(rule['target']):.2f}" if rule.get("rule") == \
        "sensitivity" else f"lowest threshold with {rule['rule']} >= {float(rule['target']):.2f}"


def calibration_bins(labels: Sequence[int], scores: Sequence[float], n_bins: int = 10
                     ) -> list[tuple[float, float, int]]:
    """Equal-width bins over [0, 1]: (mean predicted, observed positive fraction, count) for non-empty bins.

    ``sklearn.calibration.calibration_curve`` (strategy ``uniform``) gives the means; the counts
    use the same bin assignment.
    """
    from sklearn.calibration import calibration_curve

    y, s = _arrays(labels, scores)
    if y.size == 0:
        return []
    if not _both_classes(y):  # calibration_curve needs both classes; the bins are still defined
        frac = float(y[0]) if y.size else float("nan")
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        which = np.searchsorted(edges[1:-1], s)
        return [(float(s[which == b].mean()), frac, int((which == b).sum())) for b in range(n_bins)
                if (which == b).any()]
    prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], s), minlength=n_bins)
    counts = counts[counts > 0]
    return [(float(p), float(t), int(c)) for p, t, c in zip(prob_pred, prob_true, counts)]


def calibration_plot(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: str | Path,
                     title: str = "Calibration", n_bins: int = 10) -> Path:
    """Reliability diagram (PNG): per scorer, observed fraction per bin with its Wilson 95% CI and bin counts.

    Each scorer's points are offset slightly sideways so that no curve hides another's, and a
    histogram of the predicted probabilities per scorer sits below.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7.5), dpi=100, gridspec_kw={"height_ratios": [3, 1]},
                                   sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    offsets = np.linspace(-0.012, 0.012, max(len(curves), 1))
    for (name, (labels, scores)), dx in zip(curves.items(), offsets):
        bins = calibration_bins(labels, scores, n_bins)
        if not bins:
            continue
        xs, ys, ns = (np.array(v) for v in zip(*bins))
        cis = np.array([proportion_ci(int(round(f * n)), int(n)) for f, n in zip(ys, ns)])
        err = np.vstack([ys - cis[:, 0], cis[:, 1] - ys])
        line = ax.errorbar(xs + dx, ys, yerr=err, marker="o", capsize=2, linewidth=1.2,
                           label=f"{name} (n={len(scores)}, Brier {brier(labels, scores):.3f})")
        for x, yv, n in zip(xs + dx, ys, ns):
            ax.annotate(str(int(n)), (x, yv), textcoords="offset points", xytext=(4, -10), fontsize=6,
                        color=line[0].get_color())
        hist.hist(np.asarray(scores, dtype=float), bins=np.linspace(0, 1, n_bins + 1), histtype="step",
                  color=line[0].get_color(), linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("observed fraction uncontrolled (95% CI)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7)
    ax.text(0.99, 0.01, "numbers: cases per bin", transform=ax.transAxes, ha="right", va="bottom", fontsize=6)
    hist.set_xlabel("predicted probability of uncontrolled epilepsy")
    hist.set_ylabel("cases")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def roc_plot(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: str | Path, title: str = "ROC",
             operating_points: Mapping[str, float] | None = None) -> Path:
    """ROC curves (PNG, ``sklearn.metrics.roc_curve``) with each scorer's AUC and its chosen operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=100)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (labels, scores) in curves.items():
        y, s = _arrays(labels, scores)
        if not _both_classes(y):
            continue
        fpr, tpr, _ = skm.roc_curve(y, s)
        (line,) = ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {auc(y, s):.3f}, n={y.size})")
        if operating_points and name in operating_points:
            _, sen, spe = threshold_metrics(y, s, operating_points[name])
            ax.plot([1 - spe], [sen], marker="o", color=line.get_color())
            ax.annotate(f"threshold {operating_points[name]:.2f}", (1 - spe, sen), textcoords="offset points",
                        xytext=(6, -12), fontsize=7, color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
