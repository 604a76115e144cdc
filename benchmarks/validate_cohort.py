"""Seconds to load and validate a release-sized (1837-study) cohort, headers only.

Usage: python benchmarks/validate_cohort.py [--studies 1837] [--size 8] [--cohort DIR]

Writes a synthetic cohort with tiny slices (unless --cohort names one), then times
``validate_cohort`` + ``summarize`` (what ``radfusion validate`` does), against the baseline
of reading the same seven CSV files with pandas alone, in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.data.cohort import validate_cohort
from radfusion.data.layout import EHR_TABLES, LABELS_FILE
from radfusion.data.summary import summarize
from radfusion.synthetic.writer import write_synthetic_cohort


def _time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1837)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--cohort", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cohort
        if root is None:
            root = Path(tmp) / "cohort"
            start = time.perf_counter()
            write_synthetic_cohort(root, args.studies, seed=0, size=args.size, workers=2)
            print(f"generated {args.studies} studies in {time.perf_counter() - start:.1f} s")

        def validate():
            report = validate_cohort(root)
            assert report.ok, report.errors
            summarize(report.cohort)

        def read_csvs():
            for name in (LABELS_FILE, *(f"{t}.csv" for t in EHR_TABLES)):
                pd.read_csv(root / name, low_memory=False)

        v, b = _time(validate), _time(read_csvs)
    print(f"validate + summary : {v:6.2f} s")
    print(f"pandas read_csv x7 : {b:6.2f} s (baseline)")
    print(f"ratio              : {v / b:6.2f} x")
    result(
        "validate_cohort",
        "validate + summary (1837 studies)",
        v,
        "s",
        b / v,
        "pandas read_csv of the 7 CSVs",
        "",
    )


if __name__ == "__main__":
    main()
