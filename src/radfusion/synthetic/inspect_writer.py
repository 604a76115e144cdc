"""Write a synthetic cohort in the INSPECT layout (``radfusion synth --layout inspect``).

The same studies, phantoms and EHR events as the RadFusion-layout cohort of the same seed,
written the way INSPECT ships them:

* ``CTPA/<image_id>.nii.gz``: each phantom in one of three voxel orders (RAS with the slices
  from the feet up; LPS head first, as DICOM-to-NIfTI converters leave a series; LPS with rows
  and columns swapped, feet first), a slice thickness among 0.625-2.5 mm, and half stored as
  raw scanner values (HU + 1024) with ``scl_inter = -1024``;
* ``Final_metadata.csv`` (``image_id`` with its ``.nii.gz``, ``impression_id``, slice
  thickness, study description), ``Final_labels.csv`` (the eight tasks as ``True`` /
  ``False`` / ``Censored``) and ``Final_splits.csv`` (``train`` / ``valid`` / ``test``);
* ``meds/``: the MEDS EHR with OMOP-style codes (``LOINC/…``, ``ICD10CM/…``, ``RxNorm/…``,
  ``Gender/F``, ``Race/5``, ``Ethnicity/Not Hispanic``) and a code table naming them.

The prognostic tasks come from a hazard that grows with age, PE and the EHR's latent risk (the
oracle of :mod:`radfusion.synthetic.events`), with a follow-up time per study: a study followed
for less than a horizon without the event is ``Censored`` for it, so the longer horizons carry
more censoring, as in INSPECT.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.inspect import INSPECT_TASKS
from radfusion.io import atomic_path, write_csv, write_json, write_parquet
from radfusion.workers import die_with_parent

__all__ = ["CT_FOLDER", "MEDS_FOLDER", "omop_code", "write_inspect_cohort"]

CT_FOLDER = "CTPA"
MEDS_FOLDER = "meds"
SLICE_THICKNESS = (0.625, 1.0, 1.25, 2.0, 2.5)
RAW_OFFSET = 1024
_RACE = {"White": "5", "Black": "3", "Asian": "2", "Native American": "1", "Pacific Islander": "4"}
_VOCABULARY = {
    "LAB": "LOINC",
    "VITAL": "LOINC",
    "ICD": "ICD10CM",
    "INP_MED": "RxNorm",
    "OUT_MED": "RxNorm Extension",
    "SMOKING": "SNOMED",
}
#: (days, hazard per year at baseline risk) of each prognostic task's event.
_HORIZONS = {"1_month": 30, "6_month": 182, "12_month": 365}
_BASE_HAZARD = {"mortality": 0.1, "readmission": 0.35, "PH": 0.06}


def omop_code(code: str) -> str:
    """A synthetic code in an OMOP-style vocabulary: ``LAB//D-dimer`` -> ``LOINC/…``, the
    concept number a hash of the name; ``GENDER//Female`` -> ``Gender/F``."""
    prefix, _, name = code.partition("//")
    if prefix == "GENDER":
        return f"Gender/{name[:1]}"
    if prefix == "RACE":
        return f"Race/{_RACE.get(name, name)}"
    if prefix in _VOCABULARY:
        number = zlib.crc32(code.encode()) % 900_000 + 100_000
        suffix = f"-{number % 10}" if _VOCABULARY[prefix] == "LOINC" else ""
        return f"{_VOCABULARY[prefix]}/{number}{suffix}"
    return code  # MEDS_BIRTH and the like


