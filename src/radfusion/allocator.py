"""Freed tensor memory kept for reuse, instead of handed back to the kernel.

glibc serves a block of more than 32 MB (and, until its threshold adapts, of more than
128 KB) with its own ``mmap``, and unmaps it when it is freed. A 3-D CNN allocates and frees
blocks of that size at every layer (PENet-50's stage-1 activations are 56 MB per window), so
each layer's output starts as fresh pages, and the page faults that zero them cost as much as
the layer's normalisation. :func:`retain_freed_memory` tells glibc to take every block from
its heap and never give the heap back: the second window finds its pages already mapped.
``benchmarks/penet_speed.py`` measures the effect (about 1.3x for PENet-50 inference on a
2-core CPU).

The cost is that the process keeps its peak memory until it exits, which is what a training
or scoring process does anyway. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["glibc_defaults", "retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def retain_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it; True where glibc took it."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def glibc_defaults() -> bool:
    """Undo :func:`retain_freed_memory`, back to where glibc's adaptive thresholds settle in
    a process that has freed a large block (mmap above 32 MB, trim above 64 MB): the
    allocator a plain PyTorch process runs with, for a baseline timed in the same process."""
    libc = _libc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(_M_MMAP_MAX, 65536)
        and libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        and libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
    )
