"""The volume cache: built once, keyed by its parameters, resumable, self-checking."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from radfusion.data import Cohort
from radfusion.imaging.preprocess import (
    PreprocessParams,
    build_cache,
    cache_folder,
    cohort_volumes,
    resize_volume,
)


@pytest.fixture
def volumes(small_cohort):
    return cohort_volumes(Cohort.load(small_cohort))


def test_same_size_keeps_hu_exactly_and_applies_the_intercept():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2000, (5, 16, 16)).astype(np.int16)
    np.testing.assert_array_equal(resize_volume(stored, -1024, 16), stored.astype(int) - 1024)


def test_resizing_keeps_constant_and_linear_images():
    flat = np.full((3, 64, 64), 40, np.int16)
    np.testing.assert_array_equal(resize_volume(flat, 0, 24), 40)
    ramp = np.tile(np.arange(64, dtype=np.int16) * 10, (2, 64, 1))  # 0..630 along columns
    out = resize_volume(ramp, 0, 32)
    # Halving a linear ramp samples it at pixel centres 0.5, 2.5, ...: values 5, 25, ...
    np.testing.assert_allclose(out[0, 10, 2:-2], 5 + 20 * np.arange(2, 30), atol=1)


def test_builds_then_rerun_does_nothing(volumes, tmp_path):
    params = PreprocessParams(size=12)
    first = build_cache(volumes, tmp_path, params)
    assert sorted(first.built) == sorted(volumes) and not first.failed
    again = build_cache(volumes, tmp_path, params)
    assert again.nothing_to_do and len(again.complete) == len(volumes)
    entry = np.load(cache_folder(tmp_path, params) / f"{min(volumes)}.npy")
    assert entry.dtype == np.int16 and entry.shape[1:] == (12, 12)


def test_a_changed_parameter_makes_a_new_cache(volumes, tmp_path):
    a = build_cache(volumes, tmp_path, PreprocessParams(size=12))
    b = build_cache(volumes, tmp_path, PreprocessParams(size=10))
    assert a.folder != b.folder and len(b.built) == len(volumes)
    c = build_cache(volumes, tmp_path, PreprocessParams(size=12, hu_intercept=0))
    assert c.folder not in (a.folder, b.folder)


def test_corrupt_and_stale_entries_are_rebuilt(volumes, tmp_path):
    params = PreprocessParams(size=12)
    summary = build_cache(volumes, tmp_path, params)
    ids = sorted(volumes)
    truncated = summary.folder / f"{ids[0]}.npy"
    truncated.write_bytes(truncated.read_bytes()[:100])
    flipped = summary.folder / f"{ids[1]}.npy"
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # same size, different content: only the checksum sees it
    flipped.write_bytes(bytes(data))
    source = volumes[ids[2]]
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # the source changed
    again = build_cache(volumes, tmp_path, params)
    assert again.rebuilt == {ids[0]: "corrupt", ids[2]: "stale"}
    verified = build_cache(volumes, tmp_path, params, verify=True)
    assert verified.rebuilt == {ids[1]: "corrupt"}
    fresh = build_cache(volumes, tmp_path / "fresh", params)
    for idx in ids[:3]:
        np.testing.assert_array_equal(
            np.load(summary.folder / f"{idx}.npy"), np.load(fresh.folder / f"{idx}.npy")
        )


def test_killed_run_resumes_and_ends_equal_to_a_clean_build(small_cohort, tmp_path):
    cache = tmp_path / "cache"
    args = [
        "preprocess",
        str(small_cohort),
        "--cache",
        str(cache),
        "--set",
        "preprocess.size=16",
        "--set",
        "preprocess.workers=1",
    ]
    cmd = [sys.executable, "-c", "from radfusion.cli import main; main()", *args]
    # The killed run builds each entry 50 ms slower, so the kill lands mid-build however fast
    # the machine (16-pixel entries otherwise all finish between two polls on a busy one).
    slowed = (
        "import time, radfusion.imaging.preprocess as p; build = p._build_entry; "
        "p._build_entry = lambda task: (time.sleep(0.05), build(task))[1]; "
        "from radfusion.cli import main; main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", slowed, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.glob("*/*.json"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = next(cache.iterdir())
    done_before = len(list(folder.glob("*.json"))) - 1  # minus params.json
    assert done_before > 0
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "built" in resumed.stdout
    clean = build_cache(
        cohort_volumes(Cohort.load(small_cohort)), tmp_path / "clean", PreprocessParams(size=16)
    )
    for entry in clean.folder.glob("*.npy"):
        np.testing.assert_array_equal(np.load(entry), np.load(folder / entry.name))
    meta = json.loads((folder / f"{clean.built[0]}.json").read_text())
    assert meta["bytes"] == (folder / f"{clean.built[0]}.npy").stat().st_size
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "nothing to do" in again.stdout


def test_cli_preprocess_and_import_dicom(small_cohort, tmp_path):
    from pydicom.data import get_testdata_file
    from typer.testing import CliRunner

    from radfusion.cli import app

    runner = CliRunner()
    args = [
        "preprocess",
        str(small_cohort),
        "--cache",
        str(tmp_path / "c"),
        "--set",
        "preprocess.size=12",
        "--set",
        "preprocess.workers=2",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "built 60" in first.output, first.output
    second = runner.invoke(app, args)
    assert "nothing to do" in second.output
    third = runner.invoke(app, [*args[:-4], "--set", "preprocess.size=10"])
    assert "built 60" in third.output and len(list((tmp_path / "c").iterdir())) == 2

    src = tmp_path / "dicom"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "a")
    result = runner.invoke(app, ["import-dicom", str(src), str(tmp_path / "out")])
    assert result.exit_code == 0 and "imported 1 series" in result.output
    assert np.load(tmp_path / "out" / "1.npy").shape == (1, 128, 128)


def test_nan_in_a_volume_fails_that_entry_with_a_message(tmp_path):
    vol = np.zeros((4, 8, 8), np.float32)
    vol[2, 3, 3] = np.nan
    np.save(tmp_path / "7.npy", vol)
    summary = build_cache(
        {7: tmp_path / "7.npy"}, tmp_path / "c", PreprocessParams(size=8, hu_intercept=0)
    )
    assert "slice 2" in summary.failed[7] and "NaN" in summary.failed[7]
    assert not (summary.folder / "7.npy").exists()
