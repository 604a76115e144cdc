"""What a real user's cohort holds beside 386-slice 512 x 512 studies: a 700-slice study, a
one-slice study, a non-square matrix, a 2-D array. Each is handled or refused in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.data.volumes import read_header
from radfusion.imaging.preprocess import AIR_HU, PreprocessParams, build_cache, resize_volume
from radfusion.imaging.windows import EvalWindows, window_starts


def _disc(rows: int, cols: int, radius: float) -> np.ndarray:
    """One slice of air with a disc of soft tissue (40 HU) at its centre."""
    r, c = np.mgrid[:rows, :cols]
    inside = (r - (rows - 1) / 2) ** 2 + (c - (cols - 1) / 2) ** 2 <= radius**2
    return np.where(inside, 40, AIR_HU).astype(np.int16)[None]


@pytest.mark.parametrize("shape", [(60, 90), (90, 60)])
def test_a_non_square_matrix_keeps_its_aspect_ratio(shape):
    out = resize_volume(_disc(*shape, radius=25), 0, 45)  # the long side halved
    tissue = out[0] > -500
    rows, cols = np.flatnonzero(tissue.any(axis=1)), np.flatnonzero(tissue.any(axis=0))
    # A disc stays a disc (a stretched one would be 1.5 times wider one way than the other),
    # of the radius halved, at the centre; what was added around the short axis is air.
    assert abs(len(rows) - len(cols)) <= 1 and abs(len(rows) - 25) <= 2
    assert abs(rows.mean() - 22) <= 0.5 and abs(cols.mean() - 22) <= 0.5
    assert out[0, 0, 0] == AIR_HU and out[0, -1, -1] == AIR_HU


def _cache(tmp_path, volumes: dict[int, np.ndarray], size: int):
    paths = {}
    for idx, vol in volumes.items():
        paths[idx] = tmp_path / f"{idx}.npy"
        np.save(paths[idx], vol)
    summary = build_cache(paths, tmp_path / "cache", PreprocessParams(size=size, hu_intercept=0))
    assert summary.failed == {}
    return summary.folder


def test_a_one_slice_and_a_700_slice_study_are_windowed(tmp_path):
    rng = np.random.default_rng(0)
    long = rng.integers(-1000, 1500, (700, 40, 40)).astype(np.int16)
    single = rng.integers(-1000, 1500, (1, 40, 40)).astype(np.int16)
    folder = _cache(tmp_path, {1: long, 2: single}, size=40)
    assert np.load(folder / "1.npy").shape == (700, 40, 40)
    studies = pd.DataFrame({"label": [0, 1]}, index=pd.Index([1, 2], name="idx"))
    windows = EvalWindows(folder, studies, window=24, crop=32, normalized=False)
    starts = [start for idx, start in windows.items if idx == 1]
    assert starts == list(window_starts(700, 24, None)) and len(starts) == -(-700 // 24)
    (one,) = [k for k, (idx, _) in enumerate(windows.items) if idx == 2]
    x, idx, start = windows[one]
    assert (idx, start) == (2, 0) and tuple(x.shape) == (1, 24, 32, 32)
    np.testing.assert_array_equal(x[0, 0].numpy(), single[0, 4:36, 4:36])  # the slice, cropped
    assert (x[0, 1:] == AIR_HU).all()  # the other 23 slices are air


def test_a_2d_array_is_refused_in_one_line(tmp_path):
    np.save(tmp_path / "7.npy", np.zeros((512, 512), np.int16))
    with pytest.raises(ValueError, match=r"shape \(512, 512\); a CT volume must be 3-D"):
        read_header(tmp_path / "7.npy")
