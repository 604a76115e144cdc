"""The INSPECT layout: NIfTI CTPA, a metadata CSV, task labels, splits and a MEDS EHR, read into
the same :class:`~radfusion.data.cohort.Cohort` as a RadFusion release.

Files are found by the names the public releases use (they vary a little between versions),
or named in the config's ``data`` section:

* CT: ``<image_id>.nii.gz`` (or ``.nii``) anywhere below the folder, outside the MEDS tree;
* metadata: ``*metadata*.csv``, one row per study with ``image_id`` and ``impression_id``;
  where the release has a mapping file (``study_mapping_*.tsv`` in the 2025 release, beside a
  ``study_metadata_*.tsv`` of DICOM columns), the mapping is the one read;
* labels: ``*labels*.csv`` keyed by ``impression_id``, one column per task, values ``True``,
  ``False`` and ``Censored`` (``Censor`` in older files, ``1``/``0`` accepted); or the older
  cohort master file
  (``cohort*master*file*.csv``: ``patient_id``, ``procedure_time``, ``split``,
  ``pe_positive_nlp`` and the task columns) in place of labels, splits and metadata;
* splits: ``*splits*.csv`` or ``*split*.tsv`` with ``impression_id`` and ``split`` (``train``,
  ``valid``, ``test``);

every CSV may also be a ``.tsv``;
* EHR: a MEDS root (``data/*.parquet`` and ``metadata/``), found as the folder below holding
  both.

``image_id`` is the patient and the study's date-time (``12345_2018-03-04 10:22:00``): the
patient is the MEDS ``subject_id``, and the study's **prediction time is one day before the
study**, as INSPECT's own labellers set it, so no event of the study's own day enters its
features. Each study's idx is its ``impression_id`` (a whole number in the releases).

Every problem is collected, as for the RadFusion layout: unreadable or missing files, unknown
label or split values, duplicated studies, a patient in two splits and NIfTI files that do not
open are errors; ids that do not link (a label without a volume, a volume without a label, a
study without a MEDS subject) are warnings. A study without a volume is kept and scored by the
modalities it has (the EHR model, each fusion's fallback; ``data.without_volume=error`` makes
it an error instead).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.findings import (
    Findings,
    bad_ids,
    preview,
    read_csv_checked,
    without_volume_note,
)

__all__ = [
    "INSPECT_TASKS",
    "PREDICTION_OFFSET",
    "InspectFiles",
    "detect_inspect",
    "find_inspect_files",
    "inspect_paths",
    "read_inspect",
]

#: The release's eight tasks, as its label columns spell them.
INSPECT_TASKS = (
    "PE",
    "1_month_mortality",
    "6_month_mortality",
    "12_month_mortality",
    "1_month_readmission",
    "6_month_readmission",
    "12_month_readmission",
    "12_month_PH",
)
LABEL_VALUES = {
    "true": 1.0,
    "false": 0.0,
    "1": 1.0,
    "0": 0.0,
    "1.0": 1.0,
    "0.0": 0.0,
    "censored": np.nan,
    "censor": np.nan,
}
SPLIT_VALUES = {"train": "train", "valid": "val", "val": "val", "test": "test"}
#: INSPECT's labellers predict one day before the study.
PREDICTION_OFFSET = pd.Timedelta(days=1)
SKIP_DIRS = {"cache", "runs", "raw"}
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_IMAGE_ID = re.compile(r"^\s*(\d+)_(.+?)\s*$")


@dataclass(frozen=True)
class InspectFiles:
    ct: dict[str, Path]  # image_id (no suffix) -> file
    metadata: Path | None
    labels: Path | None
    splits: Path | None
    master: Path | None
    meds: Path | None


def _glob_one(root: Path, patterns: tuple[str, ...], what: str, key: str, findings: Findings):
    found = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    if len(found) > 1:
        findings.error(
            f"{root}: {len(found)} {what} files ({preview([p.name for p in found], 3)}); name "
            f"one with --set data.{key}=FILE"
        )
        return None
    return found[0] if found else None


def _meds_root(root: Path) -> Path | None:
    """The first folder, ``root`` or up to two levels below, holding ``data/*.parquet`` and
    ``metadata/``."""
    candidates = [root, *sorted(root.glob("*/")), *sorted(root.glob("*/*/"))]
    for candidate in candidates:
        data = candidate / "data"
        if data.is_dir() and (candidate / "metadata").is_dir() and any(data.rglob("*.parquet")):
            return candidate
    return None


def _nifti_files(root: Path, skip: Path | None) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in SKIP_DIRS and (skip is None or here / d != skip)
        )
        for name in files:
            if _NIFTI.search(name):
                found.setdefault(_NIFTI.sub("", name), []).append(here / name)
    return found


def find_inspect_files(root: Path, paths: dict | None, findings: Findings) -> InspectFiles:
    """The layout's files below ``root``; ``paths`` (the config's data section) may name any
    of ``metadata``, ``labels``, ``splits``, ``master``, ``meds`` and ``ct_dir``."""
    paths = {k: v for k, v in (paths or {}).items() if v}

    def given(key: str) -> Path | None:
        if key not in paths:
            return None
        path = Path(paths[key])
        path = path if path.is_absolute() else root / path
        if not path.exists():
            findings.error(f"{path}: data.{key} names a file that does not exist")
        return path

    meds = given("meds") or _meds_root(root)
    ct_dir = given("ct_dir") or root
    files = _nifti_files(ct_dir, meds)
    ct = {}
    for image_id, where in files.items():
        if len(where) > 1:
            findings.error(
                f"{ct_dir}: {image_id} found {len(where)} times ({preview(where, 2)}); keep one"
            )
        ct[image_id] = where[0]
    return InspectFiles(
        ct=ct,
        metadata=given("metadata")
        or _glob_one(root, ("*mapping*.csv", "*mapping*.tsv"), "mapping", "metadata", findings)
        or _glob_one(root, ("*metadata*.csv", "*metadata*.tsv"), "metadata", "metadata", findings),
        labels=given("labels")
        or _glob_one(root, ("*labels*.csv", "*labels*.tsv"), "labels", "labels", findings),
        splits=given("splits")
        or _glob_one(root, ("*splits*.csv", "*split*.tsv"), "splits", "splits", findings),
        master=given("master")
        or _glob_one(root, ("cohort*master*file*.csv",), "master", "master", findings),
        meds=meds,
    )


def detect_inspect(root: Path) -> bool:
    """Whether ``root`` looks like an INSPECT release (its CSVs by name), not a RadFusion one."""
    patterns = ("*metadata*.csv", "*metadata*.tsv", "*labels*.csv", "*labels*.tsv")
    patterns += ("cohort*master*file*.csv",)
    return any(next(root.glob(p), None) is not None for p in patterns)


def _read(path: Path, findings: Findings, what: str, needs: tuple[str, ...]):
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    fix = f"expected columns {', '.join(needs)}"
    frame = read_csv_checked(path, findings, what, fix, sep=sep)
    if frame is None:
        return None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        findings.error(
            f"{path}: missing column(s) {missing}; found {preview(list(frame.columns), 8)}"
        )
        return None
    return frame


def _impression_ids(frame: pd.DataFrame, path: Path, findings: Findings) -> pd.Series | None:
    ids, bad = bad_ids(frame["impression_id"])
    if bad.any():
        findings.error(
            f"{path}: impression_id must be whole non-negative numbers; line(s) "
            f"{preview(frame.index[bad] + 2)} have {preview(frame.loc[bad, 'impression_id'])}"
        )
        return None
    dup = ids.duplicated(keep=False)
    if dup.any():
        findings.error(
            f"{path}: impression_id {preview(ids[dup].unique())} on more than one row (lines "
            f"{preview(frame.index[dup] + 2)}); keep one row per study"
        )
        return None
    return ids


def _labels(frame: pd.DataFrame, path: Path, findings: Findings) -> pd.DataFrame:
    """Task columns as 1.0 / 0.0 / NaN (censored); unknown values are errors."""
    out = {}
    for task in INSPECT_TASKS:
        if task not in frame.columns:
            continue
        text = frame[task].astype(str).str.strip().str.lower()
        known = text.isin(list(LABEL_VALUES))
        if not known.all():
            rows = frame.index[~known]
            findings.error(
                f"{path}: column {task} has value(s) {preview(frame.loc[rows, task].unique())} "
                f"on line(s) {preview(rows + 2)}; use True, False or Censored"
            )
            continue
        out[task] = text.map(LABEL_VALUES).astype(float).to_numpy()
    if not out:
        findings.error(f"{path}: no task column; expected some of {list(INSPECT_TASKS)}")
    return pd.DataFrame(out, index=frame.index)


def _splits(values: pd.Series, path: Path, findings: Findings) -> pd.Series:
    text = values.astype(str).str.strip().str.lower()
    known = text.isin(list(SPLIT_VALUES))
    if not known.all():
        findings.error(
            f"{path}: split value(s) {preview(values[~known].unique())} on line(s) "
            f"{preview(values.index[~known] + 2)}; use train, valid or test"
        )
    return text.map(SPLIT_VALUES)


def _image_parts(image_id: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``12345_2018-03-04 10:22:00`` -> subject 12345, its time, and a mask of ids that do
    not parse."""
    parts = image_id.str.extract(_IMAGE_ID)
    subject = pd.to_numeric(parts[0], errors="coerce")
    time = pd.to_datetime(parts[1], errors="coerce", format="mixed")
    return subject, time, subject.isna() | time.isna()


def _from_master(path: Path, findings: Findings) -> pd.DataFrame | None:
    frame = _read(path, findings, "cohort master file", ("patient_id", "procedure_time", "split"))
    if frame is None:
        return None
    if "PE" not in frame.columns and "pe_positive_nlp" in frame.columns:
        frame["PE"] = frame["pe_positive_nlp"]
    time = pd.to_datetime(frame["procedure_time"], errors="coerce", format="mixed")
    image_id = (
        frame["patient_id"].astype(str).str.strip() + "_" + time.dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    if "impression_id" not in frame.columns:
        frame["impression_id"] = np.arange(len(frame))  # the file's row order
    out = pd.DataFrame({"impression_id": frame["impression_id"], "image_id": image_id})
    out["split"] = _splits(frame["split"], path, findings)
    return out.join(_labels(frame, path, findings))


def _from_files(files: InspectFiles, findings: Findings) -> pd.DataFrame | None:
    for name, path in (("metadata", files.metadata), ("labels", files.labels)):
        if path is None:
            findings.error(
                f"no INSPECT {name} CSV found (*{name}*.csv); name it with --set data.{name}=FILE"
            )
    if files.splits is None:
        findings.error("no INSPECT splits file found (*splits*.csv); name it with data.splits")
    if findings.errors:
        return None
    meta = _read(files.metadata, findings, "metadata", ("image_id", "impression_id"))
    labels = _read(files.labels, findings, "labels", ("impression_id",))
    splits = _read(files.splits, findings, "splits", ("impression_id", "split"))
    if meta is None or labels is None or splits is None:
        return None
    frames = {}
    for name, frame, path in (
        ("meta", meta, files.metadata),
        ("labels", labels, files.labels),
        ("splits", splits, files.splits),
    ):
        ids = _impression_ids(frame, path, findings)
        if ids is None:
            return None
        frames[name] = frame.set_index(ids.rename("impression_id"))
    image = frames["meta"]["image_id"].astype(str).str.strip().str.replace(_NIFTI, "", regex=True)
    dup = image.duplicated(keep=False)
    if dup.any():
        findings.error(
            f"{files.metadata}: image_id {preview(image[dup].unique(), 3)} on more than one "
            "impression (a duplicated study); keep one row per volume"
        )
    label_table = _labels(frames["labels"].reset_index(drop=True), files.labels, findings)
    label_table.index = frames["labels"].index
    split = _splits(frames["splits"]["split"].reset_index(drop=True), files.splits, findings)
    split.index = frames["splits"].index
    ids = label_table.index
    unlabelled = image.index.difference(ids)
    if len(unlabelled):
        findings.warn(
            f"{files.metadata}: {len(unlabelled)} stud(ies) without a row in {files.labels.name} "
            f"(impression_id {preview(unlabelled)}); ignored"
        )
    no_meta = ids.difference(image.index)
    if len(no_meta):
        findings.warn(
            f"{files.labels}: {len(no_meta)} labelled stud(ies) without a metadata row, so "
            f"without a volume (impression_id {preview(no_meta)}); left out"
        )
    no_split = ids.difference(split.index)
    if len(no_split):
        findings.error(
            f"{files.splits}: no split for {len(no_split)} labelled stud(ies) (impression_id "
            f"{preview(no_split)}); add them, each patient in one split"
        )
    ids = ids.intersection(image.index).intersection(split.index)
    out = pd.DataFrame({"impression_id": ids, "image_id": image.loc[ids].to_numpy()})
    out["split"] = split.loc[ids].to_numpy()
    return out.join(label_table.loc[ids].reset_index(drop=True))


def read_inspect(
    root: Path,
    findings: Findings,
    paths: dict | None = None,
    *,
    volumes: bool = True,
    without_volume: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, Path | None] | None:
    """The studies (indexed by idx) and their task labels, and the MEDS root; or None when an
    error stops the read. ``volumes`` also indexes and opens every NIfTI file's header; a
    labelled study without one is kept (NaN volume columns, a warning) unless
    ``without_volume`` is ``"error"``."""
    files = find_inspect_files(root, paths, findings)
    table = _from_master(files.master, findings) if files.master and not files.labels else None
    if table is None and not (files.master and not files.labels):
        table = _from_files(files, findings)
    if table is None:
        return None  # nothing to go on; a bad value in a read table does not stop the rest
    subject, time, bad = _image_parts(table["image_id"])
    if bad.any():
        findings.error(
            f"{files.metadata or files.master}: image_id {preview(table.loc[bad, 'image_id'], 3)}"
            " is not <patient>_<date time>; radfusion links a study to its EHR through it"
        )
        return None
    table["subject_id"] = subject.astype(np.int64)
    table["patient_id"] = subject.astype(np.int64).astype(str)
    table["study_time"] = time
    table["prediction_time"] = time - PREDICTION_OFFSET
    splits_per_patient = table.groupby("patient_id")["split"].nunique()
    leaked = splits_per_patient.index[splits_per_patient > 1]
    if len(leaked):
        findings.error(
            f"{files.splits or files.master}: patient(s) {preview(leaked)} have studies in more "
            "than one split (a leak between train and evaluation); move each patient's studies "
            "into one split"
        )
    table = table.set_index(pd.Index(table.pop("impression_id").astype(np.int64), name="idx"))
    tasks = table[[t for t in INSPECT_TASKS if t in table.columns]].copy()
    studies = table.drop(columns=list(tasks.columns))
    if volumes:
        studies = _link_volumes(studies, files, findings, without_volume != "error")
    else:  # which studies have a volume file, by name (no header opened)
        studies["has_volume"] = studies["image_id"].isin(list(files.ct)).to_numpy()
    return studies, tasks, files.meds


def _link_volumes(
    studies: pd.DataFrame, files: InspectFiles, findings: Findings, keep_without_volume: bool
):
    from radfusion.data.nifti import nifti_header

    known = set(studies["image_id"])
    spare = sorted(set(files.ct) - known)
    if spare:
        findings.warn(
            f"{len(spare)} NIfTI volume(s) without a labelled study ({preview(spare, 3)}); ignored"
        )
    has = studies["image_id"].isin(list(files.ct))
    which = f"image_id {preview(studies.loc[~has, 'image_id'], 3)}"
    if not has.all() and keep_without_volume:
        findings.warn(without_volume_note(int((~has).sum()), which))
    elif not has.all():
        findings.error(
            f"{int((~has).sum())} labelled stud(ies) without a NIfTI volume ({which}); add "
            "the files, or pass --set data.without_volume=ehr to score them by their EHR alone"
        )
    rows = {}
    for idx, image_id in studies.loc[has, "image_id"].items():
        path = files.ct[image_id]
        try:
            shape, spacing = nifti_header(path)
        except (ValueError, OSError) as exc:
            findings.error(f"{path}: {exc}; re-export or remove this volume")
            continue
        rows[idx] = (str(path), *shape, "int16", *spacing)
    columns = ["volume_path", "slices", "rows", "cols", "dtype", "slice_spacing"]
    columns += ["row_spacing", "col_spacing"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    return studies.join(frame)  # a study without a volume: NaN in every volume column


def inspect_paths(section) -> dict:
    """The file names a config's data section gives (the ones it leaves None are found)."""
    if section is None:
        return {}
    keys = ("metadata", "labels", "splits", "master", "meds", "ct_dir")
    return {k: getattr(section, k) for k in keys if getattr(section, k, None)}
