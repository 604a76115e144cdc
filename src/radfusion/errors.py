"""User-facing errors: each names the file (and row or key), what was found, and the fix.

The CLI prints these in one or two lines without a traceback and exits with status 2.
Anything else is a programming error and keeps its traceback.
"""

from __future__ import annotations

import errno
import os

__all__ = ["CohortError", "RadfusionError", "environment_message"]


class RadfusionError(Exception):
    """A problem with the user's input or environment that the user can fix."""


class CohortError(RadfusionError):
    """A cohort folder that cannot be used; ``problems`` lists every error found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = f"{len(self.problems)} problem(s) in the cohort:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


#: Environmental failures, each with what to do about it. Anything else stays a bug.
_FIXES = {
    errno.ENOSPC: "free some space (or write elsewhere) and rerun the same command: finished "
    "work is kept and resumed",
    errno.EDQUOT: "free some of your quota (or write elsewhere) and rerun the same command",
    errno.EACCES: "check the permissions of that folder, or write elsewhere",
    errno.EPERM: "check the permissions of that folder, or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere (another --out)",
    errno.ENOENT: "a file or folder went away while radfusion used it; restore it and rerun",
}


def environment_message(exc: BaseException) -> str | None:
    """One line for a disk-full, permission, read-only or vanished-path error: the path,
    what failed and the fix; None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in _FIXES:
        return None
    where = exc.filename if exc.filename is not None else "a file being written"
    what = exc.strerror or os.strerror(exc.errno)
    return f"{where}: {what}; {_FIXES[exc.errno]}"
