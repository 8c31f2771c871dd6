"""Fusion-weight search on out-of-fold predictions.

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
from typing import Mapping, Sequence

import numpy as np

from training.metrics import auc

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
    logger.info("fusion weights %s (out-of-fold AUC %.3f)", weights, best[0])
    return weights, best[0]
