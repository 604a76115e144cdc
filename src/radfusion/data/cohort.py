"""The cohort: a RadFusion release folder (or a synthetic one) loaded and validated.

``Cohort.load(path)`` reads ``Labels.csv``, the six EHR tables and the headers of the
``{idx}.npy`` volumes (found by name in any sub-folder), checks all of it, and raises a
:class:`~radfusion.errors.CohortError` listing every problem found. ``validate_cohort`` does
the same but returns the findings instead of raising.

Choices where the release leaves room:

* a labelled study without a volume is an **error** when the folder has volumes at all (the
  release holds every one, so a missing one is a copy to mend), unless
  ``data.without_volume=ehr`` keeps it, to be scored by its EHR (a warning counts them); a
  folder with no volumes is a warning (EHR-only use);
* a volume without a label is a **warning**: it is ignored (a user may evaluate a subset);
* negatives' ``pe_type`` is ignored, whatever it says; studies shorter than one 24-slice
  window are a warning (the window datasets pad them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.ehr_tables import read_release_table, read_release_tables
from radfusion.data.findings import (
    Findings,
    bad_ids,
    preview,
    read_csv_checked,
    without_volume_note,
)
from radfusion.data.labels import read_labels
from radfusion.data.layout import ANNOTATIONS_FILE, EHR_TABLES, SPLITS, WINDOW_SLICES
from radfusion.data.volumes import detect_intercept, find_volumes, open_volume, read_header
from radfusion.errors import CohortError, RadfusionError

__all__ = [
    "Cohort",
    "ValidationReport",
    "detect_layout",
    "load_outcomes",
    "requested_tasks",
    "validate_cohort",
]

AGE_CUTOFF = 80


@dataclass
class Cohort:
    """A loaded cohort. ``studies`` is indexed by idx with one row per labelled study.

    Columns of ``studies``: ``label``, ``pe_type``, ``split``, ``patient_id`` (when known),
    ``age``, ``gender`` (Female/Male/Unknown), ``race`` (White/Others), ``age_group``
    (``>80``/``<=80``), ``non_subsegmental`` (False only for subsegmental positives),
    ``volume_path``, ``slices``, ``rows``, ``cols``, ``dtype``.
    """

    root: Path
    studies: pd.DataFrame
    ehr: dict[str, pd.DataFrame]
    annotations: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    hu_intercept: int | None = None
    layout: str = "radfusion"  # or "inspect" (radfusion.data.inspect)
    #: idx x task: 1.0, 0.0 or NaN (censored), every study of the folder; None: PE only
    tasks: pd.DataFrame | None = None
    task: str = "PE"  # whose label ``studies["label"]`` holds
    meds_root: Path | None = None  # the MEDS EHR, where the layout has one
    #: every study before a task's censored ones were left out (None: ``studies``)
    everything: pd.DataFrame | None = None
    _events: dict = field(default_factory=dict, repr=False)  # shared by for_task copies

    @classmethod
    def load(cls, path: str | os.PathLike, *, hu_intercept: int | None = None, data=None) -> Cohort:
        """Load and validate a cohort folder; raise ``CohortError`` listing every problem.
        ``data`` is the config's data section (layout, task, INSPECT file names)."""
        report = validate_cohort(path, hu_intercept=hu_intercept, data=data)
        if report.errors:
            raise CohortError(report.errors)
        assert report.cohort is not None
        return report.cohort

    # --- tasks -----------------------------------------------------------------------------
    @property
    def all_studies(self) -> pd.DataFrame:
        """Every study of the folder, censored for the task or not."""
        return self.studies if self.everything is None else self.everything

    @property
    def task_names(self) -> list[str]:
        return ["PE"] if self.tasks is None else list(self.tasks.columns)

    def for_task(self, task: str) -> Cohort:
        """The cohort with ``task``'s label as ``label``, its censored studies left out (and
        counted per split in a warning)."""
        if task not in self.task_names:
            from radfusion.data.findings import suggest

            raise RadfusionError(
                f"{self.root}: no task {task!r}{suggest(task, self.task_names)}; this cohort has "
                f"{', '.join(self.task_names)}"
            )
        if self.tasks is None or (task == self.task and "label" in self.studies):
            return self
        everything = self.all_studies
        values = self.tasks[task].reindex(everything.index)
        known = values.notna()
        studies = everything[known.to_numpy()].copy()
        studies["label"] = values[known].astype(np.int64)
        warnings = [w for w in self.warnings if not w.startswith("task ")]
        censored = everything.loc[~known.to_numpy(), "split"].value_counts()
        if len(censored):
            counts = ", ".join(f"{split} {int(censored.get(split, 0))}" for split in SPLITS)
            warnings.append(
                f"task {task}: {int(censored.sum())} censored stud(ies) left out ({counts})"
            )
        return replace(self, studies=studies, task=task, warnings=warnings, everything=everything)

    def meds_events(self):
        """The MEDS EHR as :class:`~radfusion.data.meds.EventArrays`, read once."""
        if self.meds_root is None:
            raise RadfusionError(f"{self.root}: no MEDS EHR in this cohort")
        if "events" not in self._events:
            from radfusion.data.meds import read_event_arrays

            self._events["events"] = read_event_arrays(self.meds_root)
        return self._events["events"]

    # --- EHR -----------------------------------------------------------------------------
    @cached_property
    def feature_names(self) -> dict[str, list[str]]:
        """Feature names per source table, in the release's table order."""
        return {name: list(table.columns) for name, table in self.ehr.items()}

    def features(self, tables: list[str] | None = None) -> pd.DataFrame:
        """The EHR feature matrix (rows in ``studies`` order), from all or some tables."""
        names = list(self.ehr) if tables is None else tables
        unknown = [t for t in names if t not in self.ehr]
        if unknown:
            raise RadfusionError(f"unknown EHR table(s) {unknown}; known: {list(self.ehr)}")
        return pd.concat([self.ehr[t] for t in names], axis=1)

    # --- subsets ---------------------------------------------------------------------------
    def split(self, name: str) -> pd.DataFrame:
        return self.studies[self.studies["split"] == name]

    @property
    def has_ehr(self) -> pd.Series:
        """Whether each study has an EHR (an INSPECT study whose patient is not in the MEDS
        data has none; the release's tables hold a row for every study)."""
        if "has_ehr" not in self.studies.columns:
            return pd.Series(True, index=self.studies.index)
        return self.studies["has_ehr"].astype(bool)

    # --- volumes ---------------------------------------------------------------------------
    @property
    def has_volume(self) -> pd.Series:
        """Whether each study (``studies``' rows) has a volume."""
        return self.studies["volume_path"].notna()

    def imaged(self) -> Cohort:
        """The cohort's studies with a volume: what an image model trains on and scores
        (the others are scored by the EHR model and the fusions' fallbacks)."""
        return self.subset(self.has_volume.to_numpy())

    def subset(self, mask) -> Cohort:
        """The cohort restricted to the studies ``mask`` (a boolean array in ``studies``
        order) selects."""
        mask = np.asarray(mask, dtype=bool)
        return self if mask.all() else replace(self, studies=self.studies[mask])

    def volume(self, idx: int) -> np.ndarray:
        """The study's stored volume, memory-mapped (values as stored; see ``volume_hu``); a
        NIfTI volume is read whole, in HU and in the cohort's orientation."""
        from radfusion.data.nifti import is_nifti, read_nifti

        path = self.studies.at[idx, "volume_path"]
        if not isinstance(path, str | Path) or not path:
            raise RadfusionError(f"study {idx} has no volume in {self.root}")
        return read_nifti(path).hu if is_nifti(path) else open_volume(path)

    def intercept(self, idx: int) -> int:
        """The intercept that turns the stored values into HU (the override, or detected)."""
        if self.layout == "inspect":
            return 0  # NIfTI volumes are read in HU
        if self.hu_intercept is not None:
            return self.hu_intercept
        guess = detect_intercept(self.volume(idx))
        if guess is None:
            raise RadfusionError(
                f"{self.studies.at[idx, 'volume_path']}: cannot tell whether values are HU or "
                "raw (no clear air peak); pass hu_intercept=0 or -1024 (--hu-intercept)"
            )
        return guess

    def volume_hu(self, idx: int) -> np.ndarray:
        """The study's volume in Hounsfield units, as int16 (reads the whole volume)."""
        vol = self.volume(idx)
        return (np.asarray(vol, dtype=np.int32) + self.intercept(idx)).astype(np.int16)


