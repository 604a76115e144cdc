"""The whole evaluation on hand-made cohorts: operating point from validation only, subgroup
metrics and EODs by hand, reproducible bootstrap, undefined values, and the predictions
contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radfusion.errors import RadfusionError
from radfusion.evaluation.bootstrap import Resamples, stratified_counts
from radfusion.evaluation.evaluate import evaluate
from radfusion.evaluation.metrics import youden_threshold
from radfusion.predictions import read_predictions


def _cohort(n_val=40, n_test=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_val + n_test
    studies = pd.DataFrame(
        {
            "label": np.r_[np.tile([0, 1], n_val // 2), np.tile([0, 1], n_test // 2)],
            "split": ["val"] * n_val + ["test"] * n_test,
            "gender": rng.choice(["Female", "Male"], n),
            "race": rng.choice(["White", "Others"], n),
            "age_group": rng.choice([">80", "<=80"], n),
        },
        index=pd.Index(np.arange(100, 100 + n), name="idx"),
    )
    studies["pe_type"] = np.where(
        studies["label"] == 1, rng.choice(["central", "subsegmental"], n), ""
    )
    studies["non_subsegmental"] = studies["pe_type"] != "subsegmental"
    prob = pd.Series(
        np.clip(0.35 * studies["label"] + rng.uniform(0, 0.65, n), 0, 1), index=studies.index
    )
    return studies, prob


def _row(frame, **where):
    mask = np.ones(len(frame), bool)
    for key, value in where.items():
        mask &= frame[key].to_numpy() == value
    (i,) = np.flatnonzero(mask)
    return frame.iloc[i]


def test_threshold_comes_from_validation_only():
    studies, prob = _cohort()
    result = evaluate(studies, {"m": prob}, n_boot=200)
    val = studies["split"] == "val"
    expected, _, _ = youden_threshold(studies.loc[val, "label"], prob[val])
    assert result.thresholds.loc[0, "threshold"] == pytest.approx(expected)
    # Changing test scores must not move the threshold.
    moved = prob.copy()
    moved[~val] = 1 - moved[~val]
    again = evaluate(studies, {"m": moved}, n_boot=200)
    assert again.thresholds.loc[0, "threshold"] == pytest.approx(expected)


def test_subgroup_metrics_and_eod_by_hand():
    studies, prob = _cohort()
    result = evaluate(studies, {"m": prob}, n_boot=200)
    threshold = result.thresholds.loc[0, "threshold"]
    test = studies[studies["split"] == "test"]
    p = prob[test.index] >= threshold
    tpr = {}
    for group in ("Female", "Male"):
        g = test["gender"] == group
        y, pred = test.loc[g, "label"] == 1, p[g]
        tpr[group] = (y & pred).sum() / y.sum()
        spec = (~y & ~pred).sum() / (~y).sum()
        m = result.metrics
        assert _row(m, subset="all", attribute="gender", group=group, metric="sensitivity")[
            "value"
        ] == pytest.approx(tpr[group])
        assert _row(m, subset="all", attribute="gender", group=group, metric="specificity")[
            "value"
        ] == pytest.approx(spec)
        assert _row(m, subset="all", attribute="gender", group=group, metric="auroc")[
            "value"
        ] == pytest.approx(roc_auc_score(test.loc[g, "label"], prob[test.index][g]))
        assert (
            _row(m, subset="all", attribute="gender", group=group, metric="auroc")["n"] == g.sum()
        )
    f = result.fairness
    assert _row(f, subset="all", attribute="gender", metric="eod")["value"] == pytest.approx(
        abs(tpr["Female"] - tpr["Male"])
    )
    assert _row(f, subset="all", attribute="gender", metric="tpr_diff_signed")[
        "value"
    ] == pytest.approx(tpr["Female"] - tpr["Male"])


def test_non_subsegmental_subset_drops_only_subsegmental_positives():
    studies, prob = _cohort()
    result = evaluate(studies, {"m": prob}, n_boot=200)
    test = studies[studies["split"] == "test"]
    expected = int((test["pe_type"] != "subsegmental").sum())
    assert (
        _row(
            result.metrics,
            subset="non_subsegmental",
            attribute="overall",
            group="all",
            metric="auroc",
        )["n"]
        == expected
    )
    assert _row(result.metrics, subset="all", attribute="overall", group="all", metric="auroc")[
        "n"
    ] == len(test)


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    studies, prob = _cohort()
    a = evaluate(studies, {"m": prob}, n_boot=300, seed=5)
    b = evaluate(studies, {"m": prob}, n_boot=300, seed=5)
    c = evaluate(studies, {"m": prob}, n_boot=300, seed=6)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert not a.metrics["ci_low"].equals(c.metrics["ci_low"])
    finite = a.metrics.dropna(subset=["ci_low"])
    assert (finite["ci_low"] <= finite["ci_high"]).all()


def test_bootstrap_replicates_equal_metrics_on_explicit_resamples():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.uniform(0, 1, 50) + 0.3 * y, 2)
    counts = stratified_counts(y, 20, rng)
    assert (counts[:, y == 1].sum(axis=1) == (y == 1).sum()).all()  # stratified
    res = Resamples(counts, y, s, threshold=0.6)
    reps = res.metrics(np.ones(50, bool))
    for b in range(20):
        drawn = np.repeat(np.arange(50), counts[b])
        yb, sb = y[drawn], s[drawn]
        assert reps["auroc"][b] == pytest.approx(roc_auc_score(yb, sb))
        pred = sb >= 0.6
        assert reps["sensitivity"][b] == pytest.approx((pred & (yb == 1)).sum() / (yb == 1).sum())
        assert reps["ppv"][b] == pytest.approx((pred & (yb == 1)).sum() / pred.sum())


def test_group_without_positives_is_empty_with_a_reason():
    studies, prob = _cohort()
    test = studies["split"] == "test"
    studies.loc[test & (studies["label"] == 1), "age_group"] = "<=80"
    result = evaluate(studies, {"m": prob}, n_boot=200)
    row = _row(result.metrics, subset="all", attribute="age", group=">80", metric="sensitivity")
    assert np.isnan(row["value"]) and row["note"] == "no positives" and np.isnan(row["ci_low"])
    eod = _row(result.fairness, subset="all", attribute="age", metric="eod")
    assert np.isnan(eod["value"]) and "lacks positives" in eod["note"]


def test_comparisons_between_every_pair():
    studies, prob = _cohort()
    other = (prob * 0.5 + 0.25).clip(0, 1)
    result = evaluate(studies, {"a": prob, "b": other, "c": 1 - prob}, n_boot=100)
    assert len(result.comparisons) == 2 * 3
    row = _row(result.comparisons, subset="all", model_a="a", model_b="c")
    assert row["diff"] == pytest.approx(row["auroc_a"] - row["auroc_b"]) and row["p_value"] < 0.05


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("idx,score\n100,0.5\n", "missing column(s) ['prob']"),
        ("idx,prob\n100,0.5\n100,0.6\n", "appear more than once"),
        ("idx,prob\n100,1.5\n", "in [0, 1]"),
        ("idx,prob\n100,\n", "in [0, 1]"),
        ("idx,prob\n99999,0.5\n", "not in the cohort"),
    ],
)
def test_predictions_contract_rejects(tmp_path, content, message):
    studies, _ = _cohort()
    path = tmp_path / "model.csv"
    path.write_text(content)
    with pytest.raises(
        RadfusionError,
        match=message.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("(", r"\(")
        .replace(")", r"\)"),
    ):
        read_predictions(path, studies)


def test_incomplete_test_set_needs_allow_missing(tmp_path):
    studies, prob = _cohort()
    path = tmp_path / "model.csv"
    prob.iloc[:-3].rename("prob").reset_index().to_csv(path, index=False)
    with pytest.raises(RadfusionError, match="3 of 60 test studies have no prediction"):
        read_predictions(path, studies)
    series, notes = read_predictions(path, studies, allow_missing=True)
    assert len(series) == len(prob) - 3 and "3 of 60 test" in notes[0]
    result = evaluate(studies, {"model": series}, n_boot=100)
    assert (
        _row(result.metrics, subset="all", attribute="overall", group="all", metric="auroc")["n"]
        == 57
    )


def test_detection_by_subtype_against_sklearn_and_by_hand():
    studies, prob = _cohort(n_val=40, n_test=90, seed=3)
    rng = np.random.default_rng(4)
    positive = studies["label"] == 1
    studies.loc[positive, "pe_type"] = rng.choice(
        ["central", "segmental", "subsegmental"], int(positive.sum())
    )
    studies["non_subsegmental"] = studies["pe_type"] != "subsegmental"
    result = evaluate(studies, {"m": prob}, n_boot=300)
    threshold = result.thresholds.loc[0, "threshold"]
    test = studies[studies["split"] == "test"]
    negatives = test[test["label"] == 0]
    assert list(result.subtypes["pe_type"]) == ["central", "segmental", "subsegmental"]
    for _, row in result.subtypes.iterrows():
        positives = test[test["pe_type"] == row["pe_type"]]
        both = pd.concat([positives, negatives])
        assert row["n_positive"] == len(positives) and row["n_negative"] == len(negatives)
        assert row["auroc"] == pytest.approx(roc_auc_score(both["label"], prob[both.index]))
        hits = sum(prob[i] >= threshold for i in positives.index)
        assert row["sensitivity"] == pytest.approx(hits / len(positives))
        for metric in ("auroc", "sensitivity"):
            assert row[f"{metric}_ci_low"] <= row[metric] <= row[f"{metric}_ci_high"]
            assert row[f"{metric}_ci_low"] < row[f"{metric}_ci_high"]


def test_a_subtype_absent_from_the_test_set_is_undefined_not_an_error():
    studies, prob = _cohort()
    result = evaluate(studies, {"m": prob}, n_boot=100)
    segmental = _row(result.subtypes, pe_type="segmental")
    assert segmental["n_positive"] == 0
    assert np.isnan(segmental["auroc"]) and np.isnan(segmental["sensitivity"])
    central = _row(result.subtypes, pe_type="central")
    assert central["n_positive"] > 0 and np.isfinite(central["auroc"])


def test_without_a_pe_type_column_there_is_no_subtype_table():
    studies, prob = _cohort()
    result = evaluate(studies.drop(columns="pe_type"), {"m": prob}, n_boot=100)
    assert result.subtypes.empty


def test_models_sort_in_the_papers_order_then_slicenet_then_the_rest():
    from radfusion.predictions import model_order

    names = ["mine", "fusion_slicenet_max", "slicenet", "fusion_max", "ehr"]
    names += ["fusion_slicenet_mean", "fusion_mean", "image", "fusion_stacked"]
    assert sorted(names, key=model_order) == [
        "image",
        "ehr",
        "fusion_mean",
        "fusion_max",
        "fusion_stacked",
        "slicenet",
        "fusion_slicenet_mean",
        "fusion_slicenet_max",
        "mine",
    ]


def test_studies_of_unknown_gender_are_left_out_of_the_gap():
    """Three test positives with neither Female nor Male set, all missed: fairlearn over three
    groups would report the gap to that "Unknown" group. The gender gap compares Female and
    Male only, point value and interval alike, and says how many studies it left out."""
    studies, prob = _cohort(seed=3)
    test = studies.index[studies["split"] == "test"]
    unknown = test[studies.loc[test, "label"].to_numpy() == 1][:3]
    studies.loc[unknown, "gender"] = "Unknown"
    prob[unknown] = 0.0  # never detected
    result = evaluate(studies, {"m": prob}, n_boot=500)
    threshold = result.thresholds.loc[0, "threshold"]
    part = studies.loc[test]
    detected = prob[test] >= threshold
    tpr = {
        g: detected[(part["gender"] == g) & (part["label"] == 1)].mean() for g in ("Female", "Male")
    }
    eod = _row(result.fairness, subset="all", attribute="gender", metric="eod")
    assert eod["value"] == pytest.approx(abs(tpr["Female"] - tpr["Male"]))
    assert eod["ci_low"] <= eod["value"] <= eod["ci_high"]
    assert eod["n_excluded"] == 3 and "3 studies with an unknown gender left out" in eod["note"]
    race = _row(result.fairness, subset="all", attribute="race", metric="eod")
    assert race["n_excluded"] == 0 and race["note"] == ""
    assert any("3 test studies (3 positive)" in n for n in result.notes)
    # The paper's groups without unknowns: the same numbers as before the change.
    clean, clean_prob = _cohort(seed=3)
    before = evaluate(clean, {"m": clean_prob}, n_boot=500).fairness
    assert (before["n_excluded"] == 0).all()
