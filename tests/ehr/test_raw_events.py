"""The synthetic cohort's raw MEDS events: a valid MEDS dataset from which the paper's
feature engineering gives back exactly the release tables written beside it."""

from __future__ import annotations

import meds
import pandas as pd
import pyarrow.parquet as pq

from radfusion.data.layout import EHR_TABLES
from radfusion.data.meds import read_meds, read_raw_studies
from radfusion.ehr.features import build_features
from radfusion.ehr.vocabulary import default_vocabulary


def test_raw_events_follow_the_meds_schema(small_cohort):
    table = pq.read_table(small_cohort / "raw" / "data" / "0.parquet")
    meds.DataSchema.validate(table)  # raises on a schema violation
    assert "encounter_id" in table.column_names
    splits = pd.read_parquet(small_cohort / "raw" / "metadata" / "subject_splits.parquet")
    assert set(splits["split"]) == {meds.train_split, meds.tuning_split, meds.held_out_split}


def test_features_from_raw_events_equal_the_release_tables(small_cohort):
    """The generator derives its tables with the same code, so this checks the round trip
    through files (MEDS Parquet, the study table, the CSVs), not the feature definitions:
    those are checked by hand in test_features.py."""
    events = read_meds(small_cohort / "raw")
    studies = read_raw_studies(small_cohort / "raw")
    labels = pd.read_csv(small_cohort / "Labels.csv")
    tables = build_features(
        events,
        studies,
        vocabulary=default_vocabulary(),
        train_idx=labels.loc[labels["split"] == "train", "idx"],
    )
    for name in EHR_TABLES:
        written = pd.read_csv(small_cohort / f"{name}.csv").set_index("idx").sort_index()
        derived = tables[name].sort_index()
        assert list(derived.columns) == list(written.columns), name
        pd.testing.assert_frame_equal(
            derived, written, check_dtype=False, check_exact=False, rtol=1e-12
        )


def test_leaked_codes_exist_in_raw_events_but_not_in_features(small_cohort):
    """The raw events hold PE diagnoses from the CT itself; the features must not see them."""
    events = read_meds(small_cohort / "raw")
    studies = read_raw_studies(small_cohort / "raw")
    labels = pd.read_csv(small_cohort / "Labels.csv").set_index("idx")
    pe = "ICD//Pulmonary embolism and infarction"
    joined = events[events["code"] == pe].merge(studies, on="subject_id")
    at_ct = joined[joined["encounter_id_x"] == joined["encounter_id_y"]]
    assert at_ct["idx"].map(labels["label"]).eq(1).all() and len(at_ct) > 0
    icd = pd.read_csv(small_cohort / "ICD.csv").set_index("idx")
    presence = icd["Pulmonary embolism and infarction:presence"]
    positives = labels["label"] == 1
    # Without the leakage rules every positive would carry the code; with them, far fewer do.
    assert presence[positives[positives].index].mean() < 0.8