@dataclass
class ValidationReport:
    errors: list[str]
    warnings: list[str]
    cohort: Cohort | None

    @property
    def ok(self) -> bool:
        return not self.errors


def requested_tasks(task: str, names: list[str]) -> list[str]:
    """The tasks ``data.task`` asks for: ``all`` of ``names``, a comma-separated list, or one."""
    if task == "all":
        return list(names)
    return [part.strip() for part in str(task).split(",") if part.strip()]


def detect_layout(root: Path, data=None) -> str:
    """``radfusion`` or ``inspect``: the config's ``data.layout``, or told by the files."""
    from radfusion.data.inspect import detect_inspect
    from radfusion.data.layout import LABELS_FILE

    layout = getattr(data, "layout", "auto") or "auto"
    if layout != "auto":
        return layout
    if not (root / LABELS_FILE).exists() and detect_inspect(root):
        return "inspect"
    return "radfusion"


def validate_cohort(
    path: str | os.PathLike,
    *,
    hu_intercept: int | None = None,
    deep: bool = False,
    data=None,
) -> ValidationReport:
    """Check a cohort folder and load it when it is usable.

    ``deep`` also samples a few slices of every volume to detect its HU intercept (slower:
    it reads data, not only headers) and reports volumes where it is unclear. ``data`` is
    the config's data section: the layout (detected by default), the task whose label the
    studies get, and the INSPECT layout's file names.
    """
    root = Path(path)
    findings = Findings()
    if not root.is_dir():
        findings.error(f"{root}: not a folder; point to the RadFusion or INSPECT release folder")
        return ValidationReport(findings.errors, findings.warnings, None)
    if detect_layout(root, data) == "inspect":
        return _validate_inspect(root, findings, data)
    if hu_intercept not in (None, 0, -1024):
        findings.error(f"hu_intercept must be 0 or -1024, got {hu_intercept}")
    labels = read_labels(root, findings)
    if labels is None:
        return ValidationReport(findings.errors, findings.warnings, None)
    tables = read_release_tables(root, findings, labels.index)
    keep = getattr(data, "without_volume", None) == "ehr"
    volumes = _volume_index(root, labels, findings, keep)
    annotations = _annotations(root, labels, volumes, findings)
    if findings.errors:
        return ValidationReport(findings.errors, findings.warnings, None)

    studies = labels.join(volumes)
    studies = studies.join(_subgroups(tables["Demographics"], findings))
    studies["non_subsegmental"] = studies["pe_type"] != "subsegmental"
    cohort = Cohort(
        root=root,
        studies=studies,
        ehr={name: tables[name] for name in EHR_TABLES},
        annotations=annotations,
        warnings=findings.warnings,
        hu_intercept=hu_intercept,
    )
    if deep and hu_intercept is None:
        _check_intercepts(cohort, findings)
    task = getattr(data, "task", "PE")
    if any(t != "PE" for t in requested_tasks(task, ["PE"])):
        findings.error(
            f"{root}: data.task {task!r}: the RadFusion layout has the one task PE; "
            "use --set data.task=PE"
        )
    return ValidationReport(
        findings.errors, findings.warnings, cohort if not findings.errors else None
    )


