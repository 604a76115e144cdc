"""The predictions contract: one CSV per model with ``idx`` and ``prob`` (optional ``split``);
the file's stem is the model's name."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from radfusion.data.findings import checked_ids, preview
from radfusion.errors import RadfusionError
from radfusion.io import read_user_csv

__all__ = ["collect_prediction_files", "model_order", "read_predictions"]


def model_order(name: str) -> tuple[int, str]:
    """Sort key giving the paper's column order: image, EHR, fusion(s) (the paper's mean
    first), then SliceNet and its fusions, then the rest."""
    if name == "image":
        return (0, name)
    if name == "ehr":
        return (1, name)
    if name == "slicenet":
        return (3, name)
    for rank, prefix in ((4, "fusion_slicenet_"), (2, "fusion_")):
        if name.startswith(prefix):
            return (rank, "" if name == f"{prefix}mean" else name)
    return (5, name)


def collect_prediction_files(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (every ``*.csv`` inside) and files into a sorted, de-duplicated list."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        elif path.exists():  # a FIFO or device is refused, by name, when it is read
            files.append(path)
        else:
            raise RadfusionError(f"{path}: no such predictions file or folder")
    if not files:
        raise RadfusionError("no prediction files found (expected CSVs with columns idx, prob)")
    files.sort(key=lambda f: model_order(f.stem))
    names = [f.stem for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RadfusionError(f"two prediction files share the model name(s) {dup}; rename one")
    return files


def read_predictions(
    path: str | os.PathLike, studies: pd.DataFrame, *, allow_missing: bool = False
) -> tuple[pd.Series, list[str]]:
    """Read one model's predictions, checked against the cohort's ``studies`` (indexed by idx).

    Returns the probabilities indexed by idx and warnings (val or test studies without a
    prediction, a ``split`` column that contradicts the cohort's). Raises on a missing
    column, an idx that is not a whole non-negative number, a duplicated idx, a probability
    outside [0, 1] or not finite, an idx unknown to the cohort, and an incomplete test set
    (unless ``allow_missing``).
    """
    path = Path(path)
    frame = read_user_csv(path, f"predictions file of model {path.stem!r}", "predictions")
    missing = [c for c in ("idx", "prob") if c not in frame.columns]
    if missing:
        raise RadfusionError(
            f"{path}: missing column(s) {missing}; a predictions file has columns idx,prob "
            "(and optionally split)"
        )
    rows = frame.index + 2
    idx = checked_ids(frame, path)
    dup = idx.duplicated(keep=False)
    if dup.any():
        raise RadfusionError(
            f"{path}: idx {preview(sorted(idx[dup].unique()))} appear more than once "
            f"(lines {preview(rows[dup])}); one prediction per study"
        )
    prob = pd.to_numeric(frame["prob"], errors="coerce")
    bad = prob.isna() | (prob < 0) | (prob > 1)
    if bad.any():
        raise RadfusionError(
            f"{path}: prob must be a number in [0, 1]; lines {preview(rows[bad])} have "
            f"{preview(frame.loc[bad, 'prob'].tolist())}"
        )
    unknown = ~idx.isin(studies.index)
    if unknown.any():
        raise RadfusionError(
            f"{path}: idx {preview(idx[unknown].tolist())} (lines {preview(rows[unknown])}) are "
            "not in the cohort's Labels.csv; predictions must be for the cohort's studies"
        )
    series = pd.Series(prob.to_numpy(float), index=pd.Index(idx.to_numpy(), name="idx"))
    notes = []
    if "split" in frame.columns and "split" in studies.columns:
        theirs = frame["split"].astype(str).str.strip().str.lower().to_numpy()
        ours = studies.loc[idx.to_numpy(), "split"].to_numpy()
        differ = theirs != ours
        if differ.any():
            notes.append(
                f"{path}: the split column contradicts Labels.csv for {int(differ.sum())} "
                f"stud(ies) (idx {preview(idx[differ])}); Labels.csv's split is used"
            )
    for split in ("val", "test"):
        expected = studies.index[studies["split"] == split]
        absent = expected.difference(series.index)
        if len(absent):
            notes.append(
                f"{path}: {len(absent)} of {len(expected)} {split} studies have no prediction "
                f"(idx {preview(absent)})"
            )
            if split == "test" and not allow_missing:
                raise RadfusionError(
                    f"{path}: {len(absent)} of {len(expected)} test studies have no prediction "
                    f"(idx {preview(absent)}); predict them all, or pass --allow-missing to "
                    "evaluate on the rest"
                )
    return series.sort_index(), notes
