"""CT volumes in the release layout: ``{idx}.npy`` files anywhere below the cohort folder.

Only headers are read when a cohort loads; a volume's voxels are memory-mapped on demand.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VolumeHeader", "detect_intercept", "find_volumes", "open_volume", "read_header"]

_NAME = re.compile(r"^(\d+)\.npy$")
#: Folders below a cohort that never hold the release's volumes.
SKIP_DIRS = {"raw", "cache", "runs"}


@dataclass(frozen=True)
class VolumeHeader:
    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype


def find_volumes(root: str | os.PathLike) -> dict[int, list[Path]]:
    """Map idx -> every ``{idx}.npy`` found below ``root`` (more than one is an error)."""
    found: dict[int, list[Path]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in files:
            match = _NAME.match(name)
            if match:
                found.setdefault(int(match.group(1)), []).append(Path(folder) / name)
    return found


def read_header(path: str | os.PathLike) -> VolumeHeader:
    """Read a ``.npy`` header; raise ``ValueError`` saying what is wrong with the file."""
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file (a FIFO, device or folder); give the .npy itself")
    size = st.st_size
    if size == 0:
        raise ValueError("the file is empty")
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = reader(fh)
        except Exception as exc:  # numpy raises ValueError, EOFError, SyntaxError...
            raise ValueError(f"not a readable .npy file ({exc})") from exc
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError("holds Python objects (pickle), which radfusion never loads")
    if len(shape) != 3:
        raise ValueError(f"has shape {shape}; a CT volume must be 3-D (slices, rows, cols)")
    if 0 in shape:
        raise ValueError(f"has shape {shape}: no voxels (a volume needs slices, rows and cols)")
    expected = offset + math.prod(int(n) for n in shape) * dtype.itemsize  # no overflow
    if size < expected:
        raise ValueError(f"truncated: {size} bytes, the header promises {expected}")
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(f"has dtype {dtype}; expected integers (HU) or floats")
    if fortran:
        raise ValueError("is stored in Fortran order; save it in C order")
    return VolumeHeader(path=path, shape=tuple(int(s) for s in shape), dtype=dtype)


def open_volume(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a volume read-only (no pickle, nothing read until indexed)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def detect_intercept(volume: np.ndarray, *, max_slices: int = 3) -> int | None:
    """Guess whether a volume holds HU (return 0) or raw values needing -1024 (return -1024).

    Looks for the air peak on a few slices: air is -1000 HU, so a volume in HU has a clear
    population near -1000 while a raw one has it near +24 and nothing much below -200.
    Padding values (< -1500) are ignored. Returns None when neither is clear.
    """
    n = volume.shape[0]
    picks = np.unique(np.linspace(0, n - 1, min(max_slices, n)).round().astype(int))
    values = np.asarray(volume[picks], dtype=np.float32).ravel()
    values = values[(values > -1500) & (values < 4000)]
    if values.size == 0:
        return None
    air_hu = np.mean((values > -1100) & (values < -900))
    air_raw = np.mean((values > -76) & (values < 124))
    below = np.mean(values < -200)
    if air_hu >= 0.02:
        return 0
    if air_raw >= 0.02 and below < 0.001:
        return -1024
    return None
