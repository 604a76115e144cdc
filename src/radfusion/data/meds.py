"""MEDS events as the cohort holds them: reading and validating the shards and the study table,
and the events each study's window may use (the paper's 12 months before the CT, without the
leaking diagnosis codes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.layout import CODE_PREFIXES
from radfusion.errors import RadfusionError

__all__ = [
    "BIRTH_CODE",
    "DEMOGRAPHIC_KINDS",
    "RAW_STUDIES_FILE",
    "STUDY_COLUMNS",
    "EventArrays",
    "age_years",
    "demographic_kind",
    "demographic_value",
    "latest_values",
    "read_event_arrays",
    "read_meds",
    "read_raw_studies",
    "split_codes",
    "study_arrays",
    "study_groups",
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


@dataclass(frozen=True)
class EventArrays:
    """A MEDS dataset's events as flat arrays, sorted by subject, then time (static events
    first): what the code featuriser (:mod:`radfusion.ehr.codes`) reduces.

    ``seconds`` is the event time in whole seconds since the epoch, rounded down (static
    events: ``STATIC``); ``code`` indexes ``codes``; ``value`` is NaN where the event has no
    numeric value; ``subjects`` are the distinct subject ids, sorted, and ``rank`` each
    event's subject's position among them. ``key`` orders the events in one int64:
    ``rank * span + offset``, where ``offset`` is 0 for a static event and ``seconds - start +
    1`` for a timed one."""

    subject: np.ndarray  # int64
    seconds: np.ndarray  # int64
    code: np.ndarray  # int32, into ``codes``
    value: np.ndarray  # float64
    codes: np.ndarray  # the code strings, object
    subjects: np.ndarray  # int64, sorted, distinct
    rank: np.ndarray  # int64, per event
    key: np.ndarray  # int64, per event, ascending
    start: int  # the earliest timed second
    span: int  # offsets lie in [0, span)

    STATIC = np.iinfo(np.int64).min

    def __len__(self) -> int:
        return len(self.subject)


def read_event_arrays(root: str | Path) -> EventArrays:
    """Read every MEDS data shard below ``root/data`` (any depth, as sharded-by-split trees
    are) into :class:`EventArrays`, validating each against the MEDS schema. Only the four
    core columns are read, codes dictionary-encoded: a 10^8-event dataset is a few arrays.
    Shards in MEDS order (by subject, then time) are not sorted again."""
    import meds
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(root)
    shards = sorted((root / "data").rglob("*.parquet"))
    if not shards:
        raise RadfusionError(
            f"{root / 'data'}: no MEDS shards (*.parquet) found; point --meds (or "
            "data.meds) at the MEDS root, the folder holding data/ and metadata/"
        )
    core = ["subject_id", "time", "code", "numeric_value"]
    tables = []
    for shard in shards:
        try:
            table = pq.read_table(shard, columns=core)
            table = meds.DataSchema.align(table).select(core)
        except Exception as exc:  # pyarrow and the schema library raise several types
            raise RadfusionError(f"{shard}: not a valid MEDS data file: {exc}") from exc
        tables.append(table)
    table = pa.concat_tables(tables)
    codes = pc.dictionary_encode(table["code"]).combine_chunks()
    time = table["time"].cast(pa.int64())
    static = pc.is_null(time).to_numpy(zero_copy_only=False)
    micros = pc.fill_null(time, 0).to_numpy(zero_copy_only=False)
    seconds = np.where(static, EventArrays.STATIC, np.floor_divide(micros, 1_000_000))
    value = table["numeric_value"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    value = np.where(np.isfinite(value), value, np.nan)  # nulls and infinities: no value
    subject = table["subject_id"].to_numpy(zero_copy_only=False)
    code = codes.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    start = int(seconds[~static].min()) if (~static).any() else 0
    span = (int(seconds.max()) - start + 2) if (~static).any() else 2
    offset = np.where(static, 0, seconds - start + 1)
    low = int(subject.min()) if len(subject) else 0
    high = int(subject.max()) if len(subject) else 0
    if (high - low + 2) * float(span) < 2**62:  # one int64 sort key from the ids themselves
        order_key = (subject - low) * span + offset
        if len(order_key) > 1 and not (order_key[1:] >= order_key[:-1]).all():
            order = np.argsort(order_key, kind="stable")
            subject, seconds, code = subject[order], seconds[order], code[order]
            value, offset = value[order], offset[order]
        change = np.r_[True, subject[1:] != subject[:-1]] if len(subject) else np.zeros(0, bool)
        subjects, rank = subject[change], np.cumsum(change) - 1
    else:  # ids too far apart for one key: rank them first
        subjects, rank = np.unique(subject, return_inverse=True)
        order = np.lexsort((offset, rank))
        subject, seconds, code = subject[order], seconds[order], code[order]
        value, offset, rank = value[order], offset[order], rank[order]
    if (len(subjects) + 1) * float(span) >= 2**62:
        raise RadfusionError(f"{root}: MEDS event times span too long a range to index")
    key = rank * span + offset
    return EventArrays(
        subject=subject,
        seconds=seconds,
        code=code,
        value=value,
        codes=np.asarray(codes.dictionary.to_pylist(), dtype=object),
        subjects=subjects,
        rank=rank,
        key=key,
        start=start,
        span=span,
    )


#: The demographic code families, named by a code's first part (``Gender/F``, ``RACE//White``).
DEMOGRAPHIC_KINDS = ("gender", "race", "ethnicity")
SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.25


def demographic_kind(code: str) -> str | None:
    """``gender``, ``race`` or ``ethnicity`` for a demographic code, else None."""
    head = code.split("/", 1)[0].strip().lower()
    return head if head in DEMOGRAPHIC_KINDS else None


def demographic_value(code: str) -> str:
    """``Gender/F`` -> ``F``; ``RACE//White`` -> ``White``."""
    return code.split("/", 1)[1].lstrip("/") if "/" in code else code


