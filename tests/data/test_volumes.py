"""Volume headers and HU-intercept detection."""

from __future__ import annotations

import numpy as np
import pytest

from radfusion.data.volumes import detect_intercept, find_volumes, read_header


def _chest(rng, offset=0):
    vol = np.full((10, 32, 32), -1000, np.int16)
    vol[:, 6:26, 6:26] = 40
    vol[:, 10:22, 8:14] = -850
    vol += rng.normal(0, 15, vol.shape).astype(np.int16)
    return vol + np.int16(offset)


def test_detects_hu_and_raw_storage():
    rng = np.random.default_rng(0)
    assert detect_intercept(_chest(rng)) == 0
    assert detect_intercept(_chest(rng, 1024)) == -1024
    padded = _chest(rng, 1024)
    padded[:, :2, :] = -2000  # padding outside the field of view is ignored
    assert detect_intercept(padded) == -1024
    assert detect_intercept(np.full((4, 8, 8), 300, np.int16)) is None


def test_header_is_read_without_loading(tmp_path):
    path = tmp_path / "5.npy"
    np.save(path, np.zeros((7, 4, 3), np.int16))
    header = read_header(path)
    assert header.shape == (7, 4, 3) and header.dtype == np.int16


@pytest.mark.parametrize(
    ("array", "message"),
    [(np.zeros((4, 4), np.int16), "3-D"), (np.array(["a"] * 8).reshape(2, 2, 2), "dtype")],
)
def test_header_rejects(tmp_path, array, message):
    path = tmp_path / "1.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message):
        read_header(path)


def test_empty_file(tmp_path):
    (tmp_path / "1.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_header(tmp_path / "1.npy")


def test_find_volumes_by_name_in_any_folder(tmp_path):
    for rel in ("0/1.npy", "7/deep/2.npy", "3/notes.npy", "raw/3.npy"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / rel, np.zeros((1, 1, 1), np.int16))
    found = find_volumes(tmp_path)
    assert sorted(found) == [1, 2]  # not notes.npy, and nothing under raw/
