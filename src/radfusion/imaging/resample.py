"""Slices resampled to a target spacing: the optional step between a NIfTI volume
(:mod:`radfusion.data.nifti`, which knows its spacing) and the cache."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["resample_slices"]


def resample_slices(volume: np.ndarray, spacing: float, thickness: float) -> np.ndarray:
    """Linearly resample along axis 0 from ``spacing`` to ``thickness`` mm between slices.

    The first slice stays where it is; the new slices sit every ``thickness`` mm up to the
    last original one. Values stay int16 (rounded)."""
    if spacing <= 0 or thickness <= 0 or not (math.isfinite(spacing) and math.isfinite(thickness)):
        raise ValueError(f"slice spacing {spacing} and thickness {thickness} must be positive")
    n = volume.shape[0]
    if n == 1 or math.isclose(spacing, thickness, rel_tol=1e-6):
        return np.ascontiguousarray(volume)
    extent = (n - 1) * spacing
    positions = np.arange(0.0, extent + 1e-6 * thickness, thickness) / spacing
    below = np.minimum(np.floor(positions).astype(np.int64), n - 1)
    above = np.minimum(below + 1, n - 1)
    weight = (positions - below).astype(np.float32)[:, None, None]
    out = np.empty((len(positions), *volume.shape[1:]), dtype=np.int16)
    for start in range(0, len(positions), 32):  # a few slices at a time: no float32 volume
        part = slice(start, start + 32)
        low = volume[below[part]].astype(np.float32)
        high = volume[above[part]].astype(np.float32)
        out[part] = np.rint(low + (high - low) * weight[part])
    return out
