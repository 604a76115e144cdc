"""The paper's Table 1 (per split) and Table 2 (test-set subgroups) for any cohort."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from radfusion.data.cohort import Cohort
from radfusion.data.layout import PE_TYPES, SPLITS

__all__ = [
    "DDIMER_POSITIVE",
    "TEST_GROUPS",
    "label_counts",
    "summarize",
    "summary_payload",
    "task_summary",
    "test_group_counts",
]

#: D-dimer at or above 0.5 ug/mL FEU (500 ng/mL) counts as positive.
DDIMER_POSITIVE = 0.5
_DDIMER = re.compile(r"d[-_ ]?dimer", re.IGNORECASE)
TEST_GROUPS = (
    ("gender", "Female"),
    ("gender", "Male"),
    ("race", "White"),
    ("race", "Others"),
    ("age_group", ">80"),
    ("age_group", "<=80"),
)


def _quartiles(values: pd.Series) -> tuple[float | None, float | None]:
    values = values.dropna()
    if values.empty:
        return None, None
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float(q3 - q1)


def _mean_std(values: pd.Series | None) -> dict[str, float] | None:
    if values is None:
        return None
    values = values.dropna()
    if len(values) < 2:
        return None
    return {"mean": round(float(values.mean()), 2), "std": round(float(values.std()), 2)}


def _vital_levels(cohort: Cohort) -> dict[str, pd.Series]:
    """BMI and pulse levels (latest in the 12-month window), from ``raw/`` events if present.

    The release's Vitals table holds rates of change, not levels, so Table 1's BMI and pulse
    can only come from raw events.
    """
    raw = cohort.root / "raw"
    if not (raw / "data").is_dir():
        return {}
    from radfusion.data.meds import latest_values, read_meds, read_raw_studies

    events = read_meds(raw)
    studies = read_raw_studies(raw)
    return {name: latest_values(events, studies, f"VITAL//{name}") for name in ("bmi", "pulse")}


def _ddimer_columns(cohort: Cohort) -> tuple[str, str] | None:
    labs = cohort.ehr.get("LABS")
    if labs is None:
        return None
    for column in labs.columns:
        name, _, suffix = column.rpartition(":")
        if suffix == "Binary" and _DDIMER.search(name) and f"{name}:Value" in labs.columns:
            return column, f"{name}:Value"
    return None


def label_counts(part: pd.DataFrame) -> dict[str, int]:
    """Studies, negatives, positives and positives per PE subtype of a set of studies."""
    positives = part[part["label"] == 1]
    return {
        "studies": len(part),
        "negatives": int((part["label"] == 0).sum()),
        "positives": len(positives),
        **{t: int((positives["pe_type"] == t).sum()) for t in PE_TYPES},
    }


def test_group_counts(studies: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Table 2: test-set studies per group, with and without subsegmental-only positives."""
    test = studies[studies["split"] == "test"]
    kept = test[test["non_subsegmental"]]
    return (
        {g: int((test[a] == g).sum()) for a, g in TEST_GROUPS},
        {g: int((kept[a] == g).sum()) for a, g in TEST_GROUPS},
    )


def summary_payload(summary: dict[str, Any], report) -> dict[str, Any]:
    """``radfusion validate --json``: the summary, then the validation's warnings and errors."""
    return {
        "splits": summary.get("splits", {}),
        "test_groups": summary.get("test_groups", {}),
        **{k: v for k, v in summary.items() if k not in ("splits", "test_groups")},
        "warnings": report.warnings,
        "errors": report.errors,
    }


def summarize(cohort: Cohort) -> dict[str, Any]:
    """Table 1 per split (and overall) and Table 2's test-set group counts, as plain data."""
    studies = cohort.studies
    levels = _vital_levels(cohort)
    ddimer = _ddimer_columns(cohort)
    splits: dict[str, Any] = {}
    for name in (*SPLITS, "overall"):
        part = studies if name == "overall" else studies[studies["split"] == name]
        median, iqr = _quartiles(part["slices"].astype(float))
        row: dict[str, Any] = {
            **label_counts(part),
            "patients": int(part["patient_id"].nunique()) if "patient_id" in part else None,
            "median_slices": median,
            "iqr_slices": iqr,
        }
        for vital, series in levels.items():
            row[vital] = _mean_std(series.reindex(part.index))
        if ddimer is not None:
            taken = cohort.ehr["LABS"].loc[part.index, ddimer[0]] == 1
            value = cohort.ehr["LABS"].loc[part.index, ddimer[1]]
            row["ddimer_taken"] = int(taken.sum())
            row["ddimer_positive"] = int((taken & (value >= DDIMER_POSITIVE)).sum())
        splits[name] = row
    with_subsegmental, without_subsegmental = test_group_counts(studies)
    return {
        "root": str(cohort.root),
        "splits": splits,
        "test_groups": with_subsegmental,
        "test_groups_non_subsegmental": without_subsegmental,
        "annotated_studies": int(cohort.annotations["idx"].nunique()),
        "ehr_features": {name: len(cols) for name, cols in cohort.feature_names.items()},
    }


def task_summary(cohort: Cohort) -> dict[str, Any]:
    """Per split: studies, patients, the slice count and spacing, and per task its positives,
    negatives and censored studies (every study of the folder, censored ones included)."""
    studies = cohort.all_studies  # the task's censored studies are out of ``studies``
    tasks = (
        cohort.tasks
        if cohort.tasks is not None
        else studies[["label"]].rename(columns={"label": "PE"}).astype(float)
    )
    splits: dict[str, Any] = {}
    for name in (*SPLITS, "overall"):
        part = studies if name == "overall" else studies[studies["split"] == name]
        median, iqr = _quartiles(part["slices"].astype(float)) if "slices" in part else (None, None)
        spacing = part["slice_spacing"].dropna() if "slice_spacing" in part else pd.Series([])
        row: dict[str, Any] = {
            "studies": len(part),
            "patients": int(part["patient_id"].nunique()) if "patient_id" in part else None,
            "median_slices": median,
            "iqr_slices": iqr,
            "slice_spacing": (
                {
                    "median": float(spacing.median()),
                    "min": float(spacing.min()),
                    "max": float(spacing.max()),
                }
                if len(spacing)
                else None
            ),
        }
        values = tasks.reindex(part.index)
        row["tasks"] = {
            task: {
                "positives": int((values[task] == 1).sum()),
                "negatives": int((values[task] == 0).sum()),
                "censored": int(values[task].isna().sum()),
            }
            for task in tasks.columns
        }
        splits[name] = row
    return {"root": str(cohort.root), "layout": cohort.layout, "splits": splits}