def _affine(kind: int, spacing: tuple[float, float, float]):
    """The voxel order and affine of one of three layouts, for a volume in the cohort
    convention (slices S->I, rows A->P, columns R->L)."""
    dz, dy, dx = spacing
    if kind == 0:  # RAS+, feet first: i to the Right, j Anterior, k Superior
        return (lambda v: v.transpose(2, 1, 0)[::-1, ::-1, ::-1]), np.diag([dx, dy, dz, 1.0])
    if kind == 1:  # LPS head first: i to the Left, j Posterior, k Inferior
        return (lambda v: v.transpose(2, 1, 0)), np.diag([-dx, -dy, -dz, 1.0])
    # rows and columns swapped, feet first: i Posterior, j Left, k Superior
    affine = np.array([[0, -dx, 0, 0], [-dy, 0, 0, 0], [0, 0, dz, 0], [0, 0, 0, 1.0]])
    return (lambda v: v.transpose(1, 2, 0)[:, :, ::-1]), affine


def _write_volume(task) -> int:
    import nibabel as nib

    from radfusion.synthetic.phantom import render_phantom, sample_phantom

    idx, path, shape, pe_type, seed, kind, thickness, raw, calibre = task
    rng = np.random.default_rng(seed)
    volume, _ = render_phantom(shape, sample_phantom(pe_type, rng, calibre), rng)
    order, affine = _affine(kind, (thickness, 0.7, 0.7))
    data = np.ascontiguousarray(order(volume))
    if raw:  # stored = HU + 1024 (signed: the phantom's noise reaches below -1024 HU)
        data = (data.astype(np.int32) + RAW_OFFSET).astype(np.int16)
    image = nib.Nifti1Image(data, affine)
    image.header.set_slope_inter(1.0, -float(RAW_OFFSET) if raw else 0.0)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp) + ".nii.gz")
        os.replace(str(tmp) + ".nii.gz", tmp)
    return idx


def _tasks(studies: pd.DataFrame, p_ehr: np.ndarray, rng) -> pd.DataFrame:
    logit = np.log(np.clip(p_ehr, 1e-6, 1 - 1e-6) / np.clip(1 - p_ehr, 1e-6, 1))
    risk = 0.04 * (studies["age"].to_numpy() - 62) + 0.7 * studies["label"].to_numpy()
    risk = risk + 0.7 * (logit - logit.mean()) / (logit.std() + 1e-9)
    follow_up = rng.uniform(0, 1500, len(studies))  # days of EHR after the study
    out = {"PE": np.where(studies["label"].to_numpy() == 1, "True", "False")}
    for outcome, base in _BASE_HAZARD.items():
        rate = base / 365 * np.exp(risk + rng.normal(0, 0.3, len(studies)))
        event = rng.exponential(1 / rate)  # days to the event
        for horizon, days in _HORIZONS.items():
            name = f"{horizon}_{outcome}"
            if name not in INSPECT_TASKS:
                continue
            value = np.where(event <= days, "True", "False")
            censored = (follow_up < days) & (event > follow_up)
            out[name] = np.where(censored, "Censored", value)
    return pd.DataFrame({t: out[t] for t in INSPECT_TASKS})


def _write_meds(root: Path, events: pd.DataFrame, studies: pd.DataFrame, rng) -> None:
    import meds
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = events.drop(columns=["encounter_id"], errors="ignore").copy()
    originals = events["code"].astype(str)
    events["code"] = originals.map({c: omop_code(c) for c in originals.unique()})
    patients = studies.drop_duplicates("patient_id")["patient_id"].to_numpy(np.int64)
    hispanic = rng.random(len(patients)) < 0.15
    ethnicity = pd.DataFrame(
        {
            "subject_id": patients,
            "time": pd.NaT,
            "code": np.where(hispanic, "Ethnicity/Hispanic", "Ethnicity/Not Hispanic"),
            "numeric_value": np.nan,
        }
    )
    events = pd.concat([events, ethnicity], ignore_index=True)
    events["time"] = events["time"].astype("datetime64[us]")
    events = events.sort_values(["subject_id", "time"], kind="stable", na_position="first")
    table = meds.DataSchema.align(pa.Table.from_pandas(events, preserve_index=False))
    (root / "data").mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "data" / "0.parquet") as tmp:
        pq.write_table(table, tmp)
    names = dict(zip(events["code"], events["code"], strict=False))
    names.update({omop_code(c): c.partition("//")[2] or c for c in originals.unique()})
    codes = pd.DataFrame({"code": sorted(events["code"].unique())})
    codes["description"] = codes["code"].map(names)
    codes["parent_codes"] = [[] for _ in range(len(codes))]
    write_parquet(codes, root / "metadata" / "codes.parquet")
    write_json(
        {
            "dataset_name": "radfusion-synthetic-inspect",
            "dataset_version": "1",
            "etl_name": "radfusion.synthetic",
            "meds_version": "0.4",
        },
        root / "metadata" / "dataset.json",
    )


