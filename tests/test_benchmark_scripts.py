"""Every script in ``benchmarks/`` still runs against the package as it is now.

The scripts reach into the package (the synthetic writer, the CT cache, a finished run's
models), so a change there can break one without any other test noticing: ``synth_volume.py``
once failed for every user after the writer's task tuple grew by one field. Each script runs
here on inputs small enough for seconds, as a user would run it (its own process, its own
command line); figures are checked for shape and sense, not for speed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radfusion.synthetic.folder import SYNTH_MARKER

from .conftest import SMALL

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: script -> tiny arguments; each prints RESULT lines for run_all.py
MEASURING = {
    "synth_volume": ["--slices", "12", "--size", "64", "--repeats", "1"],
    "validate_cohort": ["--studies", "60"],
    "ehr_features": ["--studies", "60", "--copies", "1", "--baseline-studies", "60"],
    "evaluation": ["--bootstrap", "20"],
    "ct_pipeline": ["--slices", "30", "--dicom-slices", "4", "--pairs", "1"],
    "ehr_grid": ["--studies", "60", "--pairs", "1", "--jobs", "1"],
    "meds_codes": ["--events", "20000", "--subjects", "200", "--codes", "100"],
    "full_size": [
        *("--studies", "1", "--size", "64", "--model", "penet_tiny"),
        *("--steps", "1", "--ehr-studies", "60"),
    ],
    "penet_speed": ["--model", "penet_tiny", "--pairs", "2", "--threads", "2"],
    "small_findings": ["--steps", "4", "--seeds", "0", "--threads", "2"],
}


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script}.py failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("script", sorted(MEASURING))
def test_measuring_script_prints_its_figures(script):
    out = _run(script, *MEASURING[script])
    found = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    assert found, f"{script}.py printed no RESULT line"
    for figure in found:
        assert figure["benchmark"] == script
        assert math.isfinite(figure["value"]) and figure["value"] >= 0
        assert math.isfinite(figure["ratio"]) and figure["ratio"] > 0
        assert figure["against"]


def test_run_all_lists_every_measuring_script():
    """A new measuring script belongs in run_all.py's table (and in this test)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from run_all import SCRIPTS
    finally:
        sys.path.remove(str(BENCHMARKS))
    printing = {p.stem for p in BENCHMARKS.glob("[!_]*.py") if "result(" in p.read_text()}
    assert printing - {"penet_gpu"} == set(SCRIPTS) == set(MEASURING)


@pytest.fixture
def synthetic_run(benchmark_run, tmp_path) -> Path:
    """A copy of the finished benchmark whose cohort carries its generator settings, as
    ``radfusion synth`` and ``radfusion demo`` record them."""
    data, run, _ = benchmark_run
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(run, tmp_path / "run")
    marker = {
        "studies": SMALL["n_studies"],
        "seed": SMALL["seed"],
        "size": SMALL["size"],
        "slices": list(SMALL["slice_range"]),
        "quirks": False,
        "calibre": 1.0,
        "test_studies": None,
    }
    (tmp_path / "data" / SYNTH_MARKER).write_text(json.dumps(marker))
    (tmp_path / "run" / "run.json").write_text(json.dumps({"data": str(tmp_path / "data")}))
    return tmp_path / "run"


def test_fresh_cohort_scores_a_finished_run(synthetic_run, tmp_path):
    run = synthetic_run
    saved = tmp_path / "fresh.csv"
    out = _run("fresh_cohort", str(run), "--studies", "60", "--boot", "20", "--save", str(saved))
    scores = pd.read_csv(saved, index_col="idx")
    assert len(scores) == 60 and scores["label"].isin([0, 1]).all()
    printed = {
        line.split()[0]: float(line.split()[1])
        for line in out.splitlines()
        if re.match(r"^\w+ +\d\.\d{3} \(", line)
    }
    for model in ("image", "ehr", "slicenet", "fusion_mean", "fusion_weighted"):
        assert scores[model].between(0, 1).all(), model
        assert printed[model] == pytest.approx(
            roc_auc_score(scores["label"], scores[model]), abs=5e-4
        ), model
    # the same run against its own saved scores: every shared model pairs with itself
    again = _run(
        "fresh_cohort", str(run), "--studies", "60", "--boot", "20", "--against", str(saved)
    )
    paired = re.findall(r"against fresh\.csv: (\w+) (\d\.\d+) vs (\d\.\d+)", again)
    assert {name for name, _, _ in paired} >= {"image", "ehr", "slicenet", "fusion_mean"}
    assert all(a == b for _, a, b in paired), paired


def test_clot_sensitivity_scores_pairs(benchmark_run):
    _, run, _ = benchmark_run
    tiny = ["--pairs", "2", "--size", "16", "--slices", "32", "--calibre", "1"]
    out = _run("clot_sensitivity", str(run), *tiny)
    shares = re.findall(r"higher in +(\d+)% .*the same in +(\d+)%, lower in +(\d+)%", out)
    assert len(shares) == 3, out
    for share in shares:
        assert sum(int(x) for x in share) == 100


def test_phantom_visibility_counts_fewer_clots_as_the_bar_rises():
    out = _run("phantom_visibility", "--studies", "12", "--size", "32", "--slices", "24")
    seen = [int(x) for x in re.findall(r"darkened voxels in a slice: +(\d+)% of positives", out)]
    assert len(seen) == 4 and seen == sorted(seen, reverse=True), out


def test_clot_patches_trains_and_scores():
    out = _run("clot_patches", "--studies", "12", "--size", "32", "--steps", "3")
    assert 0 <= float(re.search(r"held-out patch AUROC (\d\.\d+)", out).group(1)) <= 1


def test_phantom_figure_draws_a_png(tmp_path):
    out = tmp_path / "phantom.png"
    _run("phantom_figure", "--out", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_penet_gpu_runs_on_a_gpu_and_says_so_without_one():
    import torch

    script = str(BENCHMARKS / "penet_gpu.py")
    cmd = [sys.executable, script, "--model", "penet_tiny", "--batch", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if torch.cuda.is_available():
        assert proc.returncode == 0 and "RESULT " in proc.stdout, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0
        assert proc.stderr.strip() == "penet_gpu: no CUDA GPU here"
