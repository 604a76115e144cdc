"""DeLong's test against a direct computation of its placement values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from radfusion.evaluation.delong import delong_covariance, delong_test


def _brute_force(y, a, b):
    """DeLong et al. (1988) written out: psi over every (positive, negative) pair."""
    y = np.asarray(y).astype(bool)
    comps = []
    for s in (a, b):
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        comps.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    m, n = y.sum(), (~y).sum()
    v10 = np.array([c[0] for c in comps])  # per positive
    v01 = np.array([c[1] for c in comps])  # per negative
    s10, s01 = np.cov(v10), np.cov(v01)
    cov = s10 / m + s01 / n
    aucs = np.array([c[2] for c in comps])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return aucs, cov, 2 * norm.sf(abs(aucs[0] - aucs[1]) / np.sqrt(var))


def test_matches_the_definition_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    a = np.round(y * 0.8 + rng.normal(0, 1, 120), 1)  # rounded: many ties
    b = np.round(y * 0.3 + rng.normal(0, 1, 120), 1)
    aucs, cov, p = _brute_force(y, a, b)
    fast_aucs, fast_cov = delong_covariance(y, a, b)
    np.testing.assert_allclose(fast_aucs, aucs)
    np.testing.assert_allclose(fast_cov, cov)
    auc_a, auc_b, p_fast = delong_test(y, a, b)
    assert auc_a == pytest.approx(roc_auc_score(y, a))
    assert auc_b == pytest.approx(roc_auc_score(y, b))
    assert p_fast == pytest.approx(p)
    assert p_fast < 0.05  # a clearly better than b


def test_identical_models_are_not_different():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert delong_test(y, s, s)[2] == 1.0