def _validate_inspect(root: Path, findings: Findings, data, *, volumes: bool = True):
    """:func:`validate_cohort` for the INSPECT layout (:mod:`radfusion.data.inspect`)."""
    from radfusion.data.inspect_cohort import read_inspect_cohort

    parts = read_inspect_cohort(root, findings, data, volumes=volumes)
    if parts is None or findings.errors:
        return ValidationReport(findings.errors, findings.warnings, None)
    empty = {"idx": pd.Series(dtype=np.int64), "slice": pd.Series(dtype=np.int64)}
    cohort = Cohort(
        root=root,
        ehr={},
        annotations=pd.DataFrame(empty),
        warnings=findings.warnings,
        hu_intercept=0,
        layout="inspect",
        task="",
        **parts,
    )
    chosen = requested_tasks(getattr(data, "task", "PE") or "PE", cohort.task_names)[0]
    try:
        cohort = cohort.for_task(chosen)
    except RadfusionError as exc:
        findings.error(str(exc))
        return ValidationReport(findings.errors, findings.warnings, None)
    for split in SPLITS:
        part = cohort.split(split)
        if part["label"].nunique() < 2:
            findings.error(
                f"{root}: task {chosen}: the {split} split needs positive and negative studies "
                f"(has {len(part)}: {int(part['label'].sum())} positive)"
            )
    if findings.errors:
        return ValidationReport(findings.errors, findings.warnings, None)
    return ValidationReport(findings.errors, cohort.warnings, cohort)


