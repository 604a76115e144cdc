"""Files in and out: atomic writes, and the checks every input file passes before it is read.

Writes go to a temporary name in the same folder and are renamed into place: a reader never
sees a half-written file, and an interrupted write leaves only a ``.tmp-*`` file that the next
write of the same path replaces.

Reads open only regular files (or symlinks to them) of a size sane for their kind: a FIFO
would hang the reader and ``/dev/zero`` would fill memory. CSVs are read as UTF-8, with or
without a byte-order mark; another encoding is named in the error with the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError

__all__ = [
    "LIMITS",
    "atomic_path",
    "quote",
    "read_text",
    "read_user_csv",
    "regular_file",
    "write_csv",
    "write_json",
    "write_npy",
    "write_parquet",
]

_MiB = 2**20
#: The largest input of each kind that radfusion reads (bytes). Generous for the real data
#: (the release's largest table is a few MB, a PENet-50 checkpoint about 200 MB).
LIMITS = {
    "table": 4096 * _MiB,  # a cohort's CSVs (Labels, the EHR tables, annotations)
    "predictions": 512 * _MiB,
    "embeddings": 16384 * _MiB,  # one encoder's study embeddings (parquet)
    "row": 16 * _MiB,  # one study's EHR row for predict
    "model": 1024 * _MiB,  # an EHR model (.skops)
    "checkpoint": 16384 * _MiB,
    "config": 4 * _MiB,
    "record": 64 * _MiB,  # a run folder's own small files (thresholds, stage records)
}


def quote(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters: a user's 50 MB cell is not echoed."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} chars)"


def regular_file(path: str | os.PathLike, what: str, kind: str | None = None) -> Path:
    """Return ``path`` if it is a regular file (or a symlink to one) no larger than the
    ``kind``'s limit; raise a one-line error naming the file otherwise."""
    path = Path(path)
    try:
        st = path.stat()  # follows symlinks: what would be opened
    except FileNotFoundError:
        raise RadfusionError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise RadfusionError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind_name = (
            "a folder"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise RadfusionError(
            f"{path}: the {what} is {kind_name}, not a regular file; give the file itself"
        )
    if kind is not None and st.st_size > LIMITS[kind]:
        raise RadfusionError(
            f"{path}: the {what} is {st.st_size / _MiB:.0f} MiB, more than a {kind} file can "
            f"be ({LIMITS[kind] / _MiB:.0f} MiB); is it the right file?"
        )
    return path


def read_text(path: str | os.PathLike, what: str, kind: str = "record") -> str:
    """A small text file (a record, a config), checked by :func:`regular_file`, as UTF-8."""
    path = regular_file(path, what, kind)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RadfusionError(f"{path}: the {what} is not UTF-8 text; re-save it as UTF-8") from None


def _encoding_of(head: bytes) -> str | None:
    """The encoding a non-UTF-8 file most likely has, for the error message."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) > 1 and b"\x00" in head[:200]):
        return "UTF-16"
    try:
        head.decode("cp1252")
        return "Windows-1252 (Latin-1)"
    except UnicodeDecodeError:
        return None


def read_user_csv(
    path: str | os.PathLike, what: str, kind: str = "table", **kwargs: Any
) -> pd.DataFrame:
    """Read a CSV a user handed us: a regular file of a sane size, UTF-8 with or without a
    byte-order mark. Raises a one-line error for another encoding, an empty file or a parse
    error (``pandas.errors.EmptyDataError`` is turned into that error too)."""
    path = regular_file(path, what, kind)
    if path.stat().st_size == 0:
        raise RadfusionError(f"{path}: the {what} is empty")
    try:
        return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
    except UnicodeDecodeError:
        with open(path, "rb") as fh:
            guess = _encoding_of(fh.read(4096))
        found = f" (it looks like {guess})" if guess else ""
        raise RadfusionError(
            f"{path}: the {what} is not UTF-8{found}; re-save it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise RadfusionError(f"{path}: the {what} has no header or rows") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1][:200]
        raise RadfusionError(f"{path}: the {what} cannot be parsed as CSV ({detail})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, **kwargs: Any) -> None:
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
