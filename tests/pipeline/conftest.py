"""A benchmark run on the small cohort, shared by the pipeline tests (about 20 s)."""

from __future__ import annotations

import shutil

import pytest

from radfusion.pipeline.benchmark import run_benchmark
from radfusion.pipeline.config import load_config

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
    "evaluation.n_boot=200",
    "fusion.strategies=[mean, weighted]",
]


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
