"""Collecting what validation finds: errors (the cohort cannot be used) and warnings."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Findings", "preview", "read_csv_checked", "suggest"]


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def preview(values: Iterable, limit: int = 5) -> str:
    """``1, 2, 3, 4, 5 and 7 more`` - enough to find the rows, short enough to read."""
    values = list(values)
    head = ", ".join(str(v) for v in values[:limit])
    return head if len(values) <= limit else f"{head} and {len(values) - limit} more"


def suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_csv_checked(path: Path, findings: Findings, what: str, fix: str) -> pd.DataFrame | None:
    """Read a CSV, recording a clear error for a missing, empty or unparsable file."""
    if not path.exists():
        findings.error(f"{path}: {what} not found; {fix}")
        return None
    if os.path.getsize(path) == 0:
        findings.error(f"{path}: the file is empty; {fix}")
        return None
    try:
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        findings.error(f"{path}: the file has no header or rows; {fix}")
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        findings.error(f"{path}: cannot be parsed as CSV ({str(exc).strip()}); {fix}")
        return None
    if frame.empty:
        findings.error(f"{path}: has a header but no rows; {fix}")
        return None
    return frame