def study_arrays(events: EventArrays, studies: pd.DataFrame):
    """The sorted subject ids, each study's rank among them (-1: a subject without events)
    and each study's prediction time in whole seconds (rounded down)."""
    for column in ("subject_id", "prediction_time"):
        if column not in studies.columns:
            raise RadfusionError(f"studies need a {column!r} column to be featurised")
    times = pd.to_datetime(studies["prediction_time"])
    if times.isna().any():
        raise RadfusionError(
            f"{int(times.isna().sum())} stud(ies) without a prediction time "
            f"(idx {list(studies.index[times.isna()][:5])})"
        )
    micros = times.to_numpy(dtype="datetime64[us]").astype(np.int64)
    cut = np.floor_divide(micros, 1_000_000)
    subjects = events.subjects
    wanted = studies["subject_id"].to_numpy(dtype=np.int64)
    rank = np.searchsorted(subjects, wanted)
    found = (rank < len(subjects)) & (subjects[np.minimum(rank, len(subjects) - 1)] == wanted)
    return subjects, np.where(found, rank, -1), cut


def age_years(events: EventArrays, studies: pd.DataFrame) -> np.ndarray:
    """Whole years from the subject's (earliest) ``MEDS_BIRTH`` to each study's prediction
    time; NaN without one."""
    subjects, rank, cut = study_arrays(events, studies)
    pick = (events.codes == BIRTH_CODE)[events.code] & (events.seconds != EventArrays.STATIC)
    birth = np.full(len(subjects), np.nan)
    ranks = events.rank[pick]
    seconds = events.seconds[pick].astype(np.float64)
    order = np.argsort(-seconds, kind="stable")  # the latest assigned first: the earliest wins
    birth[ranks[order]] = seconds[order]
    born = np.where(rank >= 0, birth[np.maximum(rank, 0)], np.nan)
    return np.floor((cut - born) / SECONDS_PER_DAY / DAYS_PER_YEAR)


def study_groups(events: EventArrays, studies: pd.DataFrame) -> pd.DataFrame:
    """Per study (``subject_id``, ``prediction_time``): ``gender``, ``race`` and ``ethnicity``
    from the subject's demographic codes (the latest one timed before the prediction time,
    else a static one; ``Unknown`` where none), and ``age`` (:func:`age_years`)."""
    _, _, cut = study_arrays(events, studies)
    kinds = np.array([demographic_kind(str(c)) for c in events.codes], dtype=object)
    query = pd.DataFrame(
        {
            "seconds": cut,
            "subject_id": studies["subject_id"].to_numpy(dtype=np.int64),
            "row": np.arange(len(studies)),
        }
    ).sort_values("seconds", kind="stable")
    out = pd.DataFrame(index=studies.index)
    for kind in DEMOGRAPHIC_KINDS:
        mask = kinds[events.code] == kind
        known = pd.DataFrame(
            {
                "seconds": events.seconds[mask],
                "subject_id": events.subject[mask],
                "code": events.code[mask],
            }
        ).sort_values("seconds", kind="stable")
        latest = pd.merge_asof(
            query, known, on="seconds", by="subject_id", allow_exact_matches=False
        )
        values = np.full(len(studies), "Unknown", dtype=object)
        hit = latest["code"].notna().to_numpy()
        values[latest["row"].to_numpy()[hit]] = [
            demographic_value(str(events.codes[int(c)])) for c in latest["code"].to_numpy()[hit]
        ]
        out[kind] = values
    out["age"] = age_years(events, studies)
    return out


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
