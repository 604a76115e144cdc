"""Worker processes that die with their parent.

A pool's workers outlive a parent killed with SIGKILL (or a crashed one): they wait for work
that never comes, holding hundreds of MB each. Every pool radfusion starts passes
:func:`die_with_parent` as its initializer: on Linux the kernel then sends the worker SIGKILL
when its parent goes (``PR_SET_PDEATHSIG``). Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = ["die_with_parent", "loky_args"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc to ask: the worker lives on as before
        return
    if os.getppid() != parent:  # the parent went before the request was made
        os._exit(1)


def loky_args() -> dict:
    """joblib ``Parallel`` keywords for the loky backend with :func:`die_with_parent`."""
    return {"backend": "loky", "initializer": die_with_parent}
