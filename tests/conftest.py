"""Shared fixtures: small synthetic cohorts, written once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from radfusion.config import load_config
from radfusion.pipeline.benchmark import run_benchmark
from radfusion.synthetic.writer import write_synthetic_cohort

SMALL = {"n_studies": 60, "seed": 7, "size": 16, "slice_range": (30, 40)}


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A clean 60-study cohort with 16x16 slices; never modify it (use ``cohort_copy``)."""
    root = tmp_path_factory.mktemp("small") / "cohort"
    write_synthetic_cohort(root, **SMALL)
    return root


@pytest.fixture(scope="session")
def quirky_cohort(tmp_path_factory) -> Path:
    """The same cohort (same seed) written with every quirk of the real release."""
    root = tmp_path_factory.mktemp("quirky") / "cohort"
    write_synthetic_cohort(root, quirks=True, **SMALL)
    return root


@pytest.fixture(scope="session")
def inspect_cohort(tmp_path_factory) -> Path:
    """A 100-study synthetic cohort in the INSPECT layout (16x16 NIfTI); never modify it."""
    from radfusion.synthetic.inspect_writer import write_inspect_cohort

    root = tmp_path_factory.mktemp("inspect") / "cohort"
    write_inspect_cohort(root, 100, seed=3, size=16, slice_range=(24, 32))
    return root


@pytest.fixture
def cohort_copy(small_cohort, tmp_path) -> Path:
    """A private copy of the small cohort that a test may break."""
    target = tmp_path / "cohort"
    shutil.copytree(small_cohort, target)
    return target


#: A config sized for the 60-study, 16-pixel test cohort.
TINY = [
    "preprocess.size=16",
    "preprocess.workers=1",
    "ehr.grid={C: [0.1, 1.0], l1_ratio: [0.5], class_weight: [null]}",
    "image.model=penet_tiny",
    "image.crop=16",
    "image.max_epochs=3",
    "image.windows_per_epoch=16",
    "image.batch_size=4",
    "image.accelerator=cpu",
    "image.devices=1",
    "slicenet.enabled=true",
    "slicenet.model_args={width: 4}",
    "slicenet.crop=16",
    "slicenet.max_epochs=2",
    "slicenet.windows_per_epoch=16",
    "slicenet.batch_size=8",
    "slicenet.accelerator=cpu",
    "slicenet.devices=1",
    "slicenet.select=last",  # the final epoch scores (the demo's choice); PENet keeps the best
    "evaluation.n_boot=200",
    "fusion.designs=[mean, weighted]",
]


def tiny_cli(data, out, *extra: str) -> list[str]:
    """``radfusion benchmark`` with the TINY config (plus ``extra`` keys) as a command line."""
    sets = [arg for item in [*TINY, *extra] for arg in ("--set", item)]
    return ["benchmark", "--data", str(data), "--out", str(out), *sets]


@pytest.fixture(scope="session")
def tiny_config():
    return load_config(None, TINY)


@pytest.fixture(scope="session")
def benchmark_run(small_cohort, tiny_config, tmp_path_factory):
    """(data folder, run folder, result) of one finished benchmark; never modify it."""
    run = tmp_path_factory.mktemp("bench") / "run"
    result = run_benchmark(small_cohort, run, tiny_config)
    return small_cohort, run, result


@pytest.fixture
def run_copy(benchmark_run, tmp_path):
    """A private copy of the finished run (same data folder) that a test may change."""
    data, run, _ = benchmark_run
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return data, target
