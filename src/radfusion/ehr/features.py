"""The paper's EHR feature engineering, from raw MEDS events to the release's six tables.

Everything is computed over an observation window of ``window_days`` (365) before each CT
study, from events strictly before the CT time. Per feature family:

* Demographics: one-hot gender, race and smoking (the most recent code at or before the CT;
  static codes count as oldest), and ``current_age_yrs`` = whole years from ``MEDS_BIRTH`` to
  the CT time (days / 365.25, floored).
* Vitals, the paper's "derivative": the ordinary least-squares slope of the vital's values
  against time (in days, relative to the CT) over the window, in units per day. Missing when a
  study has fewer than two measurements or they all share one time.
* Medications (inpatient, outpatient): per drug class, ``:Binary`` (any prescription in the
  window) and ``:Frequeny`` (the number of prescriptions; sic, the release's spelling).
* Diagnosis groups: ``:frequency`` (number of codes) and ``:presence``; groups present in fewer
  than ``min_icd_prevalence`` (1%) of the training studies are dropped.
* Labs: per test, ``:Binary`` (measured in the window) and ``:Value`` (the latest value; ties
  at one time resolve to the largest value; missing when not measured).

Leakage rules (the paper's): diagnosis codes recorded within ``leakage_hours`` (24 h) before
the CT, and diagnosis codes from the CT's own encounter, are dropped. ``leakage_scope="all"``
extends the encounter rule to every code. Nothing at or after the CT time is ever used.

All of it is vectorised: events are joined to studies once and reduced with group-bys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from radfusion.data.layout import (
    CODE_PREFIXES,
    DEMOGRAPHIC_COLUMNS,
    GENDER_COLUMNS,
    ICD_SUFFIXES,
    LAB_SUFFIXES,
    MED_SUFFIXES,
    OUTPATIENT_PREFIX,
    RACE_COLUMNS,
)
from radfusion.data.meds import BIRTH_CODE, split_codes, window_events
from radfusion.ehr.vocabulary import Vocabulary
from radfusion.errors import RadfusionError

__all__ = ["build_features"]


def _counts(win: pd.DataFrame, prefix: str, names: Sequence[str], idx: pd.Index) -> pd.DataFrame:
    sub = win[win["prefix"] == prefix]
    counts = sub.groupby(["idx", "name"]).size().unstack(fill_value=0)
    return counts.reindex(index=idx, columns=list(names), fill_value=0).astype(np.int64)


def _pairs(first: pd.DataFrame, second: pd.DataFrame, names: Sequence[str], suffixes, rename):
    """Interleave two per-name frames into ``name+suffix`` column pairs, in vocabulary order."""
    cols = {}
    for name in names:
        cols[rename(name) + suffixes[0]] = first[name]
        cols[rename(name) + suffixes[1]] = second[name]
    return pd.DataFrame(cols, index=first.index)


def _medications(win, prefix, names, idx, rename=lambda n: n) -> pd.DataFrame:
    counts = _counts(win, prefix, names, idx)
    return _pairs((counts > 0).astype(np.int64), counts, names, MED_SUFFIXES, rename)


def _diagnoses(win, names, idx, train_idx, min_prevalence) -> pd.DataFrame:
    counts = _counts(win, CODE_PREFIXES["icd"], names, idx)
    present = counts > 0
    prevalence = present.loc[present.index.isin(train_idx)].mean(axis=0)
    kept = [n for n in names if prevalence[n] >= min_prevalence]
    return _pairs(counts, present.astype(np.int64), kept, ICD_SUFFIXES, str)


def _labs(win, names, idx) -> pd.DataFrame:
    sub = win[win["prefix"] == CODE_PREFIXES["lab"]]
    sub = sub.sort_values(["idx", "name", "days", "numeric_value"], kind="stable")
    latest = sub.groupby(["idx", "name"])["numeric_value"].last().unstack()
    latest = latest.reindex(index=idx, columns=list(names))
    taken = _counts(win, CODE_PREFIXES["lab"], names, idx) > 0
    return _pairs(taken.astype(np.int64), latest, names, LAB_SUFFIXES, str)


def _vitals(win, names, idx) -> pd.DataFrame:
    sub = win[win["prefix"] == CODE_PREFIXES["vital"]].dropna(subset=["numeric_value"])
    keys = [sub["idx"], sub["name"]]
    # Two passes (centre, then sum products) keep the slope exact where one pass would
    # cancel: a constant series gets a slope of exactly 0, not 1e-8.
    x = sub["days"] - sub["days"].groupby(keys).transform("mean")
    y = sub["numeric_value"] - sub["numeric_value"].groupby(keys).transform("mean")
    frame = pd.DataFrame({"n": 1.0, "xx": x * x, "xy": x * y, "lo": sub["days"], "hi": sub["days"]})
    sums = frame.groupby(keys).agg({"n": "sum", "xx": "sum", "xy": "sum", "lo": "min", "hi": "max"})
    # Fewer than two measurements, or all at one instant: no slope.
    valid = (sums["n"] >= 2) & (sums["hi"] > sums["lo"])
    slope = (sums["xy"] / sums["xx"]).where(valid)
    return slope.unstack().reindex(index=idx, columns=list(names)).astype(float)


def _demographics(events: pd.DataFrame, studies: pd.DataFrame, idx: pd.Index) -> pd.DataFrame:
    out = pd.DataFrame(0, index=idx, columns=list(DEMOGRAPHIC_COLUMNS), dtype=np.int64)
    out["current_age_yrs"] = np.nan
    per_study = studies.set_index("idx").reindex(idx)

    births = events.loc[events["code"] == BIRTH_CODE, ["subject_id", "time"]]
    births = births.dropna().groupby("subject_id")["time"].min()
    # reindex, not map: Series.map fails on an empty datetime mapping (pandas 3.1)
    birth = pd.Series(births.reindex(per_study["subject_id"]).to_numpy(), index=idx)
    age_days = (per_study["ct_time"] - birth) / pd.Timedelta(days=1)
    out["current_age_yrs"] = np.floor(age_days / 365.25)

    coded = split_codes(events[events["code"].str.contains("//", regex=False, na=False)])
    families = {
        CODE_PREFIXES["gender"]: ({g: g for g in GENDER_COLUMNS}, None),
        CODE_PREFIXES["race"]: ({r: r for r in RACE_COLUMNS}, "Unknown_race"),
        CODE_PREFIXES["smoking"]: ({"N": "SMOKER_N", "Y": "SMOKER_Y"}, None),
    }
    coded = coded[coded["prefix"].isin(families)]
    joined = coded.merge(per_study.reset_index()[["idx", "subject_id", "ct_time"]], on="subject_id")
    # Static codes (no time) count as the oldest; timed codes must precede the CT.
    usable = joined["time"].isna() | (joined["time"] < joined["ct_time"])
    joined = joined[usable].assign(
        order=joined["time"].fillna(pd.Timestamp("1700-01-01").as_unit("us"))
    )
    latest = joined.sort_values(["idx", "prefix", "order"], kind="stable")
    latest = latest.groupby(["idx", "prefix"])["name"].last().reset_index()
    for prefix, (mapping, fallback) in families.items():
        rows = latest[latest["prefix"] == prefix]
        column = rows["name"].map(mapping)
        if fallback is not None:
            column = column.fillna(fallback)
        rows = rows.assign(column=column).dropna(subset=["column"])
        for col, group in rows.groupby("column"):
            out.loc[group["idx"].to_numpy(), col] = 1
        if fallback is not None:  # a study without any race code is Unknown_race
            unknown = ~idx.isin(rows["idx"])
            out.loc[unknown, fallback] = 1
    return out


def _infer_names(events: pd.DataFrame, prefix: str) -> tuple[str, ...]:
    codes = events["code"].astype(str)
    names = codes[codes.str.startswith(prefix + "//")].str.slice(len(prefix) + 2)
    return tuple(sorted(names.unique()))


def build_features(
    events: pd.DataFrame,
    studies: pd.DataFrame,
    *,
    vocabulary: Vocabulary | None = None,
    train_idx: Iterable[int] | None = None,
    window_days: int = 365,
    leakage_hours: float = 24.0,
    leakage_scope: str = "icd",
    min_icd_prevalence: float = 0.01,
    encounter_column: str = "encounter_id",
) -> dict[str, pd.DataFrame]:
    """Build the release's six EHR tables from MEDS events.

    Parameters
    ----------
    events
        MEDS events: ``subject_id``, ``time``, ``code``, ``numeric_value`` and the encounter
        column. Codes are ``PREFIX//name`` with the prefixes in
        :data:`radfusion.ehr.vocabulary.CODE_PREFIXES`, plus ``MEDS_BIRTH``.
    studies
        One row per CT study: ``idx``, ``subject_id``, ``ct_time``, ``encounter_id``.
    vocabulary
        Column order and the full list of names per family; inferred from the codes when None.
    train_idx
        The training studies, over which the 1% diagnosis-group rule is counted (all studies
        when None).

    Returns
    -------
    dict
        Table stem (``Demographics``, ``INP_MED``, ``OUT_MED``, ``ICD``, ``LABS``, ``Vitals``)
        to a frame indexed by ``idx`` with the release's column names.
    """
    if studies["idx"].duplicated().any():
        dup = studies.loc[studies["idx"].duplicated(), "idx"].iloc[0]
        raise RadfusionError(f"study table: idx {dup} appears twice; each study needs one row")
    if vocabulary is None:
        vocabulary = Vocabulary(
            drug_classes=tuple(
                sorted(
                    set(_infer_names(events, CODE_PREFIXES["inpatient"]))
                    | set(_infer_names(events, CODE_PREFIXES["outpatient"]))
                )
            ),
            icd_groups=_infer_names(events, CODE_PREFIXES["icd"]),
            lab_tests=_infer_names(events, CODE_PREFIXES["lab"]),
            vitals=_infer_names(events, CODE_PREFIXES["vital"]),
        )
    idx = pd.Index(np.sort(studies["idx"].to_numpy()), name="idx")
    train = idx if train_idx is None else pd.Index(list(train_idx))
    win = window_events(
        events,
        studies,
        window_days=window_days,
        leakage_hours=leakage_hours,
        leakage_scope=leakage_scope,
        encounter_column=encounter_column,
    )
    icd_names = vocabulary.icd_groups + vocabulary.rare_icd_groups
    tables = {
        "Demographics": _demographics(events, studies, idx),
        "INP_MED": _medications(win, CODE_PREFIXES["inpatient"], vocabulary.drug_classes, idx),
        "OUT_MED": _medications(
            win,
            CODE_PREFIXES["outpatient"],
            vocabulary.drug_classes,
            idx,
            rename=lambda n: OUTPATIENT_PREFIX + n,
        ),
        "ICD": _diagnoses(win, icd_names, idx, train, min_icd_prevalence),
        "LABS": _labs(win, vocabulary.lab_tests, idx),
        "Vitals": _vitals(win, vocabulary.vitals, idx),
    }
    for table in tables.values():
        table.columns.name = None
    return tables
