"""The predictions contract: one CSV per model with ``idx`` and ``prob`` (optional ``split``);
the file's stem is the model's name."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from radfusion.data.findings import checked_ids, preview
from radfusion.errors import RadfusionError
from radfusion.io import read_user_csv, regular_file

__all__ = [
    "collect_prediction_files",
    "model_order",
    "read_embeddings",
    "read_predictions",
    "write_embeddings",
]


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
    path: str | os.PathLike,
    studies: pd.DataFrame,
    *,
    allow_missing: bool = False,
    may_lack=(),
    lacking: str = "volume",
) -> tuple[pd.Series, list[str]]:
    """Read one model's predictions, checked against the cohort's ``studies`` (indexed by idx).

    Returns the probabilities indexed by idx and warnings (val or test studies without a
    prediction, a ``split`` column that contradicts the cohort's). Raises on a missing
    column, an idx that is not a whole non-negative number, a duplicated idx, a probability
    outside [0, 1] or not finite, an idx unknown to the cohort, and an incomplete test set
    (unless ``allow_missing``, or every absent test study is in ``may_lack``: the studies the
    model could not score, such as an image model's studies without a volume; ``lacking``
    names their missing input in the note).
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
            unscorable = f" (no {lacking} to score)" if absent.isin(may_lack).all() else ""
            notes.append(
                f"{path}: {len(absent)} of {len(expected)} {split} studies have no prediction "
                f"(idx {preview(absent)}){unscorable}"
            )
            if split == "test" and not allow_missing and len(absent.difference(may_lack)):
                raise RadfusionError(
                    f"{path}: {len(absent)} of {len(expected)} test studies have no prediction "
                    f"(idx {preview(absent)}); predict them all, or pass --allow-missing to "
                    "evaluate on the rest"
                )
    return series.sort_index(), notes


# The embeddings contract: ``embeddings/<name>.parquet`` holds ``idx`` and then one float32
# column per dimension, one row per study. Our image models write theirs (the pooled features
# of every window of a study, max and mean); a user drops in a file from any encoder.

EMBEDDING_SUFFIX = ".parquet"


def write_embeddings(idx, values, path: str | os.PathLike, columns=None) -> Path:
    """Write a ``[studies, dims]`` array as an embeddings file (atomically); columns are
    ``f0..`` unless named."""
    import numpy as np

    from radfusion.io import atomic_path

    values = np.asarray(values, dtype=np.float32)
    names = list(columns) if columns is not None else [f"f{k}" for k in range(values.shape[1])]
    frame = pd.DataFrame(values, columns=names)
    frame.insert(0, "idx", np.asarray(idx, dtype=np.int64))
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def read_embeddings(
    path: str | os.PathLike,
    studies: pd.DataFrame,
    *,
    allow_missing: bool = False,
    may_lack=(),
) -> tuple[pd.DataFrame, list[str]]:
    """One encoder's study embeddings, checked against the cohort's ``studies`` like a
    predictions file: an ``idx`` column of whole non-negative numbers, each once and known to
    the cohort, numeric finite values, the same width in every split, and every test study
    present (unless ``allow_missing``, or the absent ones are all in ``may_lack``: studies
    without a volume). Returns float32 columns indexed by idx, and warnings (val or train
    studies without a row: they are scored by the other modalities)."""
    import numpy as np

    path = regular_file(path, "embeddings file", "embeddings")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors for a file that is not parquet, or truncated
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise RadfusionError(
            f"{path}: not a readable parquet file ({detail}); an embeddings file is parquet "
            "with idx and one float column per dimension"
        ) from None
    if "idx" not in frame.columns:
        raise RadfusionError(
            f"{path}: no idx column; an embeddings file has idx and then one float column per "
            "dimension"
        )
    values = frame.drop(columns="idx")
    if values.shape[1] == 0:
        raise RadfusionError(f"{path}: no embedding columns besides idx")
    numeric = [c for c in values.columns if pd.api.types.is_numeric_dtype(values[c])]
    if len(numeric) < values.shape[1]:
        other = [c for c in values.columns if c not in numeric]
        raise RadfusionError(
            f"{path}: column(s) {preview(other)} are not numbers; every column but idx is one "
            "dimension of the embedding"
        )
    idx = checked_ids(frame.reset_index(drop=True), path)
    rows = np.arange(len(frame)) + 1
    dup = idx.duplicated(keep=False).to_numpy()
    if dup.any():
        raise RadfusionError(
            f"{path}: idx {preview(sorted(idx[dup].unique()))} appear more than once (rows "
            f"{preview(rows[dup])}); one embedding per study"
        )
    unknown = ~idx.isin(studies.index).to_numpy()
    if unknown.any():
        raise RadfusionError(
            f"{path}: idx {preview(idx[unknown].tolist())} are not in the cohort; embeddings "
            "must be for the cohort's studies"
        )
    x = values.to_numpy(np.float64)
    split = studies.loc[idx.to_numpy(), "split"].to_numpy()
    _check_width(path, x, split)
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise RadfusionError(
            f"{path}: {int(bad.any(axis=1).sum())} row(s) hold NaN or infinity (first: idx "
            f"{int(idx.iloc[r])}, column {values.columns[c]}); impute them, or leave the "
            "study's row out (it is then scored by its other modalities)"
        )
    out = pd.DataFrame(
        x.astype(np.float32), index=pd.Index(idx.to_numpy(), name="idx"), columns=values.columns
    )
    notes = []
    for name in ("train", "val", "test"):
        expected = studies.index[studies["split"] == name]
        absent = expected.difference(out.index)
        if len(absent) == len(expected) and len(expected) and name != "test":
            raise RadfusionError(
                f"{path}: no {name} study has an embedding; a probe and a fusion learn on "
                f"the {name} split"
            )
        if len(absent):
            notes.append(
                f"{path}: {len(absent)} of {len(expected)} {name} studies have no embedding "
                f"(idx {preview(absent)}); they are scored by their other modalities"
            )
            if name == "test" and not allow_missing and len(absent.difference(may_lack)):
                raise RadfusionError(
                    f"{path}: {len(absent)} of {len(expected)} test studies have no embedding "
                    f"(idx {preview(absent)}); embed them all, or --set "
                    "evaluation.allow_missing=true to score them by their other modalities"
                )
    return out.sort_index(), notes


def _check_width(path: Path, x, split) -> None:
    """Rows of one split padded with empty trailing columns are a narrower encoder's output
    (two encoders in one file): named as a width mismatch, not as NaN."""
    import numpy as np

    widths = {}
    for name in ("train", "val", "test"):
        rows = x[split == name]
        if len(rows):
            filled = np.isfinite(rows).any(axis=0)
            widths[name] = int(filled.nonzero()[0].max() + 1) if filled.any() else 0
    if len(set(widths.values())) > 1:
        text = ", ".join(f"{k} {v}" for k, v in widths.items())
        raise RadfusionError(
            f"{path}: the embedding's width differs between splits ({text} dimensions); one "
            "file holds one encoder's embeddings, the same width for every study"
        )
