"""Group thresholds (fairlearn's ThresholdOptimizer) fitted on validation and scored on test:
never fitted on test labels, the single threshold's row equal to the evaluation's own, and a
real gap closed on a cohort large enough to show it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.evaluation.evaluate import evaluate
from tests.evaluation.test_evaluate import _cohort


def _value(frame, **where):
    mask = np.ones(len(frame), bool)
    for key, value in where.items():
        mask &= frame[key].to_numpy() == value
    (i,) = np.flatnonzero(mask)
    return frame.iloc[i]["value"]


def test_the_single_threshold_row_is_the_evaluations_own():
    studies, prob = _cohort(seed=2)
    result = evaluate(studies, {"m": prob}, n_boot=200)
    m = result.mitigation
    sens = _value(
        result.metrics, subset="all", attribute="overall", group="all", metric="sensitivity"
    )
    assert _value(m, attribute="gender", method="single threshold", metric="sensitivity") == (
        pytest.approx(sens)
    )
    eod = _value(result.fairness, subset="all", attribute="gender", metric="eod")
    assert _value(m, attribute="gender", method="single threshold", metric="tpr_gap") == (
        pytest.approx(eod)
    )


def test_group_thresholds_never_see_test_labels():
    """Flip every test label: were the decisions fitted on validation alone, each method's
    accuracy becomes exactly one minus what it was."""
    studies, prob = _cohort(seed=4)
    before = evaluate(studies, {"m": prob}, n_boot=100).mitigation
    flipped = studies.copy()
    test = flipped["split"] == "test"
    flipped.loc[test, "label"] = 1 - flipped.loc[test, "label"]
    after = evaluate(flipped, {"m": prob}, n_boot=100).mitigation
    acc_before = before[before["metric"] == "accuracy"].set_index(["attribute", "method"])["value"]
    acc_after = after[after["metric"] == "accuracy"].set_index(["attribute", "method"])["value"]
    assert len(acc_before) == 9  # 3 attributes x (single + 2 constraints)
    np.testing.assert_allclose(acc_after, 1 - acc_before, atol=1e-12)


def test_equal_opportunity_closes_a_real_gap_at_a_cost():
    """Group B's scores run lower: one threshold misses more of B's positives. Thresholds
    per group, fitted on a large validation split, bring the test TPRs together."""
    rng = np.random.default_rng(0)
    n = 6000
    label = rng.integers(0, 2, n)
    gender = rng.choice(["Female", "Male"], n)
    score = 0.3 * label + rng.uniform(0, 0.7, n) - 0.15 * (gender == "Male")
    studies = pd.DataFrame(
        {
            "label": label,
            "split": np.where(np.arange(n) < n // 2, "val", "test"),
            "gender": gender,
            "race": rng.choice(["White", "Others"], n),
            "age_group": rng.choice([">80", "<=80"], n),
            "pe_type": np.where(label == 1, "central", ""),
        },
        index=pd.Index(np.arange(n), name="idx"),
    )
    studies["non_subsegmental"] = True
    prob = pd.Series(np.clip(score + 0.15, 0, 1), index=studies.index)
    m = evaluate(studies, {"m": prob}, n_boot=200).mitigation
    m = m[(m["attribute"] == "gender")].set_index(["method", "metric"])
    single = m.loc[("single threshold", "tpr_gap")]
    fair = m.loc[("group thresholds (equal_opportunity)", "tpr_gap")]
    assert single["value"] > 0.2 and fair["value"] < 0.05
    assert fair["ci_high"] < single["ci_low"]  # the intervals do not overlap
    cost = (
        m.loc[("single threshold", "accuracy"), "value"]
        - m.loc[("group thresholds (equal_opportunity)", "accuracy"), "value"]
    )
    assert -0.02 < cost < 0.1  # what it costs, shown beside it
