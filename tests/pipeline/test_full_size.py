"""The real job's shape: the paper's config end to end on 512 x 512 studies with Table 1's
slice counts, on a training budget of two steps.

Also the odd volumes a real user's cohort holds: a 700-slice study, a one-slice study and a
non-square matrix are each handled or refused in one line (tests/imaging/test_odd_volumes.py).

The model is ``penet_tiny`` (PENet-50's 2 steps and its scoring of ~100 full windows would take
minutes here; ``benchmarks/full_size.py`` times PENet-50 at this size); everything else is the
paper's: preprocess.size 208, crop 192, 24-slice windows, the CTPA window, the EHR model, the
evaluation. The benchmark runs in its own process so that its peak memory is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import TrainConfig
from radfusion.imaging.windows import EvalWindows
from radfusion.rundir import RunDir

BUDGET = [
    "image.model=penet_tiny",
    "image.batch_size=2",
    "image.windows_per_epoch=4",  # 2 steps of 2 windows
    "image.max_epochs=1",
    "image.accelerator=cpu",
    "image.devices=1",
    "ehr.grid={C: [1.0], l1_ratio: [0.5], class_weight: [null]}",
    "evaluation.n_boot=200",
]
#: The benchmark in a process of its own, printing its anonymous memory (RssAnon) after the
#: imports and at its peak, sampled every 5 ms. Anonymous memory is what the process holds:
#: its RSS also counts the pages of the memory-mapped cache and libraries it has touched,
#: which the kernel drops under pressure (the cache is read through memory maps by design).
MEASURED = """
import sys, threading, time
from radfusion.cli import app
import radfusion.pipeline.benchmark, radfusion.imaging.trainer, sklearn.linear_model

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) * 1024

base, peak, done = anon(), [0], []

def sample():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.005)

threading.Thread(target=sample, daemon=True).start()
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    done.append(True)
    print(f"RSS {base} {max(peak[0], anon())}")
"""


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    data = tmp_path_factory.mktemp("full") / "data"
    done = CliRunner().invoke(
        app,
        ["synth", str(data), "--studies", "60", "--keep", "6", "--size", "512", "--workers", "2"],
    )
    assert done.exit_code == 0, done.output
    run = data.parent / "run"
    sets = [a for item in BUDGET for a in ("--set", item)]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURED,
            "benchmark",
            "--data",
            str(data),
            "--out",
            str(run),
            *sets,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    base, peak = (int(v) for v in proc.stdout.split("RSS ")[-1].split())
    return data, run, base, peak


def test_the_studies_are_full_size_with_real_slice_counts(full_size):
    data, *_ = full_size
    labels = pd.read_csv(data / "Labels.csv")
    assert len(labels) == 6 and set(labels["split"]) == {"train", "val", "test"}
    for idx in labels["idx"]:
        (path,) = data.glob(f"*/{idx}.npy")
        shape = np.load(path, mmap_mode="r").shape
        assert shape[1:] == (512, 512)
        assert 100 <= shape[0] <= 1000  # Table 1's counts, not a phantom's 48-64


def test_every_stage_finishes(full_size):
    _, run, *_ = full_size
    for name in ("validate", "preprocess", "ehr", "image", "selection", "fusion", "evaluate"):
        assert json.loads(RunDir(run).stage(name).read_text())["status"] == "done", name
    metrics = pd.read_csv(RunDir(run).eval.metrics)
    assert {"image", "ehr", "fusion_mean"} <= set(metrics["model"])
    assert RunDir(run).report_page.exists()


def test_the_recipe_resize_208_crop_192_windows_of_24_in_the_ctpa_window(full_size):
    data, run, *_ = full_size
    (cache,) = [p for p in RunDir(run).cache.iterdir() if p.is_dir()]
    labels = pd.read_csv(data / "Labels.csv").set_index("idx")
    for idx in labels.index:
        source = np.load(next(data.glob(f"*/{idx}.npy")), mmap_mode="r")
        cached = np.load(cache / f"{idx}.npy", mmap_mode="r")
        assert cached.dtype == np.int16 and cached.shape == (source.shape[0], 208, 208)
    config = TrainConfig()  # the paper's window, crop and stride
    windows = EvalWindows(cache, labels, window=config.window, crop=config.crop)
    first = [k for k, (i, _) in enumerate(windows.items) if i == windows.items[0][0]]
    x, idx, start = windows[first[len(first) // 2]]  # mid-chest: contrast and bone in view
    assert tuple(x.shape) == (1, 24, 192, 192)
    # The CTPA window by hand: centre 400, width 1000 -> HU clipped to [-100, 900], scaled to
    # [0, 1], minus the training mean 0.15897, on the centre 192 x 192 of the 208 x 208 slice.
    hu = np.load(cache / f"{idx}.npy")[start : start + 24, 8:200, 8:200].astype(np.float64)
    expected = (np.clip(hu, -100, 900) + 100) / 1000 - 0.15897
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-6)
    assert (hu < -100).any()  # air clips at the window's low end


def test_peak_memory_stays_bounded_no_whole_study_as_float32(full_size):
    data, _, base, peak = full_size
    largest = max(np.load(p, mmap_mode="r").shape[0] for p in data.glob("*/*.npy"))
    as_float32 = largest * 512 * 512 * 4  # 400-560 MB here
    # Training, scoring and the EHR model together hold less than one study as float32
    # (about 290 MB over the imports here): preprocessing resizes in chunks of slices and
    # evaluation streams windows.
    assert peak - base < as_float32, (peak - base, as_float32)
