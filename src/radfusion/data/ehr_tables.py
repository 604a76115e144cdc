"""The release's six EHR CSVs: read, clean the known quirks, check against the labels.

Quirks cleaned, each with a warning that counts what changed:

* extra ``Unnamed: 0`` (a saved pandas index) and ``split`` columns are dropped;
* duplicated ``idx`` rows: identical copies are dropped; when copies differ, the first one in
  file order is kept (deterministic, and the warning names the idx);
* ``-10000`` in Vitals is the release's missing-value sentinel and becomes missing;
* ``:Frequency`` in the medication tables is renamed to the release's ``:Frequeny``.

Errors (the table cannot be used): a missing or empty file, no ``idx`` column, a
non-numeric or infinite feature value, Demographics without its required columns, and an
idx set that differs from ``Labels.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.findings import Findings, bad_ids, preview, read_csv_checked
from radfusion.data.layout import (
    DEMOGRAPHIC_COLUMNS,
    EHR_TABLES,
    GENDER_COLUMNS,
    ICD_SUFFIXES,
    LAB_SUFFIXES,
    MED_SUFFIX_ALIASES,
    MED_SUFFIXES,
    VITAL_COLUMNS,
    VITALS_SENTINEL,
)
from radfusion.io import quote

__all__ = ["read_release_table", "read_release_tables"]

EXTRA_COLUMNS = ("split",)
REQUIRED = {"Demographics": ("current_age_yrs", *GENDER_COLUMNS, "White")}


def read_release_tables(
    root: Path, findings: Findings, labels_idx: pd.Index
) -> dict[str, pd.DataFrame]:
    """Read every EHR table present; each result is indexed by idx in ``labels_idx`` order."""
    tables = {}
    for name in EHR_TABLES:
        table = read_release_table(root / f"{name}.csv", name, findings, labels_idx)
        if table is not None:
            tables[name] = table
    return tables


def read_release_table(path: Path, name: str, findings: Findings, labels_idx: pd.Index):
    """Read, clean and check one release table; None (with an error recorded) if unusable."""
    fix = (
        f"the release has six EHR tables ({', '.join(f'{t}.csv' for t in EHR_TABLES)}); "
        "copy it from the release"
    )
    frame = read_csv_checked(path, findings, f"EHR table {name}", fix)
    if frame is None:
        return None
    if "idx" not in frame.columns:
        findings.error(f"{path}: no 'idx' column; every EHR table is keyed by the study idx")
        return None
    extra = [c for c in frame.columns if str(c).startswith("Unnamed:") or c in EXTRA_COLUMNS]
    if extra:
        frame = frame.drop(columns=extra)
        findings.warn(f"{path}: dropped non-feature column(s) {extra}")
    missing = [c for c in REQUIRED.get(name, ()) if c not in frame.columns]
    if missing:
        findings.error(f"{path}: missing required column(s) {missing}")
        return None

    idx, bad = bad_ids(frame["idx"])
    if bad.any():
        findings.error(
            f"{path}: idx must be whole non-negative numbers; line(s) "
            f"{preview(frame.index[bad] + 2)} have {preview(frame.loc[bad, 'idx'].tolist())}"
        )
        return None
    frame["idx"] = idx
    frame = _resolve_duplicates(path, frame, findings)

    features = frame.drop(columns=["idx"])
    features.index = pd.Index(frame["idx"].to_numpy(), name="idx")
    features = _numeric(path, features, findings)
    if features is None:
        return None
    if name in ("INP_MED", "OUT_MED"):
        features = features.rename(columns=_fix_suffix)
    if name == "Vitals":
        sentinel = features == VITALS_SENTINEL
        if sentinel.to_numpy().any():
            findings.warn(
                f"{path}: {int(sentinel.to_numpy().sum())} value(s) of {VITALS_SENTINEL:g} "
                "(the release's missing-value sentinel) read as missing"
            )
            features = features.mask(sentinel)

    _missing_columns(path, name, features.columns, findings)
    absent = labels_idx.difference(features.index)
    unknown = features.index.difference(labels_idx)
    if len(absent):
        findings.error(
            f"{path}: no row for {len(absent)} labelled stud(ies), idx {preview(absent)}; "
            "every study in Labels.csv needs a row"
        )
    if len(unknown):
        findings.error(
            f"{path}: {len(unknown)} row(s) for idx not in Labels.csv ({preview(unknown)}); "
            "remove them or add their labels"
        )
    if len(absent) or len(unknown):
        return None
    return features.reindex(labels_idx)


#: Each table's features come in pairs, one column per suffix.
PAIRED = {
    "INP_MED": MED_SUFFIXES,
    "OUT_MED": MED_SUFFIXES,
    "ICD": ICD_SUFFIXES,
    "LABS": LAB_SUFFIXES,
}
KNOWN = {"Demographics": DEMOGRAPHIC_COLUMNS, "Vitals": VITAL_COLUMNS}


def _missing_columns(path: Path, name: str, columns, findings: Findings) -> None:
    """Warn about a feature column the release has but this copy lacks: a known Vitals or
    Demographics column, or one half of a pair (``<test>:Value`` without ``<test>:Binary``)."""
    present = set(columns)
    if name in KNOWN:
        missing = [c for c in KNOWN[name] if c not in present]
    else:
        suffixes = PAIRED.get(name, ())
        bases = {c[: -len(x)] for c in present for x in suffixes if c.endswith(x)}
        missing = sorted(b + x for b in bases for x in suffixes if b + x not in present)
    if missing:
        findings.warn(
            f"{path}: {len(missing)} feature column(s) of the release missing "
            f"({preview(missing, 3)}); the EHR model is trained without them, and a model "
            "trained with them refuses this cohort"
        )


def _fix_suffix(column: str) -> str:
    for alias, canonical in MED_SUFFIX_ALIASES.items():
        if column.endswith(alias):
            return column[: -len(alias)] + canonical
    return column


def _resolve_duplicates(path: Path, frame: pd.DataFrame, findings: Findings) -> pd.DataFrame:
    dup = frame["idx"].duplicated(keep=False)
    if not dup.any():
        return frame
    identical = frame.duplicated(keep="first")
    frame_unique = frame[~identical]
    conflicting = frame_unique["idx"].duplicated(keep=False)
    conflict_idx = sorted(frame_unique.loc[conflicting, "idx"].unique())
    result = frame_unique[~frame_unique["idx"].duplicated(keep="first")]
    message = (
        f"{path}: {int(dup.sum())} rows share {frame.loc[dup, 'idx'].nunique()} idx value(s); "
        f"{int(identical.sum())} identical copies dropped"
    )
    if conflict_idx:
        message += (
            f"; {len(conflict_idx)} idx with differing rows ({preview(conflict_idx)}) keep the "
            "first row in file order"
        )
    findings.warn(message)
    return result


def _numeric(path: Path, features: pd.DataFrame, findings: Findings) -> pd.DataFrame | None:
    bad_columns = []
    for column in [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]:
        converted = pd.to_numeric(features[column], errors="coerce")
        bad = converted.isna() & features[column].notna()
        if bad.any():
            first = bad.to_numpy().nonzero()[0][0]
            value, idx = features[column].iloc[first], features.index[first]
            bad_columns.append(f"{quote(column)} (value {quote(value)} at idx {idx})")
        features[column] = converted
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad_columns or non_numeric:
        findings.error(
            f"{path}: non-numeric feature column(s) {preview(bad_columns or non_numeric, 3)}; "
            "every feature must be a number or empty"
        )
        return None
    values = features.to_numpy(dtype=float)
    infinite = np.isinf(values)
    if infinite.any():
        rows, cols = np.nonzero(infinite)
        findings.error(
            f"{path}: {int(infinite.sum())} infinite value(s), e.g. column "
            f"{features.columns[cols[0]]!r} at idx {features.index[rows[0]]}; "
            "write missing values as empty cells"
        )
        return None
    return features.astype(float)
