"""Every error the validator must catch: each names the file, the row or idx, and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.data import Cohort, validate_cohort
from radfusion.errors import CohortError


def _labels(root):
    return pd.read_csv(root / "Labels.csv")


def _write(frame, path):
    frame.to_csv(path, index=False)


def _volume_path(root, idx):
    return next(root.glob(f"*/{idx}.npy"))


def _errors(root):
    report = validate_cohort(root)
    assert report.cohort is None
    return report.errors


def test_clean_cohort_has_no_errors(small_cohort):
    report = validate_cohort(small_cohort)
    assert report.errors == []
    assert report.warnings == []
    assert report.cohort is not None


def test_missing_labels_file(cohort_copy):
    (cohort_copy / "Labels.csv").unlink()
    (error,) = _errors(cohort_copy)
    assert "Labels.csv" in error and "not found" in error


@pytest.mark.parametrize("table", ["Demographics", "ICD", "Vitals"])
def test_missing_ehr_table(cohort_copy, table):
    (cohort_copy / f"{table}.csv").unlink()
    (error,) = _errors(cohort_copy)
    assert f"{table}.csv" in error and "copy it from the release" in error


@pytest.mark.parametrize("name", ["Labels.csv", "LABS.csv"])
def test_empty_file(cohort_copy, name):
    (cohort_copy / name).write_bytes(b"")
    (error,) = _errors(cohort_copy)
    assert name in error and "empty" in error


def test_missing_required_column(cohort_copy):
    labels = _labels(cohort_copy).drop(columns=["split"])
    _write(labels, cohort_copy / "Labels.csv")
    (error,) = _errors(cohort_copy)
    assert "missing column(s) ['split']" in error


def test_missing_demographics_column(cohort_copy):
    demo = pd.read_csv(cohort_copy / "Demographics.csv").drop(columns=["current_age_yrs"])
    _write(demo, cohort_copy / "Demographics.csv")
    (error,) = _errors(cohort_copy)
    assert "Demographics.csv" in error and "current_age_yrs" in error


def test_unknown_split_suggests_closest(cohort_copy):
    labels = _labels(cohort_copy)
    labels.loc[3, "split"] = "tset"
    _write(labels, cohort_copy / "Labels.csv")
    (error,) = _errors(cohort_copy)
    assert "'tset'" in error and f"idx {labels.loc[3, 'idx']}" in error
    assert "did you mean 'test'" in error


def test_label_not_binary(cohort_copy):
    labels = _labels(cohort_copy)
    labels.loc[5, "label"] = 2
    _write(labels, cohort_copy / "Labels.csv")
    (error,) = _errors(cohort_copy)
    assert "label must be 0 or 1" in error and str(labels.loc[5, "idx"]) in error


def test_duplicated_idx_in_labels(cohort_copy):
    labels = _labels(cohort_copy)
    labels = pd.concat([labels, labels.iloc[[4]]])
    _write(labels, cohort_copy / "Labels.csv")
    errors = _errors(cohort_copy)
    assert any("appears more than once" in e and str(labels.iloc[4]["idx"]) in e for e in errors)


def test_positive_without_pe_type(cohort_copy):
    labels = _labels(cohort_copy)
    row = labels.index[labels["label"] == 1][0]
    labels.loc[row, "pe_type"] = np.nan
    _write(labels, cohort_copy / "Labels.csv")
    (error,) = _errors(cohort_copy)
    assert "need a pe_type" in error and str(labels.loc[row, "idx"]) in error


def test_patient_in_two_splits(cohort_copy):
    labels = _labels(cohort_copy)
    train = labels.index[labels["split"] == "train"][0]
    test = labels.index[labels["split"] == "test"][0]
    labels.loc[test, "patient_id"] = labels.loc[train, "patient_id"]
    _write(labels, cohort_copy / "Labels.csv")
    (error,) = _errors(cohort_copy)
    assert "more than one split" in error and str(labels.loc[train, "patient_id"]) in error


def test_labelled_study_without_volume_is_an_error(cohort_copy):
    idx = int(_labels(cohort_copy)["idx"].iloc[0])
    _volume_path(cohort_copy, idx).unlink()
    (error,) = _errors(cohort_copy)
    assert "without a volume" in error and f"idx {idx}" in error


def test_volume_without_label_is_a_warning(cohort_copy):
    np.save(cohort_copy / "0" / "99999.npy", np.zeros((30, 16, 16), np.int16))
    report = validate_cohort(cohort_copy)
    assert report.errors == []
    assert any("99999" in w and "without a row in Labels.csv" in w for w in report.warnings)


def test_no_volumes_at_all_is_a_warning(cohort_copy):
    for path in cohort_copy.glob("*/*.npy"):
        path.unlink()
    report = validate_cohort(cohort_copy)
    assert report.errors == []
    assert any("imaging is unavailable" in w for w in report.warnings)


def test_truncated_volume(cohort_copy):
    path = _volume_path(cohort_copy, int(_labels(cohort_copy)["idx"].iloc[2]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (error,) = _errors(cohort_copy)
    assert str(path) in error and "truncated" in error


def test_not_a_npy_file(cohort_copy):
    path = _volume_path(cohort_copy, int(_labels(cohort_copy)["idx"].iloc[2]))
    path.write_bytes(b"this is not numpy data at all")
    (error,) = _errors(cohort_copy)
    assert str(path) in error and "not a readable .npy" in error


def test_two_dimensional_volume(cohort_copy):
    path = _volume_path(cohort_copy, int(_labels(cohort_copy)["idx"].iloc[2]))
    np.save(path, np.zeros((16, 16), np.int16))
    (error,) = _errors(cohort_copy)
    assert str(path) in error and "must be 3-D" in error


def test_pickled_object_volume_is_refused(cohort_copy):
    path = _volume_path(cohort_copy, int(_labels(cohort_copy)["idx"].iloc[2]))
    np.save(path, np.array([{"a": 1}] * 8, dtype=object).reshape(2, 2, 2), allow_pickle=True)
    (error,) = _errors(cohort_copy)
    assert "pickle" in error


def test_ehr_idx_set_must_match_labels(cohort_copy):
    icd = pd.read_csv(cohort_copy / "ICD.csv")
    dropped = int(icd.loc[0, "idx"])
    icd = icd.iloc[1:]
    extra = icd.iloc[[0]].assign(idx=77777)
    _write(pd.concat([icd, extra]), cohort_copy / "ICD.csv")
    errors = _errors(cohort_copy)
    assert any("ICD.csv" in e and "no row for 1" in e and str(dropped) in e for e in errors)
    assert any("ICD.csv" in e and "77777" in e and "not in Labels.csv" in e for e in errors)


def test_non_numeric_feature_column(cohort_copy):
    labs = pd.read_csv(cohort_copy / "LABS.csv")
    labs["CRP:Value"] = labs["CRP:Value"].astype(object)
    labs.loc[3, "CRP:Value"] = "high"
    _write(labs, cohort_copy / "LABS.csv")
    (error,) = _errors(cohort_copy)
    assert "LABS.csv" in error and "'CRP:Value'" in error and "'high'" in error
    assert f"idx {labs.loc[3, 'idx']}" in error


def test_infinite_feature_value(cohort_copy):
    vitals = pd.read_csv(cohort_copy / "Vitals.csv")
    vitals.loc[2, "pulse"] = np.inf
    _write(vitals, cohort_copy / "Vitals.csv")
    (error,) = _errors(cohort_copy)
    assert "Vitals.csv" in error and "infinite" in error and "'pulse'" in error


def test_load_raises_with_every_problem(cohort_copy):
    labels = _labels(cohort_copy)
    labels.loc[1, "label"] = 5
    labels.loc[2, "split"] = "holdout"
    _write(labels, cohort_copy / "Labels.csv")
    with pytest.raises(CohortError) as info:
        Cohort.load(cohort_copy)
    assert len(info.value.problems) == 2
    assert "holdout" in str(info.value) and "label must be 0 or 1" in str(info.value)


def test_not_a_folder(tmp_path):
    report = validate_cohort(tmp_path / "nowhere")
    assert "not a folder" in report.errors[0]
