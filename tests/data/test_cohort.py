"""Loading a clean and a quirky cohort: what the Cohort provides, and that quirks lose nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.data import Cohort
from radfusion.data.layout import EHR_TABLES


@pytest.fixture(scope="module")
def clean(small_cohort):
    return Cohort.load(small_cohort)


@pytest.fixture(scope="module")
def quirky(quirky_cohort):
    return Cohort.load(quirky_cohort)


def test_studies_match_labels_file(clean, small_cohort):
    labels = pd.read_csv(small_cohort / "Labels.csv").set_index("idx").sort_index()
    studies = clean.studies.sort_index()
    assert list(studies.index) == list(labels.index)
    assert (studies["label"] == labels["label"]).all()
    assert (studies["split"] == labels["split"]).all()
    positives = labels["label"] == 1
    assert (studies.loc[positives, "pe_type"] == labels.loc[positives, "pe_type"]).all()
    assert (studies.loc[~positives, "pe_type"] == "").all()


def test_subgroups_follow_demographics(clean, small_cohort):
    demo = pd.read_csv(small_cohort / "Demographics.csv").set_index("idx")
    studies = clean.studies
    expected_gender = np.where(demo.loc[studies.index, "Female"] == 1, "Female", "Male")
    assert (studies["gender"].to_numpy() == expected_gender).all()
    white = demo.loc[studies.index, "White"] == 1
    assert (studies.loc[white.to_numpy(), "race"] == "White").all()
    assert (studies.loc[~white.to_numpy(), "race"] == "Others").all()
    old = demo.loc[studies.index, "current_age_yrs"] > 80
    assert (studies["age_group"].to_numpy() == np.where(old, ">80", "<=80")).all()


def test_non_subsegmental_mask(clean):
    studies = clean.studies
    assert (~studies["non_subsegmental"] == (studies["pe_type"] == "subsegmental")).all()
    assert (studies.loc[studies["label"] == 0, "non_subsegmental"]).all()


def test_feature_names_per_table(clean):
    names = clean.feature_names
    assert list(names) == list(EHR_TABLES)
    assert len(names["Demographics"]) == 12
    assert len(names["INP_MED"]) == len(names["OUT_MED"]) == 2 * 641
    assert len(names["LABS"]) == 44 and "nan:Binary" in names["LABS"]
    assert len(names["Vitals"]) == 9
    assert all(n.endswith((":Binary", ":Frequeny")) for n in names["INP_MED"])
    assert all(n.startswith("Outpatient_") for n in names["OUT_MED"])
    matrix = clean.features()
    assert matrix.shape == (len(clean.studies), sum(len(v) for v in names.values()))
    assert (matrix.index == clean.studies.index).all()


def test_volumes_are_memory_mapped_and_match_headers(clean):
    idx = clean.studies.index[0]
    vol = clean.volume(idx)
    assert isinstance(vol, np.memmap)
    row = clean.studies.loc[idx]
    assert vol.shape == (row["slices"], row["rows"], row["cols"])
    assert clean.intercept(idx) == 0


def test_annotations_only_for_positives_with_valid_slices(clean):
    ann = clean.annotations
    assert len(ann) > 0
    assert (clean.studies.loc[ann["idx"], "label"] == 1).all()
    assert (ann["slice"].to_numpy() < clean.studies.loc[ann["idx"], "slices"].to_numpy()).all()


def test_quirky_cohort_loads_with_a_warning_per_quirk(quirky):
    text = "\n".join(quirky.warnings)
    for expected in (
        "negative studies carry a pe_type",
        "Unnamed: 0",
        "identical copies dropped",
        "-10000",
        "shorter than one 24-slice window",
        "beyond the study's slices",
    ):
        assert expected in text, expected


def test_quirks_lose_nothing(clean, quirky):
    """Every quirk undone gives back the clean cohort, except rows the warning names as
    conflicting duplicates and the two studies shortened on purpose."""
    assert list(quirky.studies.sort_index().index) == list(clean.studies.sort_index().index)
    for column in ("label", "pe_type", "split", "gender", "race", "age_group"):
        assert (quirky.studies[column].sort_index() == clean.studies[column].sort_index()).all()
    for name in EHR_TABLES:
        conflicting = [
            int(i)
            for w in quirky.warnings
            if w.startswith(str(quirky.root / f"{name}.csv")) and "differing rows" in w
            for i in w.split("(")[-1].split(")")[0].split(", ")
        ]
        a = clean.ehr[name].drop(index=conflicting).sort_index()
        b = quirky.ehr[name].drop(index=conflicting).sort_index()
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)


def test_raw_stored_volumes_are_detected_and_equal_in_hu(clean, quirky):
    short = quirky.studies.index[quirky.studies["slices"] < 24]
    raw = [i for i in quirky.studies.index.difference(short) if quirky.intercept(i) == -1024]
    assert 0 < len(raw) < len(quirky.studies)  # about half are stored raw
    for idx in raw[:3]:
        assert quirky.volume(idx).min() > -200  # stored raw: air near +24
        np.testing.assert_array_equal(quirky.volume_hu(idx), clean.volume_hu(idx))


def test_hu_intercept_override(quirky_cohort):
    forced = Cohort.load(quirky_cohort, hu_intercept=0)
    idx = forced.studies.index[0]
    assert forced.intercept(idx) == 0
