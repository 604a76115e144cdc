"""The MEDS code featuriser's throughput on a large synthetic EHR, against pandas.

Usage: python benchmarks/meds_codes.py [--events 10000000] [--subjects 20000] [--codes 5000]

Writes ``--events`` random events (OMOP-like codes with a long-tailed frequency, a fifth with
numeric values, births and static gender/race codes) as MEDS shards in MEDS order (by subject,
then time), then times, in one process:

* reading them into arrays (:func:`radfusion.data.meds.read_event_arrays`);
* :class:`radfusion.ehr.codes.CodeFeaturiser` fit on the training studies and transform of
  every study (12-month counts, presence, latest values, demographics: one sparse matrix);
* the baseline: the 12-month counts alone the way one writes them in pandas (events merged
  with the studies on subject, filtered to the window, grouped by study and code).

It prints events/s for each and the ratio of the featuriser's counts to the baseline's (the
whole INSPECT EHR is about 10^8 events), and checks that both counted the same.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.data.meds import read_event_arrays
from radfusion.ehr.codes import CodeFeaturiser

SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
    ]
)


def write_cohort(root: Path, events: int, subjects: int, codes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, codes + 1)  # Zipf-like: a few codes are most events
    names = np.array([f"SNOMED/{100000 + i}" for i in range(codes)], dtype=object)
    names[: codes // 5] = [f"LOINC/{i}-0" for i in range(codes // 5)]
    code = rng.choice(codes, events, p=weights / weights.sum())
    start = np.datetime64("2010-01-01T00:00:00", "us").astype(np.int64)
    span = 10 * 365 * 86_400 * 1_000_000
    frame = pd.DataFrame(
        {
            "subject_id": rng.integers(0, subjects, events),
            "time": pd.to_datetime(start + rng.integers(0, span, events), unit="us"),
            "code": names[code],
            "numeric_value": np.where(code < codes // 5, rng.normal(size=events), np.nan),
        }
    )
    ids = np.arange(subjects)
    static = pd.DataFrame(
        {
            "subject_id": np.concatenate([ids, ids, ids]),
            "time": pd.to_datetime(
                np.concatenate(
                    [
                        start - rng.integers(20, 90, subjects) * 365 * 86_400 * 1_000_000,
                        np.full(2 * subjects, np.iinfo(np.int64).min),
                    ]
                ),
                unit="us",
                errors="coerce",
            ),
            "code": np.concatenate(
                [
                    np.full(subjects, "MEDS_BIRTH", dtype=object),
                    np.where(ids % 2, "Gender/F", "Gender/M"),
                    rng.choice(["Race/5", "Race/8527", "Race/8516"], subjects),
                ]
            ),
            "numeric_value": np.nan,
        }
    )
    static.loc[static["code"] != "MEDS_BIRTH", "time"] = pd.NaT
    frame = frame.sort_values(["subject_id", "time"], kind="stable")  # MEDS order
    (root / "data").mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(events), 2)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False).cast(SCHEMA)
        pq.write_table(table, root / "data" / f"{i}.parquet")
    pq.write_table(
        pa.Table.from_pandas(static, preserve_index=False).cast(SCHEMA),
        root / "data" / "static.parquet",
    )
    n_studies = int(subjects * 1.2)
    studies = pd.DataFrame(
        {
            "subject_id": rng.integers(0, subjects, n_studies),
            "prediction_time": pd.to_datetime(
                start + rng.integers(span // 2, span, n_studies), unit="us"
            ),
        },
        index=pd.Index(np.arange(n_studies), name="idx"),
    )
    return studies


def pandas_counts(root: Path, studies: pd.DataFrame) -> pd.Series:
    events = pd.concat([pd.read_parquet(p) for p in sorted((root / "data").glob("[0-9]*.parquet"))])
    joined = events.merge(studies.reset_index(), on="subject_id")
    # Whole seconds on both sides, as the featuriser compares times.
    delta = joined["time"].dt.floor("s") - joined["prediction_time"].dt.floor("s")
    window = (delta < pd.Timedelta(0)) & (delta >= -pd.Timedelta(days=365))
    return joined[window].groupby(["idx", "code"]).size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--codes", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        studies = write_cohort(root, args.events, args.subjects, args.codes)
        total = args.events + 3 * args.subjects
        print(f"{total:,} events, {args.subjects:,} subjects, {len(studies):,} studies")

        t0 = time.perf_counter()
        arrays = read_event_arrays(root)
        t_read = time.perf_counter() - t0
        train = studies.iloc[: int(0.8 * len(studies))]
        t0 = time.perf_counter()
        featuriser = CodeFeaturiser(min_frequency=0.001).fit(arrays, train)
        features = featuriser.transform(arrays, studies)
        t_feat = time.perf_counter() - t0
        print(
            f"read {t_read:.1f} s ({total / t_read / 1e6:.2f} M events/s); fit + transform "
            f"{t_feat:.1f} s ({total / t_feat / 1e6:.2f} M events/s): {features.shape[1]:,} "
            f"columns, {features.matrix.nnz:,} non-zeros"
        )
        t0 = time.perf_counter()
        expect = pandas_counts(root, studies)
        t_pandas = time.perf_counter() - t0
        print(f"pandas 12-month counts alone: {t_pandas:.1f} s")

    names = featuriser.codes_
    counts = features.matrix[:, : len(names)].tocoo()
    ours = pd.Series(
        counts.data, index=pd.MultiIndex.from_arrays([counts.row, np.asarray(names)[counts.col]])
    ).sort_index()
    expect = expect[expect.index.get_level_values(1).isin(set(names))].sort_index()
    same = ours.index.equals(expect.index) and np.array_equal(ours.to_numpy(), expect.to_numpy())
    print(f"the same 12-month counts as pandas: {same}")
    ratio = t_pandas / (t_read + t_feat)
    result(
        "meds_codes",
        "read + featurise",
        total / (t_read + t_feat),
        "events/s",
        ratio,
        "pandas merge + groupby of the counts alone (read included)",
        "10^8 INSPECT events in minutes",
    )
    if not same:
        raise SystemExit("the featuriser's counts differ from pandas'")


if __name__ == "__main__":
    main()
