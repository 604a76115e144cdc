"""The six metrics, Youden's threshold and calibration against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from radfusion.evaluation.metrics import (
    accuracy,
    auroc,
    brier,
    ece,
    npv,
    ppv,
    sensitivity,
    specificity,
    why_undefined,
    youden_threshold,
)

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 200)
SCORE = np.clip(0.3 * Y + RNG.uniform(0, 0.7, 200), 0, 1)
PRED = SCORE >= 0.5


def test_threshold_metrics_match_scikit_learn():
    assert sensitivity(Y, PRED) == pytest.approx(recall_score(Y, PRED))
    assert specificity(Y, PRED) == pytest.approx(recall_score(Y, PRED, pos_label=0))
    assert ppv(Y, PRED) == pytest.approx(precision_score(Y, PRED))
    assert npv(Y, PRED) == pytest.approx(precision_score(Y, PRED, pos_label=0))
    assert accuracy(Y, PRED) == pytest.approx(accuracy_score(Y, PRED))
    assert auroc(Y, SCORE) == pytest.approx(roc_auc_score(Y, SCORE))
    assert brier(Y, SCORE) == pytest.approx(brier_score_loss(Y, SCORE))


def test_undefined_metrics_are_nan_with_a_reason():
    y = np.zeros(5, int)
    pred = np.zeros(5, bool)
    assert (
        np.isnan(sensitivity(y, pred)) and why_undefined("sensitivity", y, pred) == "no positives"
    )
    assert np.isnan(ppv(y, pred)) and why_undefined("ppv", y, pred) == "no positive predictions"
    assert np.isnan(auroc(y, np.linspace(0, 1, 5)))
    assert why_undefined("auroc", y, pred) == "only negatives"


def test_ece_by_hand():
    # Two bins: [0.1, 0.1] with outcomes (0, 1) -> |0.5 - 0.1| = 0.4 on 2 studies;
    # [0.9] with outcome 1 -> |1 - 0.9| = 0.1 on 1 study. ECE = (2 * 0.4 + 0.1) / 3.
    assert ece([0, 1, 1], [0.1, 0.1, 0.9]) == pytest.approx(0.9 / 3)


def test_youden_threshold_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    # Candidates (predict positive when s >= t): t=0.7 -> sens 2/3, spec 1 -> J 0.667;
    # t=0.5 -> sens 1, spec 2/3 -> J 0.667; t=0.6 -> sens 2/3, spec 2/3. Ties: the higher t.
    threshold, sens, spec = youden_threshold(y, s)
    assert threshold == pytest.approx(0.7)
    assert (sens, spec) == pytest.approx((2 / 3, 1.0))


def test_auprc_is_scikit_learns_average_precision_also_per_bootstrap_row():
    from sklearn.metrics import average_precision_score

    from radfusion.evaluation.metrics import auprc

    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        score = np.round(rng.random(n), 1)  # ties: one threshold each
        if not y.any():
            assert np.isnan(auprc(y, score))
            continue
        assert auprc(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)
        weights = rng.integers(0, 3, (3, n))
        rows = auprc(y, score, weights)
        for w, value in zip(weights, rows, strict=True):
            if not (w * y).any():
                assert np.isnan(value)
            else:
                expect = average_precision_score(y, score, sample_weight=w)
                assert value == pytest.approx(expect, abs=1e-12)