def _volume_index(
    root: Path, labels: pd.DataFrame, findings: Findings, keep_without_volume: bool
) -> pd.DataFrame:
    found = find_volumes(root)
    columns = ["volume_path", "slices", "rows", "cols", "dtype"]
    if not found:
        findings.warn(
            f"{root}: no CT volumes ({{idx}}.npy) found; imaging is unavailable, EHR-only use works"
        )
        return pd.DataFrame(index=labels.index, columns=columns)
    for idx, paths in found.items():
        if len(paths) > 1:
            findings.error(
                f"{root}: volume {idx}.npy found {len(paths)} times ({preview(paths, 2)}); "
                "keep one copy"
            )
    unlabelled = sorted(set(found) - set(labels.index))
    if unlabelled:
        findings.warn(
            f"{root}: {len(unlabelled)} volume(s) without a row in Labels.csv "
            f"(idx {preview(unlabelled)}); ignored"
        )
    missing = labels.index.difference(list(found))
    if len(missing) and keep_without_volume:
        findings.warn(without_volume_note(len(missing), f"idx {preview(missing)}"))
    elif len(missing):
        findings.error(
            f"{root}: {len(missing)} labelled stud(ies) without a volume (idx {preview(missing)}); "
            "add the {idx}.npy files, remove the studies from Labels.csv, or pass --set "
            "data.without_volume=ehr to score them by their EHR alone"
        )
    rows = {}
    for idx in labels.index.intersection(list(found)):
        path = found[idx][0]
        try:
            header = read_header(path)
        except (ValueError, OSError) as exc:
            findings.error(f"{path}: {exc}; re-copy or re-export this volume")
            continue
        rows[idx] = (str(path), *header.shape, str(header.dtype))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    frame.index.name = "idx"
    short = frame.index[frame["slices"] < WINDOW_SLICES] if len(frame) else []
    if len(short):
        findings.warn(
            f"{root}: {len(short)} stud(ies) shorter than one {WINDOW_SLICES}-slice window "
            f"(idx {preview(short)}: {preview(frame.loc[short, 'slices'])} slices); "
            "windows will be padded"
        )
    return frame.reindex(labels.index)


def _annotations(root: Path, labels: pd.DataFrame, volumes: pd.DataFrame, findings: Findings):
    path = root / ANNOTATIONS_FILE
    empty = pd.DataFrame({"idx": pd.Series(dtype=np.int64), "slice": pd.Series(dtype=np.int64)})
    if not path.exists():
        return empty
    frame = read_csv_checked(path, findings, "annotations", "expected columns idx,slice")
    if frame is None:
        return empty
    if not {"idx", "slice"} <= set(frame.columns):
        findings.error(f"{path}: needs columns idx and slice, found {list(frame.columns)}")
        return empty
    (idx, bad_idx), (slices_, bad_slice) = bad_ids(frame["idx"]), bad_ids(frame["slice"])
    bad = bad_idx | bad_slice
    frame = pd.DataFrame({"idx": idx, "slice": slices_})
    unknown = ~frame["idx"].isin(labels.index)
    slices = frame["idx"].map(volumes["slices"]).astype(float)
    out_of_range = (frame["slice"] < 0) | (frame["slice"] >= slices.fillna(np.inf))
    for mask, why in (
        (bad, "that are not whole non-negative numbers"),
        (unknown & ~bad, "for idx not in Labels.csv"),
        (out_of_range & ~bad & ~unknown, "beyond the study's slices"),
    ):
        if mask.any():
            which = frame.loc[mask & ~bad_idx, "idx"].unique()
            findings.warn(
                f"{path}: {int(mask.sum())} annotation(s) {why} (idx {preview(which)}); dropped"
            )
    keep = ~(bad | unknown | out_of_range)
    return frame[keep].astype(np.int64).sort_values(["idx", "slice"]).reset_index(drop=True)


