"""Events per second of the paper's EHR feature engineering, against a per-study baseline.

Usage: python benchmarks/ehr_features.py [--studies 1837] [--copies 5] [--baseline-studies N]

Generates a synthetic cohort's MEDS events (each event copied ``--copies`` times a few minutes
apart, to pass a million events), then times ``radfusion.ehr.features.build_features`` against
the straightforward implementation below: one pandas pass per study. Both are checked to give
the same tables on the studies the baseline covers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from _results import result  # benchmarks/ is on sys.path when a script runs
from radfusion.data.layout import DEMOGRAPHIC_COLUMNS, OUTPATIENT_PREFIX
from radfusion.ehr.features import build_features
from radfusion.ehr.vocabulary import default_vocabulary
from radfusion.synthetic.design import design_cohort
from radfusion.synthetic.events import generate_events


def baseline(events, studies, vocab, train_idx):
    """The obvious way: for each study, filter its patient's events and compute each family."""
    rows = {}
    by_subject = dict(tuple(events.groupby("subject_id")))
    for study in studies.itertuples():
        ev = by_subject.get(study.subject_id, events.iloc[:0])
        timed = ev[ev["time"].notna()]
        delta = timed["time"] - study.ct_time
        win = timed[(delta < pd.Timedelta(0)) & (delta >= -pd.Timedelta(days=365))].copy()
        win["days"] = (win["time"] - study.ct_time) / pd.Timedelta(days=1)
        icd = win["code"].str.startswith("ICD//")
        leak = icd & ((win["days"] >= -1) | (win["encounter_id"] == study.encounter_id))
        win = win[~leak]
        row = {}
        counts = win["code"].value_counts()
        for name in vocab.drug_classes:
            n = int(counts.get(f"INP_MED//{name}", 0))
            row[f"{name}:Binary"], row[f"{name}:Frequeny"] = int(n > 0), n
            n = int(counts.get(f"OUT_MED//{name}", 0))
            row[f"{OUTPATIENT_PREFIX}{name}:Binary"] = int(n > 0)
            row[f"{OUTPATIENT_PREFIX}{name}:Frequeny"] = n
        for name in vocab.icd_groups + vocab.rare_icd_groups:
            n = int(counts.get(f"ICD//{name}", 0))
            row[f"{name}:frequency"], row[f"{name}:presence"] = n, int(n > 0)
        for name in vocab.lab_tests:
            lab = win[win["code"] == f"LAB//{name}"].sort_values(["days", "numeric_value"])
            row[f"{name}:Binary"] = int(len(lab) > 0)
            row[f"{name}:Value"] = float(lab["numeric_value"].iloc[-1]) if len(lab) else np.nan
        for name in vocab.vitals:
            vit = win[win["code"] == f"VITAL//{name}"]
            x, y = vit["days"].to_numpy(), vit["numeric_value"].to_numpy(float)
            ok = len(x) >= 2 and np.ptp(x) > 0
            row[name] = float(np.polyfit(x, y, 1)[0]) if ok else np.nan
        birth = ev.loc[ev["code"] == "MEDS_BIRTH", "time"].min()
        row["current_age_yrs"] = np.floor((study.ct_time - birth) / pd.Timedelta(days=1) / 365.25)
        rows[study.idx] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    present = frame.loc[frame.index.isin(train_idx), [c for c in frame if c.endswith(":presence")]]
    rare = present.columns[present.mean() < 0.01].str.removesuffix(":presence")
    drop = [f"{g}:{s}" for g in rare for s in ("frequency", "presence")]
    return frame.drop(columns=drop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1837)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument(
        "--baseline-studies",
        type=int,
        default=None,
        help="time the baseline on this many studies and scale (default: all)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    design = design_cohort(args.studies, rng)
    vocab = default_vocabulary()
    ehr = generate_events(design, vocab, rng)
    copies = []
    for k in range(args.copies):
        shifted = ehr.events.copy()
        shifted["time"] = shifted["time"] - pd.Timedelta(minutes=k)
        copies.append(shifted)
    events = pd.concat(copies, ignore_index=True)
    train = design.loc[design["split"] == "train", "idx"]
    n = len(events)

    start = time.perf_counter()
    tables = build_features(events, ehr.studies, vocabulary=vocab, train_idx=train)
    ours = time.perf_counter() - start

    subset = (
        ehr.studies if args.baseline_studies is None else ehr.studies.iloc[: args.baseline_studies]
    )
    start = time.perf_counter()
    base = baseline(events, subset, vocab, train)
    base_time = (time.perf_counter() - start) * len(ehr.studies) / len(subset)

    merged = pd.concat([tables[t] for t in tables], axis=1).loc[base.index]
    common = [c for c in base.columns if c in merged.columns and c not in DEMOGRAPHIC_COLUMNS[1:]]
    if args.baseline_studies is None:
        pd.testing.assert_frame_equal(
            merged[common],
            base[common],
            check_dtype=False,
            check_exact=False,
            rtol=1e-6,
            check_names=False,
        )
    width = sum(t.shape[1] for t in tables.values())
    print(f"{n:,} events, {len(ehr.studies)} studies -> {len(tables)} tables, {width} features")
    print(f"radfusion (vectorised): {ours:7.2f} s  {n / ours:12,.0f} events/s")
    print(
        f"per-study pandas      : {base_time:7.2f} s  {n / base_time:12,.0f} events/s"
        + ("" if args.baseline_studies is None else f" (timed on {len(subset)}, scaled)")
    )
    print(
        f"speed-up              : {base_time / ours:7.1f} x; outputs equal on "
        f"{len(common)} shared columns"
    )
    result(
        "ehr_features",
        "feature engineering",
        n / ours,
        "events/s",
        base_time / ours,
        "per-study pandas",
        "faster",
    )


if __name__ == "__main__":
    main()
