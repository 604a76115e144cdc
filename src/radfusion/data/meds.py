"""MEDS events as the cohort holds them: reading and validating the shards and the study table,
and the events each study's window may use (the paper's 12 months before the CT, without the
leaking diagnosis codes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from radfusion.data.layout import CODE_PREFIXES
from radfusion.errors import RadfusionError

__all__ = [
    "BIRTH_CODE",
    "RAW_STUDIES_FILE",
    "STUDY_COLUMNS",
    "latest_values",
    "read_meds",
    "read_raw_studies",
    "split_codes",
    "window_events",
]

RAW_STUDIES_FILE = "studies.parquet"
BIRTH_CODE = "MEDS_BIRTH"
STUDY_COLUMNS = ("idx", "subject_id", "ct_time", "encounter_id")


def read_meds(root: str | Path, *, encounter_column: str = "encounter_id") -> pd.DataFrame:
    """Read and validate MEDS data shards (``root/data/*.parquet``) into one frame."""
    import meds
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    shards = sorted((root / "data").glob("*.parquet"))
    if not shards:
        raise RadfusionError(
            f"{root / 'data'}: no MEDS shards (*.parquet) found; "
            "write events as MEDS data files there"
        )
    tables = []
    for shard in shards:
        table = pq.read_table(shard)
        try:
            table = meds.DataSchema.align(table)
        except Exception as exc:  # the schema library raises several types
            raise RadfusionError(f"{shard}: not a valid MEDS data file: {exc}") from exc
        if encounter_column not in table.column_names:
            raise RadfusionError(
                f"{shard}: missing the encounter column {encounter_column!r}, "
                "which the leakage rules need"
            )
        tables.append(table)
    events = pa.concat_tables(tables).to_pandas()
    events["time"] = events["time"].astype("datetime64[us]")
    return events


def read_raw_studies(root: str | Path) -> pd.DataFrame:
    """Read the study table (``idx``, ``subject_id``, ``ct_time``, ``encounter_id``)."""
    path = Path(root) / RAW_STUDIES_FILE
    if not path.exists():
        raise RadfusionError(f"{path}: study table not found; it maps each idx to its CT event")
    studies = pd.read_parquet(path)
    missing = [c for c in STUDY_COLUMNS if c not in studies.columns]
    if missing:
        raise RadfusionError(f"{path}: missing column(s) {missing}; expected {list(STUDY_COLUMNS)}")
    studies["ct_time"] = studies["ct_time"].astype("datetime64[us]")
    return studies


def split_codes(events: pd.DataFrame) -> pd.DataFrame:
    """Add ``prefix`` and ``name`` columns: ``LAB//D-dimer`` -> ``LAB``, ``D-dimer``."""
    if events.empty:
        return events.assign(prefix=pd.Series(dtype=str), name=pd.Series(dtype=str))
    parts = events["code"].astype(str).str.partition("//")
    return events.assign(prefix=parts[0].to_numpy(), name=parts[2].to_numpy())


def window_events(
    events: pd.DataFrame,
    studies: pd.DataFrame,
    *,
    window_days: int = 365,
    leakage_hours: float = 24.0,
    leakage_scope: str = "icd",
    encounter_column: str = "encounter_id",
) -> pd.DataFrame:
    """Join timed events to studies and keep those the paper's rules allow.

    Returns one row per (study, event) with columns ``idx``, ``prefix``, ``name``,
    ``numeric_value`` and ``days`` (event time minus CT time, in days; negative).
    """
    if leakage_scope not in ("icd", "all"):
        raise ValueError(f"leakage_scope must be 'icd' or 'all', got {leakage_scope!r}")
    timed = events[events["time"].notna()]
    cols = ["subject_id", "time", "code", "numeric_value", encounter_column]
    joined = timed[cols].merge(
        studies[list(STUDY_COLUMNS)].rename(columns={"encounter_id": "_ct_encounter"}),
        on="subject_id",
        how="inner",
    )
    delta = joined["time"] - joined["ct_time"]
    keep = (delta < pd.Timedelta(0)) & (delta >= -pd.Timedelta(days=window_days))
    joined = split_codes(joined[keep])
    delta = delta[keep]
    is_icd = joined["prefix"] == CODE_PREFIXES["icd"]
    same_encounter = joined[encounter_column].eq(joined["_ct_encounter"]).fillna(False)
    too_close = delta >= -pd.Timedelta(hours=leakage_hours)
    drop_encounter = same_encounter & (is_icd if leakage_scope == "icd" else True)
    drop = (is_icd & too_close) | drop_encounter
    joined = joined[~drop.to_numpy()]
    days = (joined["time"] - joined["ct_time"]) / pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            "idx": joined["idx"].to_numpy(),
            "prefix": joined["prefix"].to_numpy(),
            "name": joined["name"].to_numpy(),
            "numeric_value": joined["numeric_value"].to_numpy(dtype=float),
            "days": days.to_numpy(dtype=float),
        }
    )


def latest_values(
    events: pd.DataFrame, studies: pd.DataFrame, code: str, *, window_days: int = 365
) -> pd.Series:
    """The latest value of one code in each study's window (NaN where none), indexed by idx."""
    subset = events[events["code"] == code]
    win = window_events(subset, studies, window_days=window_days)
    win = win.sort_values(["idx", "days", "numeric_value"], kind="stable")
    values = win.groupby("idx")["numeric_value"].last()
    return values.reindex(pd.Index(studies["idx"], name="idx"))