def _subgroups(demographics: pd.DataFrame, findings: Findings) -> pd.DataFrame:
    """The paper's subgroups: gender Female/Male, race White/Others, age >80/<=80. A study
    whose value is missing is counted in a warning that says where it goes."""
    female = demographics["Female"] == 1
    male = demographics["Male"] == 1
    gender = np.select([female, male], ["Female", "Male"], "Unknown")
    race = np.where(demographics["White"] == 1, "White", "Others")
    age = demographics["current_age_yrs"]
    age_group = np.where(age.isna(), "Unknown", np.where(age > AGE_CUTOFF, ">80", "<=80"))
    fates = (
        ((gender == "Unknown"), "neither Female nor Male set", "gender group 'Unknown'"),
        (demographics["White"].isna().to_numpy(), "no White value", "race group 'Others'"),
        (age.isna().to_numpy(), "no current_age_yrs", "age group 'Unknown'"),
    )
    for mask, why, fate in fates:
        if mask.any():
            which = demographics.index[mask]
            findings.warn(
                f"Demographics.csv: {int(mask.sum())} stud(ies) with {why} (idx "
                f"{preview(which)}) go to the {fate}"
            )
    return pd.DataFrame(
        {"age": age, "gender": gender, "race": race, "age_group": age_group},
        index=demographics.index,
    )


def _check_intercepts(cohort: Cohort, findings: Findings) -> None:
    raw, unclear = [], []
    for idx in cohort.studies.index[cohort.studies["volume_path"].notna()]:
        guess = detect_intercept(cohort.volume(idx))
        if guess is None:
            unclear.append(idx)
        elif guess:
            raw.append(idx)
    if raw:
        findings.warn(
            f"{len(raw)} volume(s) hold raw values (air near +24), read with intercept -1024 "
            f"(idx {preview(raw)}); pass --hu-intercept to override"
        )
    if unclear:
        findings.error(
            f"{len(unclear)} volume(s) without a clear air peak (idx {preview(unclear)}); "
            "pass --hu-intercept 0 or -1024"
        )


def load_outcomes(path: str | os.PathLike, data=None) -> pd.DataFrame:
    """What evaluation needs and nothing more: ``Labels.csv`` and ``Demographics.csv`` (for
    the INSPECT layout: labels, splits, metadata and the MEDS demographics, no volume).

    Returns the studies indexed by idx with ``label``, ``pe_type``, ``split``, ``age``,
    ``gender``, ``race``, ``age_group``, ``non_subsegmental`` and ``has_volume`` (a volume
    file by that name; INSPECT also ``has_ehr``); raises ``CohortError``. ``data`` is the
    config's data section: the layout and the task whose label is wanted.
    """
    root = Path(path)
    findings = Findings()
    if not root.is_dir():
        raise CohortError([f"{root}: not a folder; point to the RadFusion release folder"])
    if detect_layout(root, data) == "inspect":
        report = _validate_inspect(root, findings, data, volumes=False)
        if report.errors:
            raise CohortError(report.errors)
        return report.cohort.studies
    labels = read_labels(root, findings)
    demographics = None
    if labels is not None:
        demographics = read_release_table(
            root / "Demographics.csv", "Demographics", findings, labels.index
        )
    if findings.errors or labels is None or demographics is None:
        raise CohortError(findings.errors)
    studies = labels.join(_subgroups(demographics, findings))
    studies["non_subsegmental"] = studies["pe_type"] != "subsegmental"
    studies["has_volume"] = studies.index.isin(list(find_volumes(root)))
    return studies