def write_inspect_cohort(
    out_dir: str | os.PathLike,
    n_studies: int = 1837,
    seed: int = 0,
    *,
    size: int = 64,
    slice_range: tuple[int, int] | None = None,
    calibre: float = 1.0,
    test_studies: int | None = None,
    workers: int = 1,
    on_volume: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Generate ``n_studies`` in the INSPECT layout into ``out_dir``; returns the design (one
    row per study, with its ``impression_id`` and ``image_id``)."""
    from radfusion.ehr.vocabulary import default_vocabulary
    from radfusion.synthetic.design import design_cohort
    from radfusion.synthetic.events import generate_events

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    design_seed, ehr_seed, volume_seed, task_seed = np.random.SeedSequence(seed).spawn(4)
    studies = design_cohort(
        n_studies,
        np.random.default_rng(design_seed),
        slice_range=slice_range,
        test_studies=test_studies,
    )
    ehr = generate_events(studies, default_vocabulary(), np.random.default_rng(ehr_seed))
    trng = np.random.default_rng(task_seed)
    studies = studies.merge(ehr.oracle, on="idx")
    studies["impression_id"] = 100_000 + trng.permutation(len(studies))
    studies["image_id"] = (
        studies["patient_id"].astype(str)
        + "_"
        + studies["ct_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    tasks = _tasks(studies, studies["p_ehr"].to_numpy(), trng)
    kinds = trng.integers(0, 3, len(studies))
    thickness = trng.choice(SLICE_THICKNESS, len(studies))
    raw = trng.random(len(studies)) < 0.5
    studies["orientation"] = kinds
    studies["slice_thickness"] = thickness

    order = trng.permutation(len(studies))  # the CSVs in no particular order, as released
    meta = pd.DataFrame(
        {
            "image_id": studies["image_id"] + ".nii.gz",
            "impression_id": studies["impression_id"],
            "SliceThickness": thickness,
            "StudyDescription": "CTA CHEST PE PROTOCOL",
        }
    ).iloc[order]
    write_csv(meta, root / "Final_metadata.csv")
    labels = pd.concat([studies[["impression_id"]], tasks], axis=1).iloc[order]
    write_csv(labels, root / "Final_labels.csv")
    splits = pd.DataFrame(
        {
            "impression_id": studies["impression_id"],
            "split": studies["split"].map({"train": "train", "val": "valid", "test": "test"}),
        }
    ).iloc[order]
    write_csv(splits, root / "Final_splits.csv")
    _write_meds(root / MEDS_FOLDER, ehr.events, studies, trng)

    seeds = volume_seed.spawn(len(studies))
    (root / CT_FOLDER).mkdir(exist_ok=True)
    jobs = [
        (
            int(row.idx),
            root / CT_FOLDER / f"{row.image_id}.nii.gz",
            (int(row.slices), size, size),
            row.pe_type if row.label == 1 else "",
            seeds[i],
            int(kinds[i]),
            float(thickness[i]),
            bool(raw[i]),
            calibre,
        )
        for i, row in enumerate(studies.itertuples())
    ]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
            for idx in pool.map(_write_volume, jobs, chunksize=4):
                if on_volume:
                    on_volume(idx)
    else:
        for job in jobs:
            _write_volume(job)
            if on_volume:
                on_volume(job[0])
    return studies
