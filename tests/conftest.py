"""Shared fixtures: small synthetic cohorts, written once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from radfusion.data.synthetic.writer import write_synthetic_cohort

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


@pytest.fixture
def cohort_copy(small_cohort, tmp_path) -> Path:
    """A private copy of the small cohort that a test may break."""
    target = tmp_path / "cohort"
    shutil.copytree(small_cohort, target)
    return target
