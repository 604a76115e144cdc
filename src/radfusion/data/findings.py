"""Collecting what validation finds: errors (the cohort cannot be used) and warnings."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.io import read_user_csv

__all__ = [
    "Findings",
    "bad_ids",
    "checked_ids",
    "preview",
    "read_csv_checked",
    "suggest",
    "without_volume_note",
]

#: The largest study idx: beyond it a float no longer holds every whole number exactly.
MAX_IDX = 2**53


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def preview(values: Iterable, limit: int = 5) -> str:
    """``1, 2, 3, 4, 5 and 7 more`` - enough to find the rows, short enough to read (each
    value cut at about 80 characters)."""
    values = list(values)
    head = ", ".join(_cut(str(v)) for v in values[:limit])
    return head if len(values) <= limit else f"{head} and {len(values) - limit} more"


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} chars)"


def bad_ids(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Study ids as int64 and the mask of values that are not ids: an idx is a whole,
    finite, non-negative number below 2**53 (``inf``, ``1e30``, ``2.7``, ``-3`` and text are
    not). Where the mask is set, the returned id is meaningless."""
    number = pd.to_numeric(values, errors="coerce")
    bad = (
        number.isna()
        | ~np.isfinite(number.fillna(0))
        | (number != np.round(number))
        | (number < 0)
        | (number >= MAX_IDX)
    )
    return number.where(~bad, 0).astype(np.int64), bad


def checked_ids(frame: pd.DataFrame, path: Path, column: str = "idx") -> pd.Series:
    """``frame[column]`` as int64 study ids, or a one-line error naming the file's lines."""
    ids, bad = bad_ids(frame[column])
    if bad.any():
        raise RadfusionError(
            f"{path}: {column} must be whole non-negative numbers; line(s) "
            f"{preview(frame.index[bad] + 2)} have {preview(frame.loc[bad, column].tolist())}"
        )
    return ids


def suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_csv_checked(
    path: Path, findings: Findings, what: str, fix: str, *, sep: str = ","
) -> pd.DataFrame | None:
    """Read a CSV (or, with ``sep="\t"``, a TSV), recording a clear error for a missing,
    empty, special, mis-encoded or unparsable file (:func:`radfusion.io.read_user_csv`)."""
    if not path.exists():
        findings.error(f"{path}: {what} not found; {fix}")
        return None
    try:
        frame = read_user_csv(path, what, "table", low_memory=False, sep=sep)
    except RadfusionError as exc:
        findings.error(f"{exc}; {fix}")
        return None
    if frame.empty:
        findings.error(f"{path}: has a header but no rows; {fix}")
        return None
    return frame


def without_volume_note(count: int, which: str) -> str:
    """The warning for labelled studies kept without a volume (``data.without_volume=ehr``)."""
    return (
        f"{count} labelled stud(ies) without a volume ({which}): scored by the EHR model and "
        "each fusion's fallback, left out of the image models' training and metrics"
    )
