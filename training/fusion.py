"""Fusion on out-of-fold predictions: weight search, and the fit of everything after the networks.

``fit_fusion`` fits, on a set of out-of-fold predictions, each member's Platt
calibration and its has-learned test (a member whose out-of-fold AUC 95% CI
includes 0.5 gets no fusion weight, with that reason), then each ensemble's
weights and its decision threshold by the configured rule. ``apply_fusion``
scores cases with such a fit. ``training.evaluation.fuse_oof`` uses them
cross-fitted: for each outer fold, fit on the other folds, score that fold.

Weights are searched on a grid of ``step`` (0.1) over the simplex: every
member gets at least ``step`` (0.1..0.9 for two members, as eTSC-Net did), and
the weights sum to 1. The combination with the highest out-of-fold AUC wins;
ties go to the combination closest to equal weights (the least specific
choice), then to the first in lexicographic order, so the result is
deterministic.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from operators.model_manifest import PlattCalibration
from training.calibration import fit_platt
from training.config import TrainingConfig
from training.metrics import auc, auc_bootstrap_ci, choose_threshold

logger = logging.getLogger(__name__)


def weight_grid(n_members: int, step: float = 0.1, min_weight: float | None = None) -> list[tuple[float, ...]]:
    """All weight vectors on the ``step`` grid with each weight >= ``min_weight`` (default ``step``) summing to 1."""
    units = int(round(1.0 / step))
    if abs(units * step - 1.0) > 1e-9:
        raise ValueError("step must divide 1")
    lo = int(round((step if min_weight is None else min_weight) / step))
    out = []
    for combo in itertools.product(range(lo, units + 1), repeat=n_members - 1):
        last = units - sum(combo)
        if last >= lo:
            out.append(tuple(round(c * step, 10) for c in (*combo, last)))
    return out


def search_weights(labels: Sequence[int], member_scores: Mapping[str, Sequence[float]], step: float = 0.1,
                   min_weight: float | None = None) -> tuple[dict[str, float], float]:
    """Best weights (by AUC of the weighted mean) and that AUC.

    Args:
        labels: 0/1 labels of the out-of-fold cases.
        member_scores: Member name -> out-of-fold probability per case (same order).
        step: Grid step.
        min_weight: Smallest weight a member may get (default ``step``).
    """
    names = list(member_scores)
    if len(names) == 1:
        return {names[0]: 1.0}, auc(labels, member_scores[names[0]])
    matrix = np.stack([np.asarray(member_scores[n], dtype=np.float64) for n in names])
    equal = np.full(len(names), 1.0 / len(names))
    best: tuple[float, float, tuple[float, ...]] | None = None
    for w in weight_grid(len(names), step, min_weight):
        a = auc(labels, np.asarray(w) @ matrix)
        key = (round(a, 12), -float(np.abs(np.asarray(w) - equal).sum()))
        if best is None or key > best[:2]:
            best = (key[0], key[1], w)
    assert best is not None
    weights = dict(zip(names, best[2]))
    logger.debug("fusion weights %s (out-of-fold AUC %.3f)", weights, best[0])
    return weights, best[0]


# --- Fitting everything that follows the networks on out-of-fold predictions -----------------------------


@dataclass
class MemberFit:
    """A member's calibration and whether it passed the has-learned test on the fitting cases."""

    calibration: PlattCalibration | None
    learned: bool
    reason: str | None  # why the member gets no fusion weight
    auc: float
    auc_ci: tuple[float, float]

    def apply(self, p: float) -> float:
        return self.calibration.apply(p) if self.calibration is not None else p


@dataclass
class EnsembleFit:
    """An ensemble's weights and threshold fitted on out-of-fold predictions."""

    weights: dict[str, float]
    excluded: dict[str, str]  # member -> reason it gets no weight
    threshold: float
    searched_weights: dict[str, float] | None = None
    searched_auc: float | None = None
    warnings: list[str] = field(default_factory=list)
    withheld: str = ""  # why the ensemble's score is not reported at all (no member has learned)


@dataclass
class FusionFit:
    members: dict[str, MemberFit]
    ensembles: dict[str, EnsembleFit]


Predictions = Mapping[str, Mapping[str, tuple[int, float]]]  # member -> case id -> (label, probability)


