"""Write a synthetic cohort in the RadFusion release layout, plus its raw MEDS events.

Everything derives from one seed: the same seed gives the same files whatever the number of
workers (each study's volume has its own seed, spawned from the cohort's).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.layout import (
    ANNOTATIONS_FILE,
    EHR_TABLES,
    LABELS_FILE,
    ORACLE_FILE,
    VITALS_SENTINEL,
)
from radfusion.data.meds import RAW_STUDIES_FILE
from radfusion.ehr.features import build_features
from radfusion.ehr.vocabulary import default_vocabulary
from radfusion.io import atomic_path, write_csv, write_json, write_parquet
from radfusion.synthetic.design import design_cohort
from radfusion.synthetic.events import generate_events
from radfusion.synthetic.phantom import sample_phantom, write_phantom
from radfusion.workers import die_with_parent

__all__ = ["SyntheticCohort", "write_synthetic_cohort"]

#: Raw stored values = HU + 1024 in a quirky volume; the loader must detect the -1024 intercept.
RAW_OFFSET = 1024
VOLUME_FOLDERS = 8


@dataclass(frozen=True)
class SyntheticCohort:
    root: Path
    studies: pd.DataFrame  # the design: idx, split, label, pe_type, demographics, slices, ...
    annotations: pd.DataFrame  # idx, slice


def _write_volume(task) -> tuple[int, np.ndarray]:
    idx, path, shape, pe_type, seed, offset, calibre = task
    rng = np.random.default_rng(seed)
    params = sample_phantom(pe_type, rng, calibre)
    with atomic_path(path) as tmp:
        hits = write_phantom(tmp, shape, params, rng, offset=offset)
    return idx, hits


def write_synthetic_cohort(
    out_dir: str | os.PathLike,
    n_studies: int = 1837,
    seed: int = 0,
    *,
    size: int = 64,
    slice_range: tuple[int, int] | None = None,
    quirks: bool = False,
    calibre: float = 1.0,
    test_studies: int | None = None,
    workers: int = 1,
    on_volume: Callable[[int], None] | None = None,
    keep: int | None = None,
) -> SyntheticCohort:
    """Generate a cohort of ``n_studies`` into ``out_dir``; see ``docs/synthetic.md``.

    ``quirks`` reproduces every known quirk of the real release: extra ``Unnamed: 0`` and
    ``split`` columns, duplicated EHR rows, -10000 vitals sentinels, dummy negative
    ``pe_type``, raw-stored volumes (intercept -1024), studies shorter than one window and
    annotations beyond a study's last slice. ``calibre`` draws the lobar and smaller arteries
    (and their emboli) that many times their true width, for volumes at low resolution (see
    :func:`~radfusion.synthetic.phantom.sample_phantom`). ``test_studies`` sets the test
    split's size, train and val sharing the rest in Table 1's proportions. ``keep`` writes
    only that many of the ``n_studies`` (at least 6: a positive and a negative in each split,
    the rest shared out in Table 1's proportions), for a cohort of a few full-size studies.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    seq = np.random.SeedSequence(seed)
    design_seed, ehr_seed, volume_seed, quirk_seed = seq.spawn(4)
    studies = design_cohort(
        n_studies,
        np.random.default_rng(design_seed),
        slice_range=slice_range,
        short_studies=quirks,
        test_studies=test_studies,
    )
    vocab = default_vocabulary()
    ehr = generate_events(studies, vocab, np.random.default_rng(ehr_seed))
    train_idx = studies.loc[studies["split"] == "train", "idx"]
    tables = build_features(ehr.events, ehr.studies, vocabulary=vocab, train_idx=train_idx)
    qrng = np.random.default_rng(quirk_seed)
    if keep is not None:
        studies, ehr, tables = _subset(studies, ehr, tables, keep, qrng)

    _write_raw(root / "raw", ehr, studies)
    _write_labels(root, studies, quirks, qrng)
    _write_tables(root, tables, studies, quirks, qrng)
    write_csv(ehr.oracle, root / ORACLE_FILE, float_format="%.6f")

    volume_rng = np.random.default_rng(volume_seed)
    folders = volume_rng.integers(0, VOLUME_FOLDERS, len(studies))
    seeds = volume_seed.spawn(len(studies))
    raw_stored = quirks & (volume_rng.random(len(studies)) < 0.5)
    tasks = [
        (
            int(row.idx),
            root / str(folder) / f"{row.idx}.npy",
            (int(row.slices), size, size),
            row.pe_type if row.label == 1 else "",
            seeds[i],
            RAW_OFFSET if raw_stored[i] else 0,
            calibre,
        )
        for i, (row, folder) in enumerate(zip(studies.itertuples(), folders, strict=True))
    ]
    hits: dict[int, np.ndarray] = {}
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
            for idx, slices in pool.map(_write_volume, tasks, chunksize=4):
                hits[idx] = slices
                if on_volume:
                    on_volume(idx)
    else:
        for task in tasks:
            idx, slices = _write_volume(task)
            hits[idx] = slices
            if on_volume:
                on_volume(idx)
    annotations = _write_annotations(root, studies, hits, quirks, qrng)
    return SyntheticCohort(root=root, studies=studies, annotations=annotations)


def _subset(studies, ehr, tables, keep: int, rng):
    """``keep`` studies, each split with a positive and a negative, then by Table 1's shares."""
    if keep < 6:
        raise ValueError("keep: at least 6 studies (a positive and a negative in each split)")
    shares = studies["split"].value_counts(normalize=True)
    sizes = {split: max(2, round(keep * shares[split])) for split in ("val", "test")}
    sizes["train"] = keep - sizes["val"] - sizes["test"]
    chosen = []
    for split, n in sizes.items():
        rows = studies[studies["split"] == split]
        pos, neg = rows[rows["label"] == 1], rows[rows["label"] == 0]
        n_pos = min(max(1, n // 2), len(pos))
        chosen += list(rng.choice(pos["idx"], n_pos, replace=False))
        chosen += list(rng.choice(neg["idx"], min(n - n_pos, len(neg)), replace=False))
    kept = studies[studies["idx"].isin(chosen)].reset_index(drop=True)
    subjects = set(kept["patient_id"])
    ehr = type(ehr)(
        events=ehr.events[ehr.events["subject_id"].isin(subjects)],
        studies=ehr.studies[ehr.studies["idx"].isin(chosen)],
        oracle=ehr.oracle[ehr.oracle["idx"].isin(chosen)],
    )
    tables = {name: t[t.index.isin(chosen)] for name, t in tables.items()}
    return kept, ehr, tables


def _write_labels(root, studies, quirks, rng):
    labels = studies[["idx", "label", "pe_type", "split", "patient_id"]].copy()
    if quirks:
        negatives = np.flatnonzero(labels["label"].to_numpy() == 0)
        dummy = rng.choice(negatives, size=len(negatives) // 2, replace=False)
        labels.loc[dummy, "pe_type"] = "central"  # the release's negatives carry a dummy subtype
        labels.insert(0, "Unnamed: 0", np.arange(len(labels)))
    write_csv(labels, root / LABELS_FILE)


def _write_tables(root, tables, studies, quirks, rng):
    split = studies.set_index("idx")["split"]
    for name in EHR_TABLES:
        table = tables[name].reset_index()
        if quirks:
            if name == "Vitals":
                table = table.fillna(VITALS_SENTINEL)
            table.insert(0, "Unnamed: 0", np.arange(len(table)))
            table["split"] = table["idx"].map(split).to_numpy()
            if name != "Demographics":
                table = _duplicate_rows(table, rng)
        write_csv(table, root / f"{name}.csv")


def _duplicate_rows(table, rng):
    """Duplicate ~1% of rows; one in five duplicates has different values."""
    picks = rng.choice(len(table), size=max(2, len(table) // 100), replace=False)
    dupes = table.iloc[picks].copy()
    feature = [c for c in table.columns if c not in ("idx", "Unnamed: 0", "split")][-1]
    conflicting = dupes.index[: max(1, len(dupes) // 5)]
    dupes.loc[conflicting, feature] = dupes.loc[conflicting, feature].fillna(0) + 1
    out = pd.concat([table, dupes])
    return out.iloc[rng.permutation(len(out))]  # duplicates end up anywhere in the file


def _write_annotations(root, studies, hits, quirks, rng):
    """Slice annotations as the release has them: every train positive, and the central
    positives of val and test (the others were never annotated)."""
    pos = studies[studies["label"] == 1]
    keep = pos["split"].eq("train") | pos["pe_type"].eq("central")
    rows = [(idx, int(s)) for idx in pos.loc[keep, "idx"] for s in hits.get(int(idx), ())]
    annotations = pd.DataFrame(rows, columns=["idx", "slice"])
    if quirks and len(annotations):
        slices = studies.set_index("idx")["slices"]
        for idx in rng.choice(annotations["idx"].unique(), size=2, replace=False):
            annotations.loc[len(annotations)] = (idx, int(slices[idx]) + 3)
    write_csv(annotations, root / ANNOTATIONS_FILE)
    return annotations


def _write_raw(raw, ehr, studies):
    import meds
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = ehr.events
    table = pa.Table.from_pandas(events, preserve_index=False)
    table = meds.DataSchema.align(table)
    (raw / "data").mkdir(parents=True, exist_ok=True)
    with atomic_path(raw / "data" / "0.parquet") as tmp:
        pq.write_table(table, tmp)
    write_parquet(ehr.studies, raw / RAW_STUDIES_FILE)
    splits = studies.drop_duplicates("patient_id")[["patient_id", "split"]]
    split_names = {"train": meds.train_split, "val": meds.tuning_split, "test": meds.held_out_split}
    write_parquet(
        pd.DataFrame(
            {
                "subject_id": splits["patient_id"].astype(np.int64),
                "split": splits["split"].map(split_names),
            }
        ),
        raw / "metadata" / "subject_splits.parquet",
    )
    codes = pd.DataFrame({"code": sorted(events["code"].unique())})
    codes["description"] = codes["code"].str.split("//", n=1).str[-1]
    codes["parent_codes"] = [[] for _ in range(len(codes))]
    write_parquet(codes, raw / "metadata" / "codes.parquet")
    write_json(
        {
            "dataset_name": "radfusion-synthetic",
            "dataset_version": "1",
            "etl_name": "radfusion.synthetic",
            "meds_version": meds.__version__ if hasattr(meds, "__version__") else "0.4",
        },
        raw / "metadata" / "dataset.json",
    )
