"""One writer at a time in a folder that a long job fills: a run, a training, the demo's cohort.

Two ``radfusion benchmark`` commands on one run folder (a command launched twice, two jobs
of a cluster array given the same ``--out``) would interleave their stages' status files,
checkpoints and predictions. The second is refused at once instead. The lock is the
operating system's (``flock`` through :mod:`filelock`), so it dies with its process: a killed
run never blocks its own resume.

A distributed launch runs the command once per rank (Lightning relaunches it for ranks 1..N-1,
``srun`` and ``torchrun`` start every rank): rank 0 holds the lock for all of them, and the
other ranks, which Lightning reads from the environment, go through without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout
from lightning.pytorch.utilities import rank_zero_only

from radfusion.errors import RadfusionError

__all__ = ["exclusive"]


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold ``lock_file`` for the block, or raise :class:`RadfusionError` with ``busy`` at
    once when another process holds it. Ranks other than 0 of a distributed launch hold
    nothing (their rank 0 does)."""
    if rank_zero_only.rank != 0:
        yield
        return
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RadfusionError(busy) from None
    try:
        yield
    finally:
        lock.release()
