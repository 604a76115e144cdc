"""A full-size (N = 1837) synthetic cohort reproduces the paper's Tables 1 and 2.

Volumes are tiny (8 x 8 pixels) but keep Table 1's slice counts.
"""

from __future__ import annotations

import pytest

from radfusion.data import Cohort
from radfusion.data.summary import summarize
from radfusion.synthetic.design import PAPER, PAPER_TEST_GROUPS
from radfusion.synthetic.writer import write_synthetic_cohort

#: Table 1's overall column (the per-split targets are in ``PAPER``).
OVERALL = {
    "studies": 1837,
    "patients": 1794,
    "negatives": 1111,
    "positives": 726,
    "central": 257,
    "segmental": 387,
    "subsegmental": 82,
    "median_slices": 386,
}


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper") / "cohort"
    write_synthetic_cohort(root, 1837, seed=0, size=8, workers=2)
    return summarize(Cohort.load(root))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_table1_counts_per_split(summary, split):
    row, target = summary["splits"][split], PAPER[split]
    assert row["studies"] == target.studies
    assert row["patients"] == target.patients
    assert row["positives"] == target.positives
    assert row["negatives"] == target.studies - target.positives
    assert (row["central"], row["segmental"], row["subsegmental"]) == target.subtypes
    assert abs(row["median_slices"] - target.median_slices) <= 1
    assert abs(row["iqr_slices"] - target.iqr_slices) <= 3
    assert (row["ddimer_taken"], row["ddimer_positive"]) == target.ddimer
    for vital in ("bmi", "pulse"):
        mean, std = getattr(target, vital)
        assert row[vital]["mean"] == pytest.approx(mean, abs=0.1)
        assert row[vital]["std"] == pytest.approx(std, abs=0.1)


def test_table1_overall(summary):
    row = summary["splits"]["overall"]
    for key, value in OVERALL.items():
        assert row[key] == pytest.approx(value, abs=1), key
    assert row["bmi"]["mean"] == pytest.approx(28.37, abs=0.1)
    assert row["pulse"]["mean"] == pytest.approx(81.62, abs=0.1)


def test_table2_test_groups(summary):
    incl, excl = summary["test_groups"], summary["test_groups_non_subsegmental"]
    for group, (with_sub, without_sub) in PAPER_TEST_GROUPS.items():
        assert (incl[group], excl[group]) == (with_sub, without_sub)
    assert incl["Male"] == 91 and excl["Male"] == 75
    assert incl["Others"] == 71 and excl["Others"] == 67
    assert incl["<=80"] == 133 and excl["<=80"] == 115
    assert sum(excl[g] for g in ("Female", "Male")) == 162


def test_release_feature_counts(summary):
    assert summary["ehr_features"] == {
        "Demographics": 12,
        "INP_MED": 1282,
        "OUT_MED": 1282,
        "ICD": 282,
        "LABS": 44,
        "Vitals": 9,
    }
    assert sum(summary["ehr_features"].values()) == 2911
