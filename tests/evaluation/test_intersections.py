"""Gender x race x age cells: sizes, TPR and FPR by hand, small cells shown but kept out of the
gap, unknown values in no cell."""

from __future__ import annotations

import numpy as np
import pytest

from radfusion.evaluation.evaluate import evaluate
from tests.evaluation.test_evaluate import _cohort


def test_cells_by_hand_and_the_gap_over_the_large_ones():
    studies, prob = _cohort(n_val=60, n_test=240, seed=5)
    first = studies.index[studies["split"] == "test"][0]
    studies.loc[first, "gender"] = "Unknown"  # belongs to no cell
    result = evaluate(studies, {"m": prob}, n_boot=300, min_cell_size=12)
    threshold = result.thresholds.loc[0, "threshold"]
    cells = result.intersections
    test = studies[(studies["split"] == "test") & (studies["gender"] != "Unknown")]
    detected = prob[test.index] >= threshold
    large = {}
    for row in cells[cells["cell"] != "max - min"].itertuples():
        members = (
            (test["gender"] == row.gender)
            & (test["race"] == row.race)
            & (test["age_group"] == row.age_group)
        )
        positive = members & (test["label"] == 1)
        negative = members & (test["label"] == 0)
        assert row.n == members.sum()
        assert (row.n_positive, row.n_negative) == (positive.sum(), negative.sum())
        expected = detected[positive].mean() if row.metric == "tpr" else detected[negative].mean()
        assert row.value == pytest.approx(expected)
        size = row.n_positive if row.metric == "tpr" else row.n_negative
        assert row.in_gap == (size >= 12)
        if row.in_gap:
            assert row.ci_low <= row.value <= row.ci_high
            large.setdefault(row.metric, []).append(row.value)
    assert cells["n"][cells["cell"] != "max - min"].sum() == 2 * len(test)  # tpr and fpr rows
    assert 0 < len(large["tpr"]) < 8  # some cells too small: shown, not in the gap
    gap = cells[(cells["cell"] == "max - min") & (cells["metric"] == "tpr")].iloc[0]
    assert gap["value"] == pytest.approx(max(large["tpr"]) - min(large["tpr"]))
    assert gap["n"] == len(large["tpr"]) and gap["ci_low"] <= gap["value"] <= gap["ci_high"]


def test_with_one_large_cell_there_is_no_gap():
    studies, prob = _cohort(seed=1)
    result = evaluate(studies, {"m": prob}, n_boot=200, min_cell_size=1000)
    gaps = result.intersections[result.intersections["cell"] == "max - min"]
    assert gaps["value"].isna().all() and not result.intersections["in_gap"][:-2].any()
    assert np.isfinite(result.intersections["value"][:-2]).any()  # the cells are still shown