def member_has_learned(labels: Sequence[int], scores: Sequence[float], n_boot: int = 2000
                       ) -> tuple[bool, str | None, float, tuple[float, float]]:
    """The has-learned test: the lower end of the AUC's 95% bootstrap CI must be above 0.5.

    Returns:
        (passed, reason when not, AUC, CI).
    """
    a = auc(labels, scores)
    lo, hi = auc_bootstrap_ci(labels, scores, n_boot=n_boot)
    if not np.isfinite(a):
        return False, "one class only among its out-of-fold cases", a, (lo, hi)
    if not lo > 0.5:
        return False, (f"out-of-fold AUC {a:.3f} (95% CI {lo:.3f}-{hi:.3f}) does not exclude chance (0.5): "
                       "not shown to have learned"), a, (lo, hi)
    return True, None, a, (lo, hi)


def fit_fusion(config: TrainingConfig, preds: Predictions, n_boot: int = 2000) -> FusionFit:
    """Fit calibration, has-learned test, fusion weights and thresholds on the given predictions.

    Used twice: on all out-of-fold predictions (what is exported), and, per outer fold,
    on the other folds' predictions only (cross-fitting, for honest out-of-fold metrics).
    """
    members: dict[str, MemberFit] = {}
    for m, p in preds.items():
        ids = sorted(p)
        y, s = [p[c][0] for c in ids], [p[c][1] for c in ids]
        learned, reason, a, ci = member_has_learned(y, s, n_boot=n_boot)
        calibration = fit_platt(y, s) if config.calibration == "platt" else None
        if learned and config.calibration == "platt" and calibration is None:
            learned, reason = False, "Platt scaling found no positive slope (the member ranks no better than chance)"
        members[m] = MemberFit(calibration, learned, reason, a, ci)
    ensembles: dict[str, EnsembleFit] = {}
    for name, ens in config.ensembles.items():
        excluded = {m: members[m].reason or "" for m in ens.members if not members[m].learned}
        kept = [m for m in ens.members if m not in excluded]
        warnings: list[str] = []
        withheld = ""
        if not kept:
            kept, excluded = list(ens.members), {}
            warnings.append(f"no member of {name} passed the has-learned test: its scores carry no shown information")
            withheld = ("not shown to have learned: no member's out-of-fold AUC 95% CI excluded chance ("
                        + "; ".join(f"{m} {members[m].auc:.2f}, {members[m].auc_ci[0]:.2f}-{members[m].auc_ci[1]:.2f}"
                                    for m in ens.members) + ")")
        common = sorted(set.intersection(*(set(preds[m]) for m in kept)))
        y = [preds[kept[0]][c][0] for c in common]
        scores = {m: [members[m].apply(preds[m][c][1]) for c in common] for m in kept}
        searched, searched_auc = search_weights(y, scores, step=0.1) if len(set(y)) == 2 else (None, None)
        if ens.weights == "search" and searched is not None:
            chosen = searched
        elif ens.weights == "equal" or ens.weights == "search":
            chosen = {m: 1.0 / len(kept) for m in kept}
        else:
            explicit = {m: float(ens.weights[m]) for m in kept}  # type: ignore[index]
            total = sum(explicit.values())
            chosen = {m: w / total for m, w in explicit.items()}
        weights = {m: float(chosen.get(m, 0.0)) for m in ens.members}
        fused = np.sum([weights[m] * np.asarray(scores[m]) for m in kept], axis=0)
        threshold = ens.threshold
        if ens.threshold_rule:
            try:
                threshold = choose_threshold(y, fused, ens.threshold_rule)
            except ValueError as exc:
                warnings.append(f"threshold rule not applied ({exc}); fixed {ens.threshold} used")
        ensembles[name] = EnsembleFit(weights, excluded, threshold, searched, searched_auc, warnings, withheld)
    return FusionFit(members, ensembles)


def apply_fusion(fit: FusionFit, preds: Predictions, ensemble_members: Mapping[str, Sequence[str]],
                 cases: Sequence[str]) -> dict[str, dict[str, float]]:
    """Scores of ``cases`` under a fit: calibrated member scores and fused ensemble scores.

    A case lacking a weighted member's prediction (e.g. no clinical record) is left out of that
    ensemble's scores.

    Returns:
        Scorer (member or ensemble name) -> case id -> score.
    """
    out: dict[str, dict[str, float]] = {}
    for m, p in preds.items():
        out[m] = {c: fit.members[m].apply(p[c][1]) for c in cases if c in p}
    for name, members in ensemble_members.items():
        ef = fit.ensembles[name]
        used = [m for m in members if ef.weights.get(m, 0.0) > 0]
        out[name] = {c: float(sum(ef.weights[m] * out[m][c] for m in used)) for c in cases
                     if all(c in out[m] for m in used)}
    return out
