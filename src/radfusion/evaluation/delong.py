"""DeLong's test for two correlated AUROCs (the same studies scored by two models).

Uses the fast midrank algorithm of Sun & Xu (2014): the AUROCs, the placement values (the
structural components) and their covariance, in O(n log n) per model.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata

__all__ = ["delong_covariance", "delong_test"]


def delong_covariance(y_true, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of each score and their DeLong covariance matrix."""
    y_true = np.asarray(y_true).astype(bool)
    pos, neg = y_true, ~y_true
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs positives and negatives")
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    x, y = s[:, pos], s[:, neg]
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)  # midranks over everything
    tx = rankdata(x, axis=1)
    ty = rankdata(y, axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n  # placement of each positive among the negatives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # placement of each negative among the positives
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_test(y_true, score_a, score_b) -> tuple[float, float, float]:
    """Two-sided DeLong test of AUROC(a) = AUROC(b); returns (auroc_a, auroc_b, p_value)."""
    aucs, cov = delong_covariance(y_true, score_a, score_b)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var <= 0:  # identical scores: no evidence of a difference
        return float(aucs[0]), float(aucs[1]), 1.0 if diff == 0 else 0.0
    p = float(2 * norm.sf(abs(diff) / np.sqrt(var)))
    return float(aucs[0]), float(aucs[1]), p
