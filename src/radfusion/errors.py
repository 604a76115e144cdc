"""User-facing errors: each names the file (and row or key), what was found, and the fix.

The CLI prints these in one or two lines without a traceback and exits with status 2.
Anything else is a programming error and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CohortError", "RadfusionError"]


class RadfusionError(Exception):
    """A problem with the user's input or environment that the user can fix."""


class CohortError(RadfusionError):
    """A cohort folder that cannot be used; ``problems`` lists every error found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = f"{len(self.problems)} problem(s) in the cohort:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))
